"""The greedy predictor: generate a few tokens after "Price is $" and read the first number."""
from __future__ import annotations

import argparse
import re
from typing import Any, Sequence

from predictors.base import Prediction, Predictor, positive_int
from predictors.batching import inference, left_padded_batches, model_device, progress
from predictors.registry import register

_NUMBER = re.compile(r"\d*\.\d+|\d+")


def extract_price(reply: str) -> float | None:
    """The first number after "Price is $" (or in the reply), commas removed; None when there is none."""
    from data.prompts import PREFIX

    if PREFIX in reply:
        reply = reply.split(PREFIX, 1)[1]
    match = _NUMBER.search(reply.replace(",", ""))
    return float(match.group()) if match else None


def greedy_tokens(model: Any, ids: Any, mask: Any, max_new_tokens: int, eos_id: int | None, pad_id: int) -> Any:
    """The greedy continuation (batch, <= max_new_tokens) of a left-padded batch, as `generate` gives it.

    A plain loop: one forward over the prompts that keeps only the last position's logits,
    then one cached forward per new token, stopping once every row has written EOS. It does
    what `model.generate(do_sample=False)` does for this case without its per-step machinery.
    """
    import torch
    from transformers import DynamicCache

    from utils.compat import cache_keyword

    cache = {cache_keyword(): DynamicCache(config=model.config)}   # under the name this transformers takes
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **cache)
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
                    use_cache=True, **cache)
    return torch.stack(tokens, dim=1)


def predict_greedy(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 16,
                   max_new_tokens: int = 8) -> list[float | None]:
    """Greedy-decode a few tokens per prompt (batched, KV cache) and extract the price from each reply."""
    from data import pad_token_id

    guesses: list[float | None] = [None] * len(prompts)
    with inference(model), progress(len(prompts), "greedy") as bar:
        for idx, ids, mask in left_padded_batches(tokenizer, prompts, batch_size, model_device(model)):
            new = greedy_tokens(model, ids, mask, max_new_tokens, tokenizer.eos_token_id, pad_token_id(tokenizer))
            for row, i in enumerate(idx):
                guesses[i] = extract_price(tokenizer.decode(new[row], skip_special_tokens=True))
            bar.update(len(idx))
    return guesses


def predict_one_at_a_time(model: Any, tokenizer: Any, prompts: Sequence[str],
                          max_new_tokens: int = 4) -> list[float | None]:
    """The course's predictor: one `generate` per prompt, no batching (the speed baseline for bench/)."""
    from data import pad_token_id

    guesses: list[float | None] = []
    with inference(model):
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model_device(model))
            out = model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad_token_id(tokenizer))
            guesses.append(extract_price(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
    return guesses


@register
class GreedyPredictor(Predictor):
    """Generate a few tokens after "Price is $" (greedy, batched) and read the first number."""

    name = "greedy"
    # --max-new-tokens has a default and is not in `flags`: it has always been accepted beside any predictor.

    def __init__(self, max_new_tokens: int = 8):
        self.max_new_tokens = max_new_tokens

    @classmethod
    def add_options(cls, parser: Any) -> None:
        """--max-new-tokens."""
        parser.add_argument("--max-new-tokens", type=positive_int, default=8,
                            help="tokens generated per item (default 8)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GreedyPredictor:
        """A greedy predictor generating --max-new-tokens tokens."""
        return cls(args.max_new_tokens)

    def predict(self, prompts: Sequence[str], *, model: Any = None, tokenizer: Any = None, batch_size: int = 16,
                train_prices: Sequence[float] = (), answer_width: int = 0) -> list[Prediction]:
        """The price in each prompt's greedy reply (None where the reply has no number; "0123.00" is 123)."""
        self.check_model(model, tokenizer)
        return [Prediction(g) for g in predict_greedy(model, tokenizer, prompts, batch_size, self.max_new_tokens)]
