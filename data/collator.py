"""Completion-only batches: the loss sees the answer and the end token, never the prompt.

The mask is built by construction, not by searching the ids for "Price is $":

    ids    = tokenizer(prompt)  +  tokenizer(completion, add_special_tokens=False) + [eos]
    labels = [-100] * len(prompt ids)  +  completion ids + [eos]

Tokenizing the prompt and the completion apart can give other ids than tokenizing the
joined string (a BPE may merge "$" with "1" into "$1"). That is the point: evaluation
tokenizes the prompt alone and lets the model continue it, so training on
tokenizer(prompt) + tokenizer(completion) teaches the model exactly the ids it will be
given at test time. A template search on the joined ids would, for such tokenizers, find
no "Price is $" (or a wrong one) and silently train on nothing or on the prompt.

Tokenizers that prepend a space to every text (SentencePiece with a dummy prefix, e.g.
Llama 2) give the separately tokenized completion a leading-space token; the byte-level
tokenizers of SmolLM2 and Llama 3 do not.

Truncation cuts the middle of the prompt: the leading special tokens and question, and the
end of the text with "Price is $", are kept; the answer is never cut. A truncated prompt
differs from the one evaluation sends, so `truncated` counts them: choose max_length to keep
it at zero (160 text tokens fit 182 with Llama 3; SmolLM2 spells prices digit by digit and
needs about 186).
"""
from __future__ import annotations

from typing import Any

import torch

from data.items import DataError

IGNORE_INDEX = -100  # the label of a position the loss skips (PyTorch's cross_entropy default)


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS (Llama 3 has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class CompletionCollator:
    """Collate {"prompt", "completion"} dicts into right-padded tensors with completion-only labels."""

    def __init__(self, tokenizer: Any, max_length: int = 182, pad_to_multiple_of: int | None = None,
                 label_pad: int = IGNORE_INDEX):
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no eos token; set tokenizer.eos_token before collating")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad = label_pad
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = pad_token_id(tokenizer)
        self.lead = _leading_special_count(tokenizer)
        self.truncated = 0

    def encode(self, example: dict[str, str]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one example, truncated to max_length; use len(ids) for length grouping."""
        prompt_ids = self.tokenizer(example["prompt"])["input_ids"]
        answer_ids = self.tokenizer(example["completion"], add_special_tokens=False)["input_ids"] + [self.eos_id]
        budget = self.max_length - len(answer_ids)
        if budget < self.lead + 2:
            raise DataError(f"the completion {example['completion']!r} needs {len(answer_ids)} tokens, leaving "
                            f"no room for a prompt in max_length={self.max_length}; raise max_length")
        if len(prompt_ids) > budget:
            self.truncated += 1
            head = self.lead + (budget - self.lead) // 2
            prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (budget - head):]
        return prompt_ids + answer_ids, [self.label_pad] * len(prompt_ids) + answer_ids

    def __call__(self, examples: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        """A batch: input_ids, attention_mask, labels (B, T) and num_supervised (scalar)."""
        encoded = [self.encode(e) for e in examples]
        length = max(len(ids) for ids, _ in encoded)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        labels = torch.full((len(encoded), length), self.label_pad, dtype=torch.long)
        for row, (ids, lab) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "num_supervised": (labels != self.label_pad).sum()}


def _leading_special_count(tokenizer: Any) -> int:
    """How many special tokens (e.g. BOS) the tokenizer puts before a text."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k: k + len(plain)] == plain:
            return k
    return 0
