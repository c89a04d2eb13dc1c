"""Evaluate a base model (and optionally an adapter) on a price split, as the course's Tester did.

    base (+ adapter) -> prompts of a split -> predictor -> metrics -> report.json, predictions.csv, chart.png

Predictors (all batched with left padding and the KV cache, deterministic):
- greedy:    generate a few tokens after "Price is $" and read the first number (`extract_price`).
- expected:  a point estimate of the model's price distribution after "Price is $" (`--estimate`:
             its mean, the default; its mean in log space; or its median, see `point_estimate`).
             Tokenizers with one token per number 0-999 (Llama 3): the course's "improved"
             predictor, the probability-weighted mean of the top-K number tokens. Digit-level
             tokenizers (SmolLM2): a bounded breadth-first search over digit strings
             (`--search-width`, `--search-digits`); see `price_distributions` for the algorithm.
- mean / median: constant baselines from the training split's prices.

Metrics follow the course's Tester: absolute error, RMSLE, and colours green (error < $40 or
< 20% of the truth), orange (< $80 or < 40%) and red. A reply with no number is a failure: it
is scored as a guess of $0 (as the course did) and counted in `failures`.

    python evaluate.py --adapter runs/demo/adapter --data data/amazon-prices --out runs/demo/eval
    python evaluate.py --compare runs/base-eval runs/demo/eval
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

PRICE_MARKER = "Price is $"
_NUMBER = re.compile(r"\d*\.\d+|\d+")

GREEN_ERROR, GREEN_RATIO = 40.0, 0.2
ORANGE_ERROR, ORANGE_RATIO = 80.0, 0.4
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<$10", 0.0, 10.0), ("$10-50", 10.0, 50.0), ("$50-100", 50.0, 100.0),
    ("$100-300", 100.0, 300.0), ("$300-1000", 300.0, 1000.0), (">=$1000", 1000.0, math.inf),
)
PREDICTORS = ("greedy", "expected", "mean", "median")
ESTIMATES = ("mean", "log-mean", "median")
SEARCH_WIDTH, SEARCH_DIGITS = 30, 4   # the digit search's defaults: top_m and max_digits (bench/RESULTS.md: 10 kept 47% of the mass, 30 kept 74%)


# ---------------------------------------------------------------- prices and metrics

def extract_price(reply: str) -> float | None:
    """The first number after "Price is $" (or in the reply), commas removed; None when there is none."""
    if PRICE_MARKER in reply:
        reply = reply.split(PRICE_MARKER, 1)[1]
    match = _NUMBER.search(reply.replace(",", ""))
    return float(match.group()) if match else None


def colour_for(error: float, truth: float) -> str:
    """The course's colour: green, orange or red (strict < at every edge)."""
    ratio = error / truth if truth > 0 else math.inf
    if error < GREEN_ERROR or ratio < GREEN_RATIO:
        return "green"
    if error < ORANGE_ERROR or ratio < ORANGE_RATIO:
        return "orange"
    return "red"


def _scores(truths: Sequence[float], guesses: Sequence[float | None]) -> dict:
    n = len(truths)
    filled = [0.0 if g is None else float(g) for g in guesses]
    errors = [abs(g - t) for g, t in zip(filled, truths)]
    sles = [(math.log1p(g) - math.log1p(t)) ** 2 for g, t in zip(filled, truths)]
    colours = [colour_for(e, t) for e, t in zip(errors, truths)]
    return {
        "n": n,
        "avg_error": sum(errors) / n,
        "rmsle": math.sqrt(sum(sles) / n),
        "hit_rate": colours.count("green") / n,
        "orange": colours.count("orange") / n,
        "red": colours.count("red") / n,
        "failures": sum(g is None for g in guesses),
    }


