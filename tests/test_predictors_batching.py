"""predictors/batching.py: left padding, grouping by length, and the caller's train/eval mode kept."""
from __future__ import annotations

import torch

from predictors.batching import inference, left_padded_batches


def test_left_padded_batches(tiny_tokenizer):
    prompts = ["a much longer prompt than the others, Price is $", "Price is $", "short, Price is $"]
    encoded = [tiny_tokenizer(p)["input_ids"] for p in prompts]
    batches = list(left_padded_batches(tiny_tokenizer, prompts, 2, torch.device("cpu")))
    assert [idx for idx, _, _ in batches] == [[1, 2], [0]]   # shortest first, results go back by index
    for idx, ids, mask in batches:
        assert ids.shape == mask.shape == (len(idx), max(len(encoded[i]) for i in idx))
        for row, i in enumerate(idx):
            pad = ids.shape[1] - len(encoded[i])
            assert ids[row, pad:].tolist() == encoded[i] and mask[row].tolist() == [0] * pad + [1] * len(encoded[i])
            assert set(ids[row, :pad].tolist()) <= {tiny_tokenizer.eos_token_id if tiny_tokenizer.pad_token_id is None
                                                    else tiny_tokenizer.pad_token_id}


def test_inference_restores_mode(tiny_llama):
    tiny_llama.train()
    with inference(tiny_llama):
        assert not tiny_llama.training and torch.is_inference_mode_enabled()
    assert tiny_llama.training
