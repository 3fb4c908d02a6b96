"""The operations reviews' charts, as inline SVG (the backtest report draws its own in the
browser: research/backtest/tearsheet.py).

matplotlib renders off-screen (Agg) with a fixed hash salt and no date metadata, so the same run
gives the same SVG text. It is imported only when a review's HTML page is written.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams.update(
    {
        "svg.hashsalt": "qcompile",
        "svg.fonttype": "none",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def figure_svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(
        buffer, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight"
    )
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inlined in HTML