def compute_metrics(truths: Sequence[float], guesses: Sequence[float | None]) -> dict:
    """The course's metrics over all items plus a breakdown by truth price bucket.

    A None guess (no number in the reply) is scored as $0 for error, RMSLE and colour, as the
    course's Tester did, and counted in `failures` so it never passes unnoticed.
    """
    if len(truths) != len(guesses):
        raise ValueError(f"{len(truths)} truths but {len(guesses)} guesses: pass one guess per item")
    if not truths:
        raise ValueError("no items to score: check --split and --limit")
    metrics = _scores(truths, guesses)
    metrics["by_bucket"] = []
    for name, lo, hi in BUCKETS:
        idx = [i for i, t in enumerate(truths) if lo <= t < hi]
        row = {"bucket": name, "n": len(idx), "avg_error": None, "rmsle": None, "hit_rate": None}
        if idx:
            sub = _scores([truths[i] for i in idx], [guesses[i] for i in idx])
            row.update(avg_error=sub["avg_error"], rmsle=sub["rmsle"], hit_rate=sub["hit_rate"])
        metrics["by_bucket"].append(row)
    return metrics


# ---------------------------------------------------------------- batching

def _device(model: Any):
    return next(model.parameters()).device


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Eval mode under torch.inference_mode, restoring the caller's train/eval mode afterwards."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _left_padded_batches(tokenizer: Any, prompts: Sequence[str], batch_size: int, device) -> Iterator[tuple]:
    """(indices, input_ids, attention_mask) per batch, left padded, prompts grouped by length."""
    import torch

    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    # Similar lengths together waste less padding; results go back by index, so order is kept.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = _pad_id(tokenizer)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        yield idx, ids.to(device), mask.to(device)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------- predictors

def predict_greedy(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 16,
                   max_new_tokens: int = 8) -> list[float | None]:
    """Greedy-decode a few tokens per prompt (batched, KV cache) and extract the price from each reply."""
    guesses: list[float | None] = [None] * len(prompts)
    with _inference(model), _progress(len(prompts), "greedy") as bar:
        for idx, ids, mask in _left_padded_batches(tokenizer, prompts, batch_size, _device(model)):
            new = greedy_tokens(model, ids, mask, max_new_tokens, tokenizer.eos_token_id, _pad_id(tokenizer))
            for row, i in enumerate(idx):
                guesses[i] = extract_price(tokenizer.decode(new[row], skip_special_tokens=True))
            bar.update(len(idx))
    return guesses


def greedy_tokens(model: Any, ids, mask, max_new_tokens: int, eos_id: int | None, pad_id: int):
    """The greedy continuation (batch, <= max_new_tokens) of a left-padded batch, as `generate` gives it.

    A plain loop: one forward over the prompts that keeps only the last position's logits,
    then one cached forward per new token, stopping once every row has written EOS. It does
    what `model.generate(do_sample=False)` does for this case without its per-step machinery.
    """
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{_cache_keyword(): cache})
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    tokens = []
    for step in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        if eos_id is not None:
            done |= nxt == eos_id
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True, **{_cache_keyword(): cache})
    return torch.stack(tokens, dim=1)


