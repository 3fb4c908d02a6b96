"""Mean-reversion signals: z-score reversion and the earnings-gap fill."""

from __future__ import annotations

import polars as pl

from qcompile.signals.frames import hold, per_symbol
from qcompile.signals.registry import signal


@signal("zscore_reversion", version="1.0.0")
def zscore_reversion(
    bars: pl.DataFrame, *, window: int, entry_z: float, exit_z: float, allow_short: bool = False
) -> pl.DataFrame:
    """Long when the close is ``entry_z`` standard deviations below its ``window``-bar mean,
    short when as far above (if allowed); flat once |z| falls under ``exit_z``."""
    mean = per_symbol(pl.col("close").rolling_mean(window))
    std = per_symbol(pl.col("close").rolling_std(window))
    z = (pl.col("close") - mean) / std
    enter_long = z < -entry_z
    enter_short = (z > entry_z) & pl.lit(allow_short)
    return bars.with_columns(
        signal=hold(
            enter_long.fill_null(False),
            enter_short.fill_null(False),
            (z.abs() < exit_z).fill_null(False),
        )
    )


@signal("gap_fill", version="1.0.0")
def gap_fill(
    bars: pl.DataFrame,
    *,
    min_gap_pct: float,
    max_hold_bars: int,
    allow_short: bool = False,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Bet that an opening gap of at least ``min_gap_pct`` percent fills: long after a gap down
    that is still open at the close (short after a gap up, if allowed), held ``max_hold_bars``
    bars. With ``events`` (columns symbol, timestamp), only gaps on event bars count."""
    previous_close = per_symbol(pl.col("close").shift(1))
    gap_pct = (pl.col("open") / previous_close - 1.0) * 100.0
    still_open_down = pl.col("close") < previous_close
    still_open_up = pl.col("close") > previous_close
    frame = bars
    on_event = pl.lit(True)
    if events is not None:
        marked = events.select("symbol", "timestamp").unique().with_columns(_event=pl.lit(True))
        frame = frame.join(marked, on=["symbol", "timestamp"], how="left", maintain_order="left")
        on_event = pl.col("_event").fill_null(False)
    down = ((gap_pct <= -min_gap_pct) & still_open_down & on_event).fill_null(False)
    up = ((gap_pct >= min_gap_pct) & still_open_up & on_event & pl.lit(allow_short)).fill_null(
        False
    )
    entry = pl.when(down).then(1).when(up).then(-1).otherwise(0)
    # the trade lives for max_hold_bars bars from its entry bar
    held = per_symbol(entry.cast(pl.Int8).rolling_max(max_hold_bars, min_samples=1))
    held_short = per_symbol(entry.cast(pl.Int8).rolling_min(max_hold_bars, min_samples=1))
    position = pl.when(held > 0).then(1).when(held_short < 0).then(-1).otherwise(0).cast(pl.Int8)
    return frame.with_columns(signal=position).drop("_event", strict=False)
