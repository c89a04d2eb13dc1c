"""The model's price distribution after "Price is $": {price: probability} per prompt, read off the
next-token distribution (tokenizers with one token per number 0-999, Llama 3) or found by a bounded
breadth-first search over digit strings (one token per digit, SmolLM2, Gemma 3).

    kind, values = number_tokens(tokenizer)                  # "triples" or "digits"
    dists = price_distributions(model, tokenizer, prompts)   # [{price: probability}, ...]

The search keeps SEARCH_WIDTH prefixes per digit, up to SEARCH_DIGITS digits; the mass it prunes is left
out, or given back by length or by prefix (ACCOUNTING). The expected predictor (expected.py) turns each
distribution into a point estimate and an interval.
"""
from __future__ import annotations

import contextlib
import statistics
import warnings
import weakref
from typing import Any, Sequence

from predictors.batching import inference, left_padded_batches, model_device, progress

ACCOUNTING = ("none", "by-length", "by-prefix")
# The digit search's defaults, top_m and max_digits: the width trades time for covered mass. At 100 the median item
# has at least 80% of its probability searched on validation and on sources the model never saw (30: 54-76% there),
# at no cost in items/s on a GPU and 45% fewer on a CPU (bench/RESULTS.md, "Search width, point estimate and
# intervals").
SEARCH_WIDTH, SEARCH_DIGITS = 100, 4


# number_tokens' answer per tokenizer, with the vocabulary size it was probed at: evaluate.py
# predicts batch by batch, and probing 1000 encodings per batch would cost as much as a batch.
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def number_tokens(tokenizer: Any) -> tuple[str, dict[int, int]]:
    """How the tokenizer writes prices after "Price is $": ("triples", {id: 0..999}) or ("digits", {id: 0..9}).

    Probed by encoding "Price is $" + n for every n in 0-999: one token each (Llama 3) is
    "triples"; one token per digit (SmolLM2) is "digits". Anything else is a ValueError.
    """
    try:
        size, found = _PROBED[tokenizer]
        if size == len(tokenizer):
            return found
    except (KeyError, TypeError):   # not probed yet, or a tokenizer that cannot be weakly referenced
        pass
    found = _probe_numbers(tokenizer)
    with contextlib.suppress(TypeError):
        _PROBED[tokenizer] = (len(tokenizer), found)
    return found


def _probe_numbers(tokenizer: Any) -> tuple[str, dict[int, int]]:
    from data.prompts import PREFIX

    head = tokenizer.encode(PREFIX, add_special_tokens=False)
    tails = []
    for n in range(1000):
        ids = tokenizer.encode(PREFIX + str(n), add_special_tokens=False)
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
                        min_prob: float = 1e-4, accounting: str = "none",
                        searched: list[float] | None = None, answer_width: int = 0) -> list[dict[int, float]]:
    """Per prompt, {price: probability} for the prices the model may write after "Price is $".

    "triples" tokenizers: the top_k number tokens of the next-token distribution (the course's
    improved predictor, which read a single token). "digits" tokenizers: a breadth-first search
    over digit strings where P("123") = P(1) P(2|1) P(3|12) P(stop|123), "stop" being any
    token that is not a digit (".", eos, ...). Level by level, each prompt keeps its top_m
    prefixes whose probability is at least min_prob; every kept prefix costs one batched
    one-token forward pass on the KV cache, whose rows are copied from the parent prefix.
    A leading "0" is only the price 0, unless the model was trained on answers zero-padded to
    answer_width digits (data.answer_width): then "0123" is 123 and the search goes that deep. The bound:
    prices 0 to 10**max_digits - 1, at most top_m * max_digits prefixes per prompt; mass outside the search
    is left out, so the probabilities sum to the mass covered (<= 1), and `point_estimate` (expected.py) renormalises.

    What the search prunes is not spread evenly over prices: a level of d digits keeps top_m of up
    to 10 * top_m prefixes, so more of the mass of long (dear) numbers is cut than of short ones,
    and renormalising pulls the estimate down. accounting="by-length" gives the mass pruned at
    each length back to the prices found with at least that many digits, in proportion to their
    probabilities (`account_pruned`), so the distribution over lengths is the model's own. With padded
    answers a pruned prefix knows its magnitude ("012" of 4 digits is 120-129): accounting="by-prefix" gives
    its mass to the middle of its range (`account_by_prefix`).
    """
    from transformers import DynamicCache

    from utils.compat import cache_keyword

    kind, values = number_tokens(tokenizer)
    _check_search(kind, accounting, answer_width)
    max_digits = max(max_digits, answer_width)
    dists: list[dict[int, float]] = [{} for _ in prompts]
    raw = [0.0] * len(prompts)
    after_zero: list[float] = []   # unpadded: per prompt, the probability the model went on after a leading "0"
    with inference(model), progress(len(prompts), f"expected ({kind})") as bar:
        for idx, ids, mask in left_padded_batches(tokenizer, prompts, batch_size, model_device(model)):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # Only the digit search continues from the prompt, so only it needs the cache.
            cache = DynamicCache(config=model.config) if kind == "digits" else None
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
                        logits_to_keep=1, **{cache_keyword(): cache})
            probs = out.logits[:, -1, :].float().softmax(-1)
            pruned = None
            if kind == "triples":
                found = _top_numbers(probs, values, top_k)
            else:
                found, pruned, zeros = _digit_search(model, cache, mask, probs, values, max_digits, top_m, min_prob,
                                                     padded=answer_width > 0)
                after_zero += zeros
            for row, i in enumerate(idx):
                raw[i] = sum(found[row].values())
                dists[i] = (found[row] if pruned is None
                            else _accounted(found[row], pruned[row], accounting, answer_width))
            bar.update(len(idx))
    if searched is not None:
        searched[:] = raw
    _warn_if_padded(after_zero)
    return dists