def predict_one_at_a_time(model: Any, tokenizer: Any, prompts: Sequence[str],
                          max_new_tokens: int = 4) -> list[float | None]:
    """The course's predictor: one `generate` per prompt, no batching (the speed baseline for bench/)."""
    guesses: list[float | None] = []
    with _inference(model):
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(_device(model))
            out = model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=_pad_id(tokenizer))
            guesses.append(extract_price(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
    return guesses


def number_tokens(tokenizer: Any) -> tuple[str, dict[int, int]]:
    """How the tokenizer writes prices after "Price is $": ("triples", {id: 0..999}) or ("digits", {id: 0..9}).

    Probed by encoding "Price is $" + n for every n in 0-999: one token each (Llama 3) is
    "triples"; one token per digit (SmolLM2) is "digits". Anything else is a ValueError.
    """
    head = tokenizer.encode(PRICE_MARKER, add_special_tokens=False)
    tails = []
    for n in range(1000):
        ids = tokenizer.encode(PRICE_MARKER + str(n), add_special_tokens=False)
        tails.append(ids[len(head):] if ids[:len(head)] == head else None)
    if all(t is not None and len(t) == 1 for t in tails) and len({t[0] for t in tails}) == 1000:
        return "triples", {t[0]: n for n, t in enumerate(tails)}
    digit_ids = [t[0] if t is not None and len(t) == 1 else None for t in tails[:10]]
    if None not in digit_ids and len(set(digit_ids)) == 10 and all(
            t == [digit_ids[int(c)] for c in str(n)] for n, t in enumerate(tails)):
        return "digits", {tid: d for d, tid in enumerate(digit_ids)}
    name = getattr(tokenizer, "name_or_path", "this tokenizer")
    raise ValueError(f"{name} writes numbers neither as one token per 0-999 nor one token per digit; "
                     "use --predictor greedy")


def price_distributions(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 16,
                        top_k: int = 20, max_digits: int = SEARCH_DIGITS, top_m: int = SEARCH_WIDTH,
                        min_prob: float = 1e-4) -> list[dict[int, float]]:
    """Per prompt, {price: probability} for the prices the model may write after "Price is $".

    "triples" tokenizers: the top_k number tokens of the next-token distribution (the course's
    improved predictor, which read a single token). "digits" tokenizers: a breadth-first search
    over digit strings where P("123") = P(1) P(2|1) P(3|12) P(stop|123), "stop" being any
    token that is not a digit (".", eos, ...). Level by level, each prompt keeps its top_m
    prefixes whose probability is at least min_prob; every kept prefix costs one batched
    one-token forward pass on the KV cache, whose rows are copied from the parent prefix.
    A leading "0" is only the price 0. The bound: prices 0 to 10**max_digits - 1, at most
    top_m * max_digits prefixes per prompt; mass outside the search is left out, so the
    probabilities sum to the mass the search covered (<= 1), and `point_estimate` renormalises.
    """
    import torch
    from transformers import DynamicCache

    kind, values = number_tokens(tokenizer)
    dists: list[dict[int, float]] = [{} for _ in prompts]
    with _inference(model), _progress(len(prompts), f"expected ({kind})") as bar:
        for idx, ids, mask in _left_padded_batches(tokenizer, prompts, batch_size, _device(model)):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # Only the digit search continues from the prompt, so only it needs the cache.
            cache = DynamicCache(config=model.config) if kind == "digits" else None
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
                        logits_to_keep=1, **{_cache_keyword(): cache})
            probs = out.logits[:, -1, :].float().softmax(-1)
            if kind == "triples":
                token_ids = torch.tensor(list(values), device=probs.device)
                top = probs[:, token_ids].topk(min(top_k, len(token_ids)), dim=-1)
                for row, i in enumerate(idx):
                    dists[i] = {values[int(token_ids[j])]: float(p)
                                for p, j in zip(top.values[row], top.indices[row])}
            else:
                found = _digit_search(model, cache, mask, probs, values, max_digits, top_m, min_prob)
                for row, i in enumerate(idx):
                    dists[i] = found[row]
            bar.update(len(idx))
    return dists


def _cache_keyword() -> str:
    """The forward() argument that takes the KV cache: `cache` from transformers 5.24, `past_key_values` before."""
    from dataclasses import fields

    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def _digit_search(model: Any, cache: Any, mask, probs, digit_values: dict[int, int],
                  max_digits: int, top_m: int, min_prob: float) -> list[dict[int, float]]:
    """The breadth-first digit search of `price_distributions` for one batch; `cache` is updated in place."""
    import torch

    batch = mask.shape[0]
    digit_ids = torch.tensor(sorted(digit_values, key=digit_values.get), device=mask.device)
    found: list[dict[int, float]] = [{} for _ in range(batch)]
    # A node is one row of the cache: (prompt row, digit string, path probability).
    nodes = [(b, "", 1.0) for b in range(batch)]
    for depth in range(max_digits + 1):
        digit_probs = probs[:, digit_ids].double().cpu()
        children: list[list[tuple[float, int, str]]] = [[] for _ in range(batch)]
        for r, (b, prefix, p) in enumerate(nodes):
            if prefix:
                value = int(prefix)
                found[b][value] = found[b].get(value, 0.0) + p * max(0.0, 1.0 - float(digit_probs[r].sum()))
            if depth == max_digits or prefix == "0":
                continue
            for d in range(10):
                q = p * float(digit_probs[r, d])
                if q >= min_prob and q > 0:
                    children[b].append((q, r, prefix + str(d)))
        chosen = [c for per_prompt in children for c in sorted(per_prompt, reverse=True)[:top_m]]
        if not chosen:
            break
        parents = torch.tensor([r for _, r, _ in chosen], device=mask.device)
        cache.reorder_cache(parents)
        mask = torch.cat([mask[parents], mask.new_ones((len(chosen), 1))], dim=1)
        step = torch.tensor([[int(digit_ids[int(s[-1])])] for _, _, s in chosen], device=mask.device)
        out = model(input_ids=step, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True, **{_cache_keyword(): cache})
        probs = out.logits[:, -1, :].float().softmax(-1)
        nodes = [(nodes[r][0], s, q) for q, r, s in chosen]
    return found


def point_estimate(dist: dict[int, float], how: str = "mean") -> float | None:
    """One price from a {price: probability} distribution renormalised to its mass; None when it is empty.

    - "mean":     sum(p * v) / mass, the expected price (it minimises the expected squared error).
    - "log-mean": exp(sum(p * log(1 + v)) / mass) - 1, the mean in log space (it minimises the
                  expected squared log error, the term RMSLE averages).
    - "median":   the lower weighted median, the smallest price whose cumulative probability
                  reaches half the mass. A tie (exactly half the mass at or below a price, to a
                  relative 1e-9) takes that lower price, not a midpoint: {9: .5, 99: .5} gives 9.
    """
    if how not in ESTIMATES:
        raise ValueError(f"unknown estimate {how!r}: pick one of {', '.join(ESTIMATES)}")
    mass = sum(dist.values())
    if mass <= 0:
        return None
    if how == "mean":
        return sum(v * p for v, p in dist.items()) / mass
    if how == "log-mean":
        return math.expm1(sum(math.log1p(v) * p for v, p in dist.items()) / mass)
    cumulative = 0.0
    for value in sorted(dist):
        cumulative += dist[value]
        if cumulative >= mass / 2 * (1 - 1e-9):
            return float(value)
    return float(max(dist))   # reached only through NaN probabilities


def expected_price(dist: dict[int, float]) -> float | None:
    """The mean of a {price: probability} distribution, renormalised; None when it is empty."""
    return point_estimate(dist, "mean")


def predict_expected(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 16,
                     how: str = "mean", **search: Any) -> list[float | None]:
    """The `how` point estimate per prompt of the model's distribution (see `price_distributions`)."""
    return [point_estimate(d, how) for d in price_distributions(model, tokenizer, prompts, batch_size, **search)]


def search_record(dists: Sequence[dict[int, float]], width: int, digits: int) -> dict:
    """What report.json says about the distributions: the digit search's bounds and the mean mass it covered."""
    return {"search_width": width, "search_digits": digits,
            "search_mass": statistics.fmean(sum(d.values()) for d in dists)}


def constant_prediction(train_prices: Sequence[float], kind: str) -> float:
    """The mean or median of the training prices: the baseline any model must beat."""
    if not train_prices:
        raise ValueError("the training split is empty: the mean/median baseline needs training prices")
    return statistics.fmean(train_prices) if kind == "mean" else statistics.median(train_prices)


# ---------------------------------------------------------------- outputs

def _atomic_write(path: Path, write, mode: str = "w") -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"newline": "", "encoding": "utf-8"} if mode == "w" else {})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def chart_title(title: str, metrics: dict) -> str:
    """The course's chart title: name, average error, RMSLE and hit rate."""
    return (f"{title}: Error=${metrics['avg_error']:,.2f} RMSLE={metrics['rmsle']:,.2f} "
            f"Hits={metrics['hit_rate'] * 100:.1f}%")


