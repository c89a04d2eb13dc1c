"""training.loss: the completion loss equals transformers' full-logits loss, and accumulation over
micro-batches normalises by the step's supervised tokens, not by a mean of per-batch means."""
from __future__ import annotations

import pytest
import torch

from data import CompletionCollator
from training.loss import CompletionLossModel, accumulate_gradients, completion_loss_sum


def _examples():
    # Prices of very different token counts: the naive mean of per-batch means would weigh them unevenly.
    texts = ["Cordless drill with two batteries.", "Guitar strings, light gauge.", "Office desk organizer.",
             "Kids toy building blocks set, 500 pieces.", "Water filter replacement.", "Photo editing license."]
    prices = ["5.00", "1234.00", "12.00", "999.00", "7.00", "45.00"]
    return [{"prompt": f"How much does this cost?\n\n{t}\n\nPrice is $", "completion": p} for t, p in zip(texts, prices)]


def test_completion_loss_matches_hf_full_logits_loss(tiny_llama, tiny_tokenizer):
    tiny_tokenizer.pad_token = tiny_tokenizer.eos_token
    batch = CompletionCollator(tiny_tokenizer, max_length=64)(_examples())
    loss_sum, n = completion_loss_sum(tiny_llama, batch)
    reference = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss
    assert int(n) == int((batch["labels"][:, 1:] != -100).sum()) > len(_examples())
    torch.testing.assert_close(loss_sum / n, reference, rtol=1e-5, atol=1e-6)


def _lora_model(tiny_llama):
    from lora import LoRAConfig, inject_lora, lora_parameters

    torch.manual_seed(0)
    inject_lora(tiny_llama, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():  # B starts at zero, which would leave A's gradient zero
        for p in lora_parameters(tiny_llama, split=True)[1]:
            p.normal_(0, 0.05)
    return tiny_llama.train()


def test_two_micro_batches_give_the_update_of_one_batch_of_four(tiny_llama, tiny_tokenizer):
    from accelerate import Accelerator

    from lora import lora_parameters

    tiny_tokenizer.pad_token = tiny_tokenizer.eos_token
    collate = CompletionCollator(tiny_tokenizer, max_length=64)
    e = _examples()
    examples = [e[0], e[2], e[1], e[3]]  # $5 and $12, then $1234 and $999: 11 vs 15 supervised tokens
    model = _lora_model(tiny_llama)
    wrapped = CompletionLossModel(model)
    params = lora_parameters(model)
    accelerator = Accelerator(cpu=True)

    def grads(micro):
        for p in params:
            p.grad = None
        loss_sum, n_tok = accumulate_gradients(accelerator, wrapped, [collate(m) for m in micro])
        return float(loss_sum / n_tok), [p.grad.clone() for p in params]

    loss_one, g_one = grads([examples])
    loss_two, g_two = grads([examples[:2], examples[2:]])
    assert loss_one == pytest.approx(loss_two, rel=1e-5)
    for a, b in zip(g_one, g_two):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # The test can fail: a mean of the two per-batch means gives another gradient.
    for p in params:
        p.grad = None
    for m in (examples[:2], examples[2:]):
        part, n = completion_loss_sum(model, collate(m))
        (part / n / 2).backward()
    assert max(float((p.grad - g).abs().max()) for p, g in zip(params, g_one)) > 1e-4


def test_the_loss_model_calls_the_loss_it_is_given(tiny_llama, tiny_tokenizer):
    """CompletionLossModel's loss_fn seam: train(loss_fn=...) reaches the loss through it."""
    batch = CompletionCollator(tiny_tokenizer, max_length=64)(_examples()[:2])
    seen = []

    def doubled(model, b):
        seen.append(model)
        part, n = completion_loss_sum(model, b)
        return 2 * part, n

    plain = CompletionLossModel(tiny_llama)(batch["input_ids"], batch["attention_mask"], batch["labels"])
    twice = CompletionLossModel(tiny_llama, doubled)(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert seen == [tiny_llama]
    torch.testing.assert_close(twice[0], 2 * plain[0])
    assert int(twice[1]) == int(plain[1])
