"""The engine the runner uses: the reference engine's semantics, vectorised over the universe.

Position changes, fill prices and the per-bar equity of every sleeve are polars expressions over
all symbols at once. Only what is path-dependent runs in Python, once per *trade* rather than per
bar: sizing a trade needs the sleeve's cash after the previous one (whole shares, minimum
commissions). Tests check that results equal the reference engine's on random inputs.
"""

from __future__ import annotations

import polars as pl

from qcompile.backtest.engine import (
    Result,
    Settings,
    Trade,
    _affordable,
    combine_sleeves,
    sleeve_capital,
)


def _changes(bars: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    signal = pl.col("signal").fill_null(0).cast(pl.Int8)
    if settings.execution == "next_open":
        wanted, price = signal.shift(1).over("symbol").fill_null(0), pl.col("open")
    else:
        wanted, price = signal, pl.col("close")
    return bars.select(
        "symbol",
        "timestamp",
        "close",
        row=pl.int_range(pl.len()).over("symbol"),
        rows=pl.len().over("symbol"),
        wanted=wanted,
        price=price,
    )


def _trades_of_symbol(
    symbol: str, frame: pl.DataFrame, capital: float, settings: Settings
) -> tuple[list[Trade], list[tuple[int, int, float, int]], list[tuple[int, float]]]:
    """Trades, held spans (entry_row, exit_row, signed shares, side) and cash events (key, cash).

    A cash event's key is 2 x row for an exit and 2 x row + 1 for an entry, so that on a reversal
    the exit is booked before the entry at the same bar."""
    times, prices = frame["timestamp"].to_list(), frame["price"].to_list()
    closes, wanted = frame["close"].to_list(), frame["wanted"].to_list()
    last = len(times) - 1
    starts = [0] + [i for i in range(1, len(wanted)) if wanted[i] != wanted[i - 1]]
    costs, cash = settings.costs, capital
    trades: list[Trade] = []
    spans: list[tuple[int, int, float, int]] = []
    events: list[tuple[int, float]] = [(-1, capital)]
    for number, start in enumerate(starts):
        side = wanted[start]
        end = starts[number + 1] if number + 1 < len(starts) else len(wanted)
        if side == 0:
            continue
        entry_row, count = start, 0.0
        while entry_row < min(end, last):  # a failed entry is retried at each bar of its run
            fill = costs.fill(prices[entry_row], buying=side > 0)
            count = _affordable(cash, fill, costs, settings.fractional_shares)
            if count > 0:
                break
            entry_row += 1
        if count <= 0 or entry_row >= min(end, last):
            continue
        budget, commission = cash, costs.commission(count)
        cash -= side * count * fill + commission
        events.append((2 * entry_row + 1, cash))
        exit_row, reference = (end, prices[end]) if end <= last else (last, closes[last])
        exit_fill = costs.fill(reference, buying=side < 0)
        exit_commission = costs.commission(count)
        cash += side * count * exit_fill - exit_commission
        events.append((2 * exit_row, cash))
        slippage = count * (abs(exit_fill - reference) + abs(fill - prices[entry_row]))
        trades.append(
            Trade(
                symbol,
                side,
                times[entry_row],
                fill,
                times[exit_row],
                exit_fill,
                float(count),
                commission + exit_commission + slippage,
                side * count * (exit_fill - fill) - commission - exit_commission,
                budget,
            )
        )
        spans.append((entry_row, exit_row, side * float(count), side))
    return trades, spans, events


def run(bars: pl.DataFrame, settings: Settings) -> Result:
    """Backtest ``bars`` (symbol, timestamp, open, close, signal; sorted) under ``settings``."""
    symbols = bars["symbol"].unique().sort().to_list()
    if not symbols:
        raise ValueError("no bars to backtest")
    capital = sleeve_capital(settings, len(symbols))
    frame = _changes(bars, settings)
    trades: list[Trade] = []
    span_rows, event_rows = [], []
    for (symbol,), part in frame.partition_by("symbol", as_dict=True, maintain_order=True).items():
        symbol_trades, spans, events = _trades_of_symbol(str(symbol), part, capital, settings)
        trades.extend(symbol_trades)
        span_rows += [(symbol, *span) for span in spans]
        event_rows += [(symbol, *event) for event in events]
    spans_frame = pl.DataFrame(
        span_rows,
        schema={
            "symbol": pl.String,
            "entry_row": pl.Int64,
            "exit_row": pl.Int64,
            "signed": pl.Float64,
            "side": pl.Int8,
        },
        orient="row",
    )
    events_frame = pl.DataFrame(
        event_rows, schema={"symbol": pl.String, "key": pl.Int64, "cash": pl.Float64}, orient="row"
    )
    marks = (
        frame.select(
            "symbol",
            "timestamp",
            "close",
            pl.col("row").cast(pl.Int64),
            key=(2 * pl.col("row") + 1).cast(pl.Int64),
        )
        .sort("key")
        .join_asof(
            events_frame.sort("key"),
            on="key",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )  # sorted just above; polars cannot verify with by=
        .sort("row")
        .join_asof(
            spans_frame.sort("entry_row"),
            left_on="row",
            right_on="entry_row",
            by="symbol",
            check_sortedness=False,
            strategy="backward",
        )
        .with_columns(held=pl.col("exit_row").is_not_null() & (pl.col("row") < pl.col("exit_row")))
        .with_columns(
            position=pl.when("held").then(pl.col("side")).otherwise(0).cast(pl.Int8),
            equity=pl.col("cash")
            + pl.when("held").then(pl.col("signed") * pl.col("close")).otherwise(0.0),
            gross=pl.when("held").then((pl.col("signed") * pl.col("close")).abs()).otherwise(0.0),
        )
        .sort("symbol", "row")
    )
    sleeves = {
        str(symbol): part.select("timestamp", "position", "equity", "gross")
        for (symbol,), part in marks.partition_by(
            "symbol", as_dict=True, maintain_order=True
        ).items()
    }
    trades.sort(key=lambda t: (t.entry_time, t.symbol))
    return Result(combine_sleeves(sleeves, settings, capital), trades, sleeves)