def plot_chart(truths: Sequence[float], guesses: Sequence[float | None], title: str):
    """The course's chart: truth vs estimate, one point per item coloured by error, and y = x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    filled = [0.0 if g is None else g for g in guesses]
    colours = [colour_for(abs(g - t), t) for g, t in zip(filled, truths)]
    top = max(max(truths), max(filled)) or 1.0
    fig = Figure(figsize=(12, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, top], [0, top], color="deepskyblue", lw=2, alpha=0.6)
    ax.scatter(truths, filled, s=3, c=colours)
    ax.set(xlabel="Ground Truth", ylabel="Model Estimate", xlim=(0, top), ylim=(0, top), title=title)
    return fig


def write_report(out_dir: str | os.PathLike, titles: Sequence[str], truths: Sequence[float],
                 guesses: Sequence[float | None], provenance: dict, name: str) -> dict:
    """Write report.json, predictions.csv and chart.png into out_dir; return the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(truths, guesses)
    report = {**metrics, **provenance}
    _atomic_write(out / "report.json", lambda f: f.write(json.dumps(report, indent=2) + "\n"))

    def rows(f):
        writer = csv.writer(f)
        writer.writerow(["title", "truth", "guess", "error", "colour"])
        for title, t, g in zip(titles, truths, guesses):
            error = abs((g or 0.0) - t)
            writer.writerow([title, f"{t:.2f}", "" if g is None else f"{g:.2f}", f"{error:.2f}",
                             colour_for(error, t)])
    _atomic_write(out / "predictions.csv", rows)
    fig = plot_chart(truths, guesses, chart_title(name, metrics))
    _atomic_write(out / "chart.png", lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    return report


def format_summary(report: dict) -> str:
    """The printed summary: one line per price bucket and a total line."""
    lines = [f"{'bucket':<10} {'n':>6} {'avg error':>10} {'RMSLE':>7} {'hits':>7}"]
    for b in report["by_bucket"]:
        if b["n"]:
            lines.append(f"{b['bucket']:<10} {b['n']:>6,} {b['avg_error']:>10,.2f} {b['rmsle']:>7.2f} "
                         f"{b['hit_rate'] * 100:>6.1f}%")
    lines.append(f"{'all':<10} {report['n']:>6,} {report['avg_error']:>10,.2f} {report['rmsle']:>7.2f} "
                 f"{report['hit_rate'] * 100:>6.1f}%")
    lines.append(f"green {report['hit_rate'] * 100:.1f}%  orange {report['orange'] * 100:.1f}%  "
                 f"red {report['red'] * 100:.1f}%  failures {report['failures']:,} of {report['n']:,}")
    return "\n".join(lines)


def format_compare(reports: Sequence[tuple[str, dict]]) -> str:
    """Several reports side by side: name, n, average error, RMSLE, hit rate, failures."""
    width = max([len("name")] + [len(name) for name, _ in reports])
    lines = [f"{'name':<{width}}  {'n':>6}  {'avg error':>10}  {'RMSLE':>6}  {'hit rate':>8}  {'failures':>8}"]
    for name, r in reports:
        lines.append(f"{name:<{width}}  {r['n']:>6,}  {'$' + format(r['avg_error'], ',.2f'):>10}  "
                     f"{r['rmsle']:>6.2f}  {r['hit_rate'] * 100:>7.1f}%  {r['failures']:>8,}")
    return "\n".join(lines)


def load_reports(dirs: Sequence[str]) -> list[tuple[str, dict]]:
    """(name, report) for each folder holding a report.json; the name is the folder's own name."""
    reports = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"no report.json in {d}: pass folders written by evaluate.py --out")
        reports.append((Path(d).resolve().name, json.loads(path.read_text())))
    return reports