def _check_search(kind: str, accounting: str, answer_width: int) -> None:
    """ValueError for a search that cannot be made: padded answers in number tokens, by-prefix without padding."""
    if accounting == "by-prefix" and not answer_width:
        raise ValueError("by-prefix accounting needs answers padded to a width (data.answer_width): an unpadded "
                         "prefix does not say how many digits follow it")
    if answer_width and kind != "digits":
        raise ValueError(f"answers padded to {answer_width} digits need a tokenizer that writes one token per digit; "
                         f"this one writes numbers as {kind}: train with data.answer_width 0")


def _accounted(found: dict[int, float], pruned: dict[str, float], accounting: str, width: int) -> dict[int, float]:
    """The distribution found, with the pruned mass given back as `accounting` says ("none": left out)."""
    if accounting == "by-length":
        return account_pruned(found, by_length(pruned), width)
    if accounting == "by-prefix":
        return account_by_prefix(found, pruned, width)
    return found


def _warn_if_padded(after_zero: Sequence[float]) -> None:
    """Warn when the model went on after a leading "0" with probability over one half, on average over the prompts."""
    if after_zero and statistics.fmean(after_zero) > 0.5:
        warnings.warn(f"the model writes more digits after a leading 0 (probability {statistics.fmean(after_zero):.2f} "
                      "on average): it was likely trained on zero-padded answers; pass the width it was trained with "
                      "(--answer-width, data.answer_width)", PaddedAnswersWarning, stacklevel=3)


class PaddedAnswersWarning(UserWarning):
    """A model that writes zero-padded answers is searched as if it did not (its answer width was not given)."""


def _top_numbers(probs: Any, number_values: dict[int, int], top_k: int) -> list[dict[int, float]]:
    """The top_k number tokens of each row's next-token distribution, as {number: probability}."""
    import torch

    token_ids = torch.tensor(list(number_values), device=probs.device)
    top = probs[:, token_ids].topk(min(top_k, len(token_ids)), dim=-1)
    return [{number_values[int(token_ids[j])]: float(p) for p, j in zip(top.values[row], top.indices[row])}
            for row in range(probs.shape[0])]


