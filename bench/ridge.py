"""Classical baselines on the same splits evaluate.py uses: TF-IDF + ridge regression, and the median.

Fit on the training split (log1p of the price, which is what RMSLE scores), predict the
test split, and write evaluate.py-style report folders so `evaluate.py --compare` puts them
beside the language models:

    python -m bench.ridge --out runs/baselines [--data data/amazon-prices] [--balanced-limit 400]
    python -m bench.ridge --out runs/baselines --holdout-source mixed musical-appliances

writes <out>/ridge-pool, <out>/ridge-balanced, <out>/median-pool, <out>/median-balanced, and for
each held-out source S (leave-one-source-out: fit without S, test on S) <out>/ridge-loso-S and
<out>/median-loso-S.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from data import Splits, load_items, split_items
from data.holdout import leave_source_out
from data.splits import price_balanced_sample
from evaluation import write_report


def fit_and_report(splits: Splits, tests: dict, args: argparse.Namespace, extra: dict) -> None:
    """Fit ridge on train + val, then write a ridge and a median report for every test set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    train = splits.train + splits.val
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
    x = vec.fit_transform([f"{it.title}\n{it.text}" for it in train])
    model = Ridge(alpha=args.alpha).fit(x, np.log1p([it.price for it in train]))
    median = statistics.median(it.price for it in splits.train)
    for name, items in tests.items():
        guesses = np.expm1(model.predict(vec.transform([f"{it.title}\n{it.text}" for it in items]))).clip(0)
        truths = [it.price for it in items]
        common = dict(data=args.data, split="test", sample=name, limit=len(items), seed=args.seed, **extra)
        for label, g in (("ridge", [float(v) for v in guesses]), ("median", [median] * len(items))):
            report = write_report(Path(args.out) / f"{label}-{name}", [it.title for it in items], truths, g,
                                  dict(common, predictor=label, name=f"{label} ({name})"), f"{label} ({name})")
            print(f"{label:>6} {name:>22}: n={report['n']} RMSLE {report['rmsle']:.3f} "
                  f"hit {report['hit_rate']:.1%} avg error ${report['avg_error']:.2f} lean {report['log_ratio']:+.2f}")


def main() -> None:
    """Fit, predict both test splits (and the held-out sources) and write their report folders."""
    ap = argparse.ArgumentParser(prog="python -m bench.ridge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/amazon-prices")
    ap.add_argument("--out", default="runs/baselines")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--balanced-limit", type=int, default=400)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--holdout-source", nargs="*", default=[], help="sources to leave out, one fit each")
    args = ap.parse_args()
    items = load_items(args.data)
    splits = split_items(items, seed=args.seed)
    fit_and_report(splits, {"pool": splits.test,
                            "balanced": price_balanced_sample(splits.test, args.balanced_limit, seed=args.seed)},
                   args, {})
    for source in args.holdout_source:
        held = leave_source_out(items, source, seed=args.seed)
        fit_and_report(held, {f"loso-{source}": held.test}, args, {"holdout_source": source})


if __name__ == "__main__":
    main()