# ---------------------------------------------------------------- CLI

def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options naming the model, the data, its split fractions and the prompts: shared with bench/estimators.py."""
    p.add_argument("--adapter", help="adapter folder (pricer's or peft's); omit to evaluate the base alone")
    p.add_argument("--base", help="base model (name, folder or hub id); default: the adapter's base")
    p.add_argument("--data", help="data source: file, folder or dataset (as data.load_items reads)")
    p.add_argument("--data-format", choices=("jsonl", "csv", "parquet", "hf"),
                   help="read --data as this format (hf: a Hugging Face dataset name); default: by extension")
    p.add_argument("--seed", type=int, help="split and sampling seed (default: the run's, else 42)")
    p.add_argument("--val-fraction", type=float, help="split fractions (default: the run's, else 0.05 and 0.1)")
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bits", type=int, choices=(4, 8, 16), help="default: the run's, else 4")
    p.add_argument("--quant-type", choices=("nf4", "fp4"), help="default: the run's, else nf4")
    p.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"),
                   help="default: the run's, else bfloat16")
    p.add_argument("--max-text-tokens", type=int, help="default: the run's, else 160")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate a base model (+ adapter) on prices.")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="print these report folders side by side and exit")
    add_model_options(p)
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument("--limit", type=int, help="evaluate a deterministic sample of N items of the split")
    p.add_argument("--sample", choices=("pool", "balanced"), default="pool",
                   help="how --limit draws: by hash from the split, or spread over price buckets")
    p.add_argument("--predictor", choices=PREDICTORS, default="greedy")
    p.add_argument("--max-new-tokens", type=int, default=8, help="greedy: tokens generated per item")
    p.add_argument("--estimate", choices=ESTIMATES, help="expected: the distribution's point estimate (default mean)")
    p.add_argument("--search-width", type=int,
                   help=f"expected, digit tokenizers: prefixes kept per digit (default {SEARCH_WIDTH})")
    p.add_argument("--search-digits", type=int,
                   help=f"expected, digit tokenizers: digits of the longest price (default {SEARCH_DIGITS})")
    p.add_argument("--out", help="folder for report.json, predictions.csv and chart.png")
    args = p.parse_args(argv)
    if not args.compare and (not args.data or not args.out):
        p.error("--data and --out are required (or --compare DIR ...)")
    if args.limit is not None and args.limit <= 0:
        p.error("--limit must be a positive number of items")
    if args.batch_size <= 0:
        p.error("--batch-size must be positive")
    check_expected_options(p, args)
    return with_run_defaults(args)


def check_expected_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse --estimate/--search-* without --predictor expected or out of range, then fill their defaults."""
    given = [flag for flag, value in (("--estimate", args.estimate), ("--search-width", args.search_width),
                                      ("--search-digits", args.search_digits)) if value is not None]
    if given and args.predictor != "expected":
        p.error(f"{', '.join(given)}: only for --predictor expected, not {args.predictor}")
    for flag, value in (("--search-width", args.search_width), ("--search-digits", args.search_digits)):
        if value is not None and value <= 0:
            p.error(f"{flag} must be positive")
    if args.predictor == "expected":
        args.estimate = args.estimate or "mean"
        args.search_width = args.search_width or SEARCH_WIDTH
        args.search_digits = args.search_digits or SEARCH_DIGITS


