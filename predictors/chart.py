"""The course's chart: truth against estimate, one point per item in its colour, and the line y = x."""
from __future__ import annotations

from typing import Any, Sequence

from predictors.metrics import colours_for, scored_guess


def chart_title(title: str, metrics: dict) -> str:
    """The course's chart title: name, average error, RMSLE and hit rate."""
    return (f"{title}: Error=${metrics['avg_error']:,.2f} RMSLE={metrics['rmsle']:,.2f} "
            f"Hits={metrics['hit_rate'] * 100:.1f}%")


def plot_chart(truths: Sequence[float], guesses: Sequence[float | None], title: str,
               failures_as_zero: bool = False) -> Any:
    """The course's chart as a matplotlib Figure (no pyplot state); a failure is drawn at $0, in its metrics colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    filled = [scored_guess(g) for g in guesses]
    colours = colours_for(truths, guesses, failures_as_zero)
    top = max(max(truths), max(filled)) or 1.0
    fig = Figure(figsize=(12, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, top], [0, top], color="deepskyblue", lw=2, alpha=0.6)
    ax.scatter(truths, filled, s=3, c=colours)
    ax.set(xlabel="Ground Truth", ylabel="Model Estimate", xlim=(0, top), ylim=(0, top), title=title)
    return fig
