"""The course's chart: truth against estimate, one point per item in its colour, and the line y = x."""
from __future__ import annotations

from typing import Any, Sequence

from evaluation.metrics import colours_for, scored_guess


def chart_title(title: str, metrics: dict) -> str:
    """The course's chart title: name, average error, RMSLE and hit rate."""
    return (f"{title}: Error=${metrics['avg_error']:,.2f} RMSLE={metrics['rmsle']:,.2f} "
            f"Hits={metrics['hit_rate'] * 100:.1f}%")


# The colour key: evaluation/metrics.py's rule for each colour.
COLOUR_KEY = (("green", "hit: within $40 or 20%"), ("orange", "within $80 or 40%"), ("red", "miss (or no price)"))


def dollar_log_axis(axis: Any) -> None:
    """Put a log-scaled axis's ticks at 1, 2 and 5 of each decade, labelled in dollars ($20, $1,000), and label
    the ticks between them too when the axis spans less than a factor of 4 (else one or two labels would show)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def dollars(v: float, _: Any = None) -> str:
        low, high = axis.get_view_interval()
        cents = v < 1 or (low > 0 and high / low < 1.2)   # a narrow axis: whole dollars would repeat
        return f"${v:,.2f}" if cents else f"${v:,.0f}"

    def between(v: float, _: Any) -> str:
        low, high = axis.get_view_interval()
        return dollars(v) if low > 0 and high / low < 4 else ""

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    axis.set_major_formatter(FuncFormatter(dollars))
    axis.set_minor_formatter(FuncFormatter(between))


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
    ax.plot([bottom, top], [bottom, top], color="deepskyblue", lw=2, alpha=0.6, label="estimate = truth")
    ax.scatter(truths, filled, s=3 if len(truths) > 300 else 8, c=colours)
    scale = ", log scale" if log_axes else ""
    ax.set(xlabel=f"Ground Truth ($){scale}", ylabel=f"Model Estimate ($){scale}", xlim=(bottom, top),
           ylim=(bottom, top), title=title)
    if log_axes:
        dollar_log_axis(ax.xaxis)
        dollar_log_axis(ax.yaxis)
    _colour_key(ax, log_axes)
    return fig


def _colour_key(ax: Any, log_axes: bool) -> None:
    """The legend: what each point colour means, the diagonal, and where a reply with no price is drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker="o", color=colour, label=text) for colour, text in COLOUR_KEY]
    handles.append(ax.lines[0])
    failure = "a reply with no price: drawn on the bottom edge" if log_axes else "a reply with no price: drawn at $0"
    handles.append(Line2D([], [], linestyle="none", label=failure))
    ax.legend(handles=handles, loc="upper left", fontsize=9, framealpha=0.9)