# What train.py trained with, where the command line leaves it open: evaluating on another
# split or another quantization than training used would score the wrong thing.
RUN_DEFAULTS = {"seed": ("data", "seed", 42), "val_fraction": ("data", "val_fraction", 0.05),
                "test_fraction": ("data", "test_fraction", 0.1), "max_text_tokens": ("data", "max_text_tokens", 160),
                "bits": ("model", "bits", 4), "quant_type": ("model", "quant_type", "nf4"),
                "compute_dtype": ("model", "compute_dtype", "bfloat16")}


def with_run_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from <run>/config.yaml when --adapter is train.py's <run>/adapter, else defaults."""
    import yaml

    run = Path(args.adapter).parent / "config.yaml" if args.adapter else None
    saved = yaml.safe_load(run.read_text()) if run is not None and run.is_file() else {}
    for key, (section, name, default) in RUN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, (saved.get(section) or {}).get(name, default))
    return args


def pick_items(args: argparse.Namespace) -> tuple[list, list[float]]:
    """The items to evaluate (split, then optional sample) and the training split's prices."""
    from data import load_items, split_items
    from data.splits import price_balanced_sample, sample

    splits = split_items(load_items(args.data, fmt=args.data_format), seed=args.seed,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    pool = splits.train + splits.val + splits.test if args.split == "all" else getattr(splits, args.split)
    if not pool:
        raise ValueError(f"the {args.split} split of {args.data} is empty: pick another --split or more data")
    n = args.limit if args.limit is not None else len(pool)
    picked = (price_balanced_sample(pool, n, seed=args.seed) if args.sample == "balanced"
              else sample(pool, n, seed=args.seed))
    return picked, [it.price for it in splits.train]


def resolve_base(adapter: str | None, base: str | None) -> str:
    """The base model to load: --base, else the one named in the adapter's adapter_config.json."""
    if adapter is not None:
        config = Path(adapter) / "adapter_config.json"
        if not config.is_file():
            raise FileNotFoundError(f"no adapter_config.json in {adapter}: pass a folder saved by train.py or peft")
        if base is None:
            base = json.loads(config.read_text()).get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{config} names no base model: pass --base MODEL")
    if base is None:
        raise ValueError("no model to evaluate: pass --adapter DIR and/or --base MODEL "
                         "(or --predictor mean|median for a constant baseline)")
    return base


def load_model(base: str, adapter: str | None, bits: int, quant_type: str = "nf4",
               compute_dtype: str = "bfloat16") -> tuple[Any, Any]:
    """The base model (quantized to `bits`) with the adapter loaded on it, and its tokenizer."""
    from quant import load_base_model

    model, tokenizer = load_base_model(base, bits=bits, quant_type=quant_type, compute_dtype=compute_dtype)
    if adapter is not None:
        from lora import load_adapter

        load_adapter(model, adapter)
    return model.eval(), tokenizer


def model_name(adapter: str | None, base: str) -> str:
    """The name a report goes by: the adapter's folder (its run's, for train.py's <run>/adapter), else the base's."""
    path = Path(adapter or base)
    return path.resolve().parent.name if path.name == "adapter" else path.name


def _device_name(model: Any | None) -> str:
    import torch

    if model is None:
        return "none"
    device = _device(model)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say, write the outputs and return the report."""
    items, train_prices = pick_items(args)
    truths = [it.price for it in items]
    model = base = None
    extra: dict = {}
    if args.predictor in ("mean", "median"):
        start = time.perf_counter()
        guesses = [constant_prediction(train_prices, args.predictor)] * len(items)
        name = f"{args.predictor} baseline"
    else:
        base = resolve_base(args.adapter, args.base)
        model, tokenizer = load_model(base, args.adapter, args.bits, args.quant_type, args.compute_dtype)
        from data import test_prompt

        prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
        start = time.perf_counter()
        if args.predictor == "greedy":
            guesses = predict_greedy(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
        else:
            dists = price_distributions(model, tokenizer, prompts, args.batch_size,
                                        max_digits=args.search_digits, top_m=args.search_width)
            guesses = [point_estimate(d, args.estimate) for d in dists]
            extra = {"estimate": args.estimate, **search_record(dists, args.search_width, args.search_digits)}
        name = model_name(args.adapter, base)
    seconds = time.perf_counter() - start
    record = provenance(args, name, base, model, len(items), seconds, extra)
    return write_report(args.out, [it.title for it in items], truths, guesses, record, name)


def provenance(args: argparse.Namespace, name: str, base: str | None, model: Any | None, n_items: int,
               seconds: float, extra: dict) -> dict:
    """report.json's account of a run: what was evaluated, on which items, how, where and how fast."""
    return {
        "name": name, "base": base, "adapter": args.adapter, "data": str(args.data), "split": args.split,
        "limit": args.limit, "sample": args.sample, "predictor": args.predictor, "seed": args.seed,
        "bits": None if model is None else args.bits,
        "quant_type": None if model is None or args.bits != 4 else args.quant_type,
        "compute_dtype": None if model is None else args.compute_dtype,
        "val_fraction": args.val_fraction, "test_fraction": args.test_fraction, "batch_size": args.batch_size,
        "max_text_tokens": args.max_text_tokens, **extra,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 3),
        "items_per_s": round(n_items / seconds, 3) if seconds > 0 else None,
        "device": _device_name(model),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print `error: ...` and return 2."""
    args = parse_args(argv)
    try:
        if args.compare:
            print(format_compare(load_reports(args.compare)))
            return 0
        report = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(report))
    print(f"wrote report.json, predictions.csv and chart.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
