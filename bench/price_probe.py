"""Does a head that reads ln price straight off the adapter's hidden state beat the digit search?

The expected predictor prices a listing from the distribution the model writes after "Price is $"; a
regression head would instead map the hidden state at that point (the last prompt token, where the model is
about to write the price) to a price, trained on ln price: the RMSLE objective itself. This is the cheapest
such head: fitted after the LoRA, on frozen features, not trained with it. For one adapter:

    features   the decoder's last hidden state (after its final norm) at the last prompt token, for
               --train-items items of the adapter's training split and every item of each --splits split
    head       ridge regression of ln(1 + price) on the standardised features, the penalty chosen among
               --alphas by RMSLE on the validation split
    reports    <name>-probe-<split>/ per split, evaluate.py's report folders (report.json, predictions.csv,
               chart.png), so `evaluate.py --compare DIGIT_SEARCH_REPORT PROBE_REPORT` pairs the two item by
               item; and probe.json (the penalty, each penalty's validation RMSLE, the head's size)

    python -m bench.price_probe --adapter adapters/gemma3-270m-pricer --data data/amazon-prices \\
        --splits val pool balanced --out runs/probe
    python -m bench.price_probe --adapter runs/loso-mixed/adapter --data data/amazon-prices \\
        --holdout-source mixed --splits val pool --out runs/probe-mixed      # pool: all of the held-out source

If it wins somewhere, the next step is the head trained with the LoRA (a second loss on the same forward).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench.estimators import SPLITS, split_args, split_of
from evaluation import add_model_options, compute_metrics, load_model, model_name, pick_items, provenance, \
    resolve_base, with_run_defaults, write_report
from utils.atomic import atomic_write_text

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); unset model options default as in evaluate.py."""
    p = argparse.ArgumentParser(prog="python -m bench.price_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                   help="splits to price with the head (default: all); validation is always read, to pick the penalty")
    p.add_argument("--train-items", type=int, default=4000,
                   help="training-split items the head is fitted on (a deterministic sample; default 4000)")
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="ridge penalties to choose from")
    p.add_argument("--limit", type=int, help="at most N items per split (a deterministic sample), for quick runs")
    p.add_argument("--balanced-limit", type=int, default=400, help="items in the balanced split (default 400)")
    p.add_argument("--out", required=True, help="folder for the report folders and probe.json")
    args = p.parse_args(argv)
    if not args.data:
        p.error("--data is required")
    for flag in ("limit", "balanced_limit", "batch_size", "train_items"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if min(args.alphas) <= 0:
        p.error("--alphas must be positive")
    args.splits = list(dict.fromkeys(args.splits))
    return with_run_defaults(args)


def last_hidden_states(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int) -> Any:
    """float64 numpy array (len(prompts), hidden): the decoder's output (after its final norm) at each prompt's
    last token. Prompts are left padded, so the last position is the last token; the LM head is not run."""
    import numpy as np
    import torch

    from predictors.batching import inference, left_padded_batches, model_device

    decoder = model.get_decoder()
    rows: list[Any] = [None] * len(prompts)
    with inference(model):
        for idx, ids, mask in left_padded_batches(tokenizer, prompts, batch_size, model_device(model)):
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1, :]
            for row, i in zip(hidden.to(torch.float32).cpu().numpy(), idx):
                rows[i] = row
    return np.asarray(rows, dtype=np.float64)


class RidgeHead:
    """ln(1 + price) = standardised features . w + b, fitted in closed form with an L2 penalty `alpha` on w."""

    def __init__(self, features: Any, prices: Sequence[float], alpha: float):
        import numpy as np

        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0) + 1e-8
        x = (features - self.mean) / self.scale
        y = np.log1p(np.asarray(prices, dtype=np.float64))
        self.bias = y.mean()
        self.weights = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - self.bias))
        self.alpha = alpha

    def predict(self, features: Any) -> list[float]:
        """Prices (dollars, at least one cent) for rows of features."""
        import numpy as np

        logs = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return [max(0.01, float(v)) for v in np.expm1(logs)]


def choose(train: tuple[Any, list[float]], val: tuple[Any, list[float]], alphas: Sequence[float]) -> tuple:
    """(head, {alpha: validation RMSLE}): the head of the penalty with the lowest validation RMSLE."""
    scored = {}
    best = None
    for alpha in sorted(alphas):
        head = RidgeHead(train[0], train[1], alpha)
        scored[alpha] = compute_metrics(val[1], head.predict(val[0]))["rmsle"]
        if best is None or scored[alpha] < scored[best.alpha]:
            best = head
    return best, scored


def run(args: argparse.Namespace) -> dict:
    """Features, the head, a report folder per split; returns probe.json's record."""
    from data import test_prompt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_base(args.adapter, args.base)
    name = model_name(args.adapter, base)
    model, tokenizer = load_model(base, args.adapter, args.bits, args.quant_type, args.compute_dtype)

    def features(items: list) -> Any:
        prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
        return last_hidden_states(model, tokenizer, prompts, args.batch_size)

    train_args = argparse.Namespace(**{**vars(args), "split": "train", "sample": "pool", "limit": args.train_items})
    train_items = pick_items(train_args)[0]
    start = time.perf_counter()
    train = (features(train_items), [it.price for it in train_items])
    val_items = pick_items(split_args(args, "val"))[0]
    val = (features(val_items), [it.price for it in val_items])
    head, scored = choose(train, val, args.alphas)
    fit_seconds = time.perf_counter() - start
    record = {"adapter": args.adapter, "base": base, "train_items": len(train_items), "features": int(train[0].shape[1]),
              "alpha": head.alpha, "val_rmsle_by_alpha": {str(a): round(v, 4) for a, v in scored.items()},
              "fit_seconds": round(fit_seconds, 1), "reports": {}}
    for split in args.splits:
        sargs = split_args(args, split)
        start = time.perf_counter()
        items = val_items if split == "val" else pick_items(sargs)[0]
        guesses = head.predict(val[0] if split == "val" else features(items))
        seconds = time.perf_counter() - start
        extra = {"predictor": "probe", "probe": {"alpha": head.alpha, "train_items": len(train_items)}}
        prov = provenance(sargs, name, base, model, len(items), seconds, extra)
        folder = out / f"{name}-probe-{split}"
        report = write_report(folder, [it.title for it in items], [it.price for it in items], guesses, prov,
                              f"{name} ridge probe ({split})")
        record["reports"][split] = str(folder)
        print(f"{split_of(report):<9} {report['n']:>5}  RMSLE {report['rmsle']:.3f}  hit rate "
              f"{report['hit_rate'] * 100:.1f}%  lean {report['log_ratio']:+.2f}  -> {folder}", flush=True)
    atomic_write_text(out / "probe.json", json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print a line per split; user errors print `error: ...` and return 2."""
    args = parse_args(argv)
    try:
        record = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"penalty {record['alpha']:g} (validation RMSLE by penalty: {record['val_rmsle_by_alpha']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
