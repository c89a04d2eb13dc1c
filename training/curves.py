"""Training curves without a tracker: loss, validation loss, learning rate, gradient norm and the
validation price metrics, from each run's metrics.jsonl.

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

PANELS = (("loss", "loss (train: solid, validation: dots)", ("loss", "val_loss")),
          ("lr", "learning rate", ("lr",)),
          ("grad_norm", "gradient norm (before clipping)", ("grad_norm",)),
          ("price", "validation RMSLE (solid) and hit rate (dashed)", ("val_rmsle", "val_hit_rate")))


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
    return [s for s, _ in points], [v for _, v in points]


def _draw(ax, panel: tuple, runs: list[tuple[str, list[dict]]]) -> None:
    name, title, keys = panel
    twin = ax.twinx() if name == "price" else None  # hit rate (0-1) beside RMSLE (0-3)
    for i, (label, rows) in enumerate(runs):
        for key in keys:
            steps, values = _series(rows, key)
            if not steps:
                continue
            target, style = (twin, "--") if key == "val_hit_rate" else (ax, "o" if key == "val_loss" else "-")
            target.plot(steps, values, style, color=f"C{i}", lw=1, markersize=3,
                        label=label if key == keys[0] else None)
    ax.set(title=title, xlabel="step")
    if twin is not None:
        twin.set_ylabel("hit rate")
    if name == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))


def plot_curves(runs: Sequence[tuple[str, list[dict]]], title: str):
    """A figure of four panels (loss, lr, grad norm, price metrics), one colour per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).flatten()
    for ax, panel in zip(axes, PANELS):
        _draw(ax, panel, list(runs))
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_curves(runs: Sequence[tuple[str, list[dict]]], path: Path, title: str) -> Path:
    """Draw the runs' curves into the PNG `path`, atomically."""
    fig = plot_curves(runs, title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90), mode="wb")


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the curves of several runs in one figure."""
    ap = argparse.ArgumentParser(prog="python -m training.curves", description="Training curves of runs, compared.")
    ap.add_argument("runs", nargs="+", help="run folders (train.py's output_dir)")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        runs = [(Path(r).resolve().name, read_metrics(Path(r))) for r in args.runs]
        path = save_curves(runs, Path(args.out), " vs ".join(name for name, _ in runs))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
