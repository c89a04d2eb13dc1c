"""How closely two training runs' loss curves agree, step by step: pricer against the reference stack (peft) on
the same recipe and data order, where every step trains on the same batch.

    python -m bench.curve_agreement RUN_A/metrics.jsonl RUN_B/metrics.jsonl [A2 B2 ...] [--spike 0.1]

For each pair, on the steps both logged: how many, the median and largest |loss A - loss B| (and where), how
many steps differ by more than --spike (a single bf16 step that blows up in one stack and not the other), and
each curve's mean. A run that stopped early is compared on the steps it reached.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Iterator, Sequence

from bench.common.cli import print_or_fail


def losses(path: str | Path) -> dict[int, float]:
    """{step: loss} of a metrics.jsonl (train.py's or bench.reference_train's); rows without a loss are skipped."""
    rows = (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())
    return {int(r["step"]): float(r["loss"]) for r in rows if "loss" in r}


def agreement(a: dict[int, float], b: dict[int, float], spike: float = 0.1) -> dict:
    """The comparison of two {step: loss} curves on their common steps; ValueError when they share none."""
    steps = sorted(a.keys() & b.keys())
    if not steps:
        raise ValueError("the two runs logged no step in common")
    diffs = [abs(a[s] - b[s]) for s in steps]
    worst = max(range(len(steps)), key=diffs.__getitem__)
    return {"steps": len(steps), "last": steps[-1], "median_abs_diff": statistics.median(diffs),
            "max_abs_diff": diffs[worst], "max_at": steps[worst], "spikes": sum(d > spike for d in diffs),
            "mean_a": statistics.fmean(a[s] for s in steps), "mean_b": statistics.fmean(b[s] for s in steps)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curve_agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="metrics.jsonl files in pairs: A B [A2 B2 ...]")
    p.add_argument("--spike", type=float, default=0.1, help="a step differing by more than this is a spike")
    args = p.parse_args(argv)
    if len(args.files) % 2:
        p.error("give the metrics.jsonl files in pairs")
    return print_or_fail(compared(args.files, args.spike))


def compared(files: Sequence[str], spike: float) -> Iterator[str]:
    """One line per pair of metrics.jsonl files (A B A2 B2 ...)."""
    for a, b in zip(files[::2], files[1::2]):
        r = agreement(losses(a), losses(b), spike)
        yield (f"{a} vs {b}: {r['steps']} steps to {r['last']}; |diff| median {r['median_abs_diff']:.4f}, "
               f"max {r['max_abs_diff']:.3f} at step {r['max_at']}; {r['spikes']} over {spike}; "
               f"mean loss {r['mean_a']:.4f} vs {r['mean_b']:.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
