"""Helpers shared by the built-in signals: per-symbol windows and position holding."""

from __future__ import annotations

import polars as pl

SYMBOL = "symbol"


def per_symbol(expr: pl.Expr) -> pl.Expr:
    """Evaluate ``expr`` separately for each symbol (bars are sorted by symbol, timestamp)."""
    return expr.over(SYMBOL)


def hold(enter_long: pl.Expr, enter_short: pl.Expr, leave: pl.Expr) -> pl.Expr:
    """Target position that stays in a trade from its entry bar until an exit bar.

    Entries win over an exit on the same bar; with no event yet, the position is flat.
    """
    event = (
        pl.when(enter_long)
        .then(pl.lit(1, pl.Int8))
        .when(enter_short)
        .then(pl.lit(-1, pl.Int8))
        .when(leave)
        .then(pl.lit(0, pl.Int8))
        .otherwise(pl.lit(None, pl.Int8))
    )
    return per_symbol(event.forward_fill()).fill_null(0).cast(pl.Int8)
