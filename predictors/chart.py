"""The course's chart: truth against estimate, one point per item in its colour, and the line y = x."""
from __future__ import annotations

from typing import Any, Sequence

from predictors.metrics import colours_for, scored_guess


def chart_title(title: str, metrics: dict) -> str:
    """The course's chart title: name, average error, RMSLE and hit rate."""
    return (f"{title}: Error=${metrics['avg_error']:,.2f} RMSLE={metrics['rmsle']:,.2f} "
            f"Hits={metrics['hit_rate'] * 100:.1f}%")


def plot_chart(truths: Sequence[float], guesses: Sequence[float | None], title: str,
               failures_as_zero: bool = False, log_axes: bool = True) -> Any:
    """Truth against estimate as a matplotlib Figure (no pyplot state), one point per item in its colour.

    Log-price axes by default: prices span three decades and most items are cheap, so linear axes
    pile them into one corner. log_axes=False draws the course's linear chart. A failure is drawn
    at $0 on linear axes and at the bottom edge on log axes, in its metrics colour.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    filled = [scored_guess(g) for g in guesses]
    colours = colours_for(truths, guesses, failures_as_zero)
    top = max(max(truths), max(filled)) or 1.0
    bottom = 0.0
    fig = Figure(figsize=(12, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if log_axes:
        bottom, top = min(min(truths), min(g for g in filled if g > 0) if any(filled) else 1.0) / 1.5, top * 1.5
        filled = [max(g, bottom) for g in filled]
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot([bottom, top], [bottom, top], color="deepskyblue", lw=2, alpha=0.6)
    ax.scatter(truths, filled, s=3 if len(truths) > 300 else 8, c=colours)
    ax.set(xlabel="Ground Truth ($)", ylabel="Model Estimate ($)", xlim=(bottom, top), ylim=(bottom, top), title=title)
    return fig