def _digit_search(model: Any, cache: Any, mask: Any, probs: Any, digit_values: dict[int, int], max_digits: int,
                  top_m: int, min_prob: float, padded: bool = False
                  ) -> tuple[list[dict[int, float]], list[dict[str, float]], list[float]]:
    """The breadth-first digit search of `price_distributions` for one batch; `cache` is updated in place.
    `padded`: leading zeros continue ("0123" is 123); otherwise a leading "0" is only the price 0.

    Returns, per prompt, the distribution found, {prefix: mass} of the digit strings the search
    pruned, and the probability of a digit after a leading "0" that the unpadded search did not
    follow (0.0 when padded).
    """
    import torch

    from utils.compat import cache_keyword

    batch = mask.shape[0]
    digit_ids = torch.tensor(sorted(digit_values, key=digit_values.get), device=mask.device)
    found: list[dict[int, float]] = [{} for _ in range(batch)]
    pruned: list[dict[str, float]] = [{} for _ in range(batch)]
    # A node is one row of the cache: (prompt row, digit string, path probability).
    after_zero = [0.0] * batch
    nodes = [(b, "", 1.0) for b in range(batch)]
    for depth in range(max_digits + 1):
        digit_probs = probs[:, digit_ids].double().cpu()
        children: list[list[tuple[float, int, str]]] = [[] for _ in range(batch)]
        for r, (b, prefix, p) in enumerate(nodes):
            stop = p * max(0.0, 1.0 - float(digit_probs[r].sum()))
            if prefix and stop > 0:
                found[b][int(prefix)] = found[b].get(int(prefix), 0.0) + stop
            if prefix == "0" and not padded:
                after_zero[b] += p * float(digit_probs[r].sum())
                continue
            if depth == max_digits:
                continue
            for d in range(10):
                q = p * float(digit_probs[r, d])
                if q >= min_prob and q > 0:
                    children[b].append((q, r, prefix + str(d)))
                elif q > 0:
                    pruned[b][prefix + str(d)] = q
        chosen = []
        for b, per_prompt in enumerate(children):
            ranked = sorted(per_prompt, reverse=True)
            chosen += ranked[:top_m]
            pruned[b].update((s, q) for q, _, s in ranked[top_m:])
        if not chosen:
            break
        parents = torch.tensor([r for _, r, _ in chosen], device=mask.device)
        cache.reorder_cache(parents)
        mask = torch.cat([mask[parents], mask.new_ones((len(chosen), 1))], dim=1)
        step = torch.tensor([[int(digit_ids[int(s[-1])])] for _, _, s in chosen], device=mask.device)
        out = model(input_ids=step, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True, **{cache_keyword(): cache})
        probs = out.logits[:, -1, :].float().softmax(-1)
        nodes = [(nodes[r][0], s, q) for q, r, s in chosen]
    return found, pruned, after_zero


def by_length(pruned: dict[str, float]) -> dict[int, float]:
    """{length: mass} of pruned digit strings ({prefix: mass}), what `account_pruned` takes."""
    lengths: dict[int, float] = {}
    for prefix, mass in pruned.items():
        lengths[len(prefix)] = lengths.get(len(prefix), 0.0) + mass
    return lengths


def account_by_prefix(found: dict[int, float], pruned: dict[str, float], width: int) -> dict[int, float]:
    """`found` with each pruned prefix's mass at the middle of the prices it stood for, answers padded to `width`.

    A padded prefix of L <= width digits stands for the prices prefix * 10**(width - L) to that plus
    10**(width - L) - 1 ("012" of 4: 120 to 129); its mass goes to the integer middle (124). Longer prefixes
    (prices past the width) say no more than their lower bound and stay out, as they do of the search.
    """
    out = dict(found)
    for prefix, mass in pruned.items():
        if len(prefix) <= width:
            step = 10 ** (width - len(prefix))
            middle = (int(prefix) * step * 2 + step - 1) // 2
            out[middle] = out.get(middle, 0.0) + mass
    return out


def account_pruned(found: dict[int, float], pruned: dict[int, float], width: int = 0) -> dict[int, float]:
    """`found` with the mass pruned at each length L given to the found prices of L digits or more.

    Each pruned prefix of L digits stood for prices of at least L digits; their values are
    unknown, so its mass goes to the found prices of that many digits or more, in proportion to
    their found probabilities. Mass with no such price to go to stays out (the total stays <= 1).
    A price's length is as the model writes it: zero-padded to `width` digits (data.answer_width).
    """
    out = dict(found)
    for length, mass in sorted(pruned.items()):
        longer = {v: p for v, p in found.items() if len(str(v).zfill(width)) >= length}
        total = sum(longer.values())
        if total > 0:
            for v, p in longer.items():
                out[v] += mass * p / total
    return out


def search_record(searched: Sequence[float], width: int, digits: int, accounting: str = "none") -> dict:
    """What report.json says about a search: its bounds and accounting, and the mean mass it covered
    (`searched`, price_distributions' masses as searched, before any accounting)."""
    return {"search_width": width, "search_digits": digits, "search_accounting": accounting,
            "search_mass": statistics.fmean(searched) if searched else 0.0}
