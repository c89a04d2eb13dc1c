"""Training curves without a tracker: loss, validation loss, learning rate, gradient norm and the
validation price metrics (RMSLE, hit rate in percent, average error in dollars on a log axis), from each
run's metrics.jsonl, against integer optimizer steps.

Every run draws <output_dir>/curves.png at each evaluation and when it ends. To compare runs:

    python -m training.curves runs/a runs/b runs/c --out runs/compare.png
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.atomic import atomic_write

# (metrics key, panel title, y-axis label, y scale, y limits); the hit rate is drawn in percent.
PANELS = (("loss", "training loss (lines) and validation loss (markers)", "cross-entropy (nats per answer token)",
           "linear", None),
          ("lr", "learning rate", "learning rate", "linear", None),
          ("grad_norm", "gradient norm, before clipping", "global L2 norm of the LoRA gradients", "linear", None),
          ("val_rmsle", "validation RMSLE", "RMSLE (lower is better)", "linear", None),
          ("val_hit_rate", "validation hit rate", "hit rate (%)", "linear", (0, 100)),
          ("val_avg_error", "validation average error", "average error ($, log scale)", "log", None))
# One look per run, so that runs with equal values stay told apart: the first is drawn thickest, each later
# one thinner, dashed differently and with hollow markers on top of it.
DASHES = ("solid", (0, (6, 3)), (0, (2, 2)), "dashdot", (0, (8, 2, 2, 2)))
MARKERS = ("o", "s", "^", "D", "v")


def read_metrics(run: Path) -> list[dict]:
    """The rows of run/metrics.jsonl (a line cut by a crash is skipped); ValueError when there is none."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"no metrics.jsonl in {run}: pass folders written by train.py")
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    scale = 100.0 if key == "val_hit_rate" else 1.0
    return [s for s, _ in points], [v * scale for _, v in points]


def run_style(i: int) -> dict:
    """Run i's line and marker look (colour, dash, width, marker): distinct when runs draw the same values."""
    return {"color": f"C{i % 10}", "linestyle": DASHES[i % len(DASHES)], "lw": max(3.0 - 0.8 * i, 0.9),
            "marker": MARKERS[i % len(MARKERS)], "markersize": max(7.0 - 1.5 * i, 3.0),
            "markerfacecolor": f"C{i % 10}" if i == 0 else "none"}


def _draw(ax, panel: tuple, runs: list[tuple[str, list[dict]]]) -> None:
    from matplotlib.ticker import MaxNLocator

    key, title, ylabel, yscale, ylim = panel
    for i, (label, rows) in enumerate(runs):
        look = run_style(i)
        steps, values = _series(rows, key)
        if key == "loss" and steps:
            ax.plot(steps, values, color=look["color"], linestyle=look["linestyle"], lw=look["lw"], label=label)
            steps, values = _series(rows, "val_loss")
        if steps and key in ("lr", "grad_norm"):   # every step: a line, no markers
            ax.plot(steps, values, color=look["color"], linestyle=look["linestyle"], lw=look["lw"], label=label)
        elif steps and key == "loss":   # validation losses: markers edged in black, above the training line
            ax.plot(steps, values, **{**look, "lw": 0, "markersize": look["markersize"] + 3},
                    markeredgecolor="black", markeredgewidth=1.5, zorder=3)
        elif steps:   # validation price metrics: markers, joined
            ax.plot(steps, values, **look, label=label)
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if yscale == "log" and ax.lines:
        from evaluation.chart import dollar_log_axis

        ax.set_yscale("log")
        dollar_log_axis(ax.yaxis)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if key == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if not ax.lines:
        ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_curves(runs: Sequence[tuple[str, list[dict]]], title: str):
    """A figure of six panels (loss, lr, grad norm, validation RMSLE, hit rate and average error), a look per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).flatten()
    for ax, panel in zip(axes, PANELS):
        _draw(ax, panel, list(runs))
    handles, labels = axes[0].get_legend_handles_labels()
    if len(runs) > 1 and handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 5), fontsize=9, title="run")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if len(runs) > 1 else 0, 1, 1))
    return fig


def save_curves(runs: Sequence[tuple[str, list[dict]]], path: Path, title: str) -> Path:
    """Draw the runs' curves into the PNG `path`, atomically."""
    fig = plot_curves(runs, title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90), mode="wb")


def run_labels(folders: Sequence[str]) -> list[str]:
    """Each run's name as train.py gave it (training.rundir.run_name), the folder added where two runs would read
    alike (make demo's run is runs/demo/run, named smollm2-demo)."""
    from training.rundir import run_name

    names = [run_name(folder) for folder in folders]
    return [f"{name} ({folder})" if names.count(name) > 1 else name for name, folder in zip(names, folders)]


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the curves of several runs in one figure."""
    ap = argparse.ArgumentParser(prog="python -m training.curves", description="Training curves of runs, compared.")
    ap.add_argument("runs", nargs="+", help="run folders (train.py's output_dir)")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        runs = [(label, read_metrics(Path(r))) for label, r in zip(run_labels(args.runs), args.runs)]
        path = save_curves(runs, Path(args.out), " vs ".join(name for name, _ in runs))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
