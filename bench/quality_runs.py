"""Train one recipe and score it on every split: the runs behind one row of the quality table (bench.quality_table).

On the pool split, then once with each source held out (leave-one-source-out, `--data.holdout_source S`), all
trainings at once; each adapter (its best epoch's when the run kept one) is then scored by evaluate.py's expected
price (--search-width and --estimate; the committed quality table used 30 and mean, the defaults are
predictors' SEARCH_WIDTH and ESTIMATE): the pool-split adapter on validation, the pool test split and the
balanced 400; each held-out adapter on every listing of its source. `--stack reference` trains with the reference stack
(bench.reference_train: peft, HF loss) instead of train.py; `--base MODEL` trains nothing and scores the base.

    python -m bench.quality_runs --config configs/smollm2-135m-pricer.yaml --name smol-w4 --out R
    python -m bench.quality_runs ... --search-width 30 --estimate mean     # as the committed quality table
    python -m bench.quality_runs --config configs/gemma3-270m-pricer.yaml --name gemma-ref --stack reference --out R
    python -m bench.quality_runs --base smollm2-135m --name smol-base --out R
    python -m bench.quality_runs ... -- --train.epochs 6 --train.keep_best val_rmsle   # overrides after --

The reports land in R/eval/NAME-{val,pool,balanced,loso-SOURCE}; copy them into bench/results/quality/ to put
them in the table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from predictors.digit_search import SEARCH_WIDTH
from predictors.expected import ESTIMATE, ESTIMATES

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("mixed", "musical-appliances")


def run(cmd: list[str], log: Path, timeout: int) -> bool:
    """One subprocess, its output in log; False (and a line saying so) when it fails or runs out of time."""
    try:
        with open(log, "w") as f:
            ok = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    print(f"{'done' if ok else 'FAILED'}: {' '.join(cmd[1:4])} ... (log {log})", flush=True)
    return ok


def train(args: argparse.Namespace, name: str, extra: list[str]) -> Path | None:
    """Train the recipe into R/NAME; the adapter to score (adapter-best when the run kept one), or None."""
    entry = ["train.py", "--overwrite"] if args.stack == "pricer" else ["-m", "bench.reference_train"]
    folder = args.out / name
    cmd = [sys.executable, *entry, "--config", args.config, "--output_dir", str(folder), *args.overrides, *extra]
    if not run(cmd, args.out / f"{name}.log", args.train_s):
        return None
    return folder / "adapter-best" if (folder / "adapter-best").is_dir() else folder / "adapter"


def score(args: argparse.Namespace, report: str, model: list[str], extra: list[str]) -> bool:
    """evaluate.py's expected price on one split, into R/eval/REPORT."""
    cmd = [sys.executable, "evaluate.py", *model, "--data", args.data, "--predictor", "expected", "--batch-size", "64",
           "--search-width", str(args.search_width), "--estimate", args.estimate,
           "--out", str(args.out / "eval" / report), *extra]
    return run(cmd, args.out / f"eval-{report}.log", args.eval_s)


def pool_split(args: argparse.Namespace, model: list[str] | None) -> None:
    """Train on the pool split (unless a base is given) and score validation, pool and balanced."""
    model = model or (lambda a: a and ["--adapter", str(a)])(train(args, args.name, []))
    if model:
        splits = {"val": ["--split", "val"], "pool": [], "balanced": ["--sample", "balanced", "--limit", "400"]}
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda kv: score(args, f"{args.name}-{kv[0]}", model, kv[1]), splits.items()))


def held_out(args: argparse.Namespace, source: str, model: list[str] | None) -> None:
    """Train without one source (unless a base is given) and score every listing of that source."""
    name = f"{args.name}-loso-{source}"
    model = model or (lambda a: a and ["--adapter", str(a)])(train(args, name, ["--data.holdout_source", source]))
    if model:
        score(args, name, model, ["--holdout-source", source])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="prefix of the run and report folders (smol-w4, gemma-ref, ...)")
    ap.add_argument("--out", type=Path, required=True, help="scratch folder for runs, logs and reports")
    ap.add_argument("--config", help="the recipe (configs/*.yaml); not with --base")
    ap.add_argument("--base", help="score this base model untrained instead (smollm2-135m, gemma3-270m)")
    ap.add_argument("--stack", choices=("pricer", "reference"), default="pricer", help="who trains")
    ap.add_argument("--data", default="data/amazon-prices")
    ap.add_argument("--sources", nargs="*", default=list(SOURCES), help="sources to hold out, one run each")
    ap.add_argument("--search-width", type=int, default=SEARCH_WIDTH, help="evaluate.py's (default %(default)s)")
    ap.add_argument("--estimate", choices=ESTIMATES, default=ESTIMATE, help="evaluate.py's (default %(default)s)")
    ap.add_argument("--train-s", type=int, default=900, help="time limit of each training, seconds")
    ap.add_argument("--eval-s", type=int, default=300, help="time limit of each evaluation, seconds")
    ap.add_argument("overrides", nargs="*", help="after --: config overrides for every training")
    args = ap.parse_args()
    if bool(args.config) == bool(args.base):
        ap.error("give --config (train and score) or --base (score the base only)")
    args.out = args.out.resolve()
    (args.out / "eval").mkdir(parents=True, exist_ok=True)
    model = ["--base", args.base] if args.base else None
    jobs = [lambda: pool_split(args, model)] + [lambda s=s: held_out(args, s, model) for s in args.sources]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job(), jobs))
    subprocess.run([sys.executable, "evaluate.py", "--compare", *sorted(map(str, (args.out / "eval").glob(
        f"{args.name}-*")))], cwd=ROOT)


if __name__ == "__main__":
    main()
