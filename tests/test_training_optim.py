"""training.optim: the learning-rate schedule (the HF Trainer's numbers) and LoRA+'s parameter groups."""
from __future__ import annotations

import math

import pytest
import torch

from training.config import TrainConfig
from training.optim import build_optimizer, lr_lambda, warmup_steps


def test_lr_follows_warmup_then_cosine_linear_constant():
    kw = dict(warmup=10, total=110)
    cosine = [lr_lambda(s, schedule="cosine", **kw) for s in (0, 5, 10, 35, 60, 85, 110)]
    # Warmup 0 -> 1 over 10 steps, then 0.5 * (1 + cos(pi * progress)), progress = (s - 10) / 100.
    assert cosine == pytest.approx([0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                    0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])
    assert [lr_lambda(s, schedule="linear", **kw) for s in (5, 10, 60, 110)] == pytest.approx([0.5, 1, 0.5, 0])
    assert [lr_lambda(s, schedule="constant", **kw) for s in (5, 10, 110)] == pytest.approx([0.5, 1, 1])
    assert warmup_steps(TrainConfig(warmup_ratio=0.03), 1000) == 30
    assert warmup_steps(TrainConfig(warmup_ratio=0.03), 101) == 4  # ceil, as the HF Trainer
    # The same numbers as transformers' schedule (the course trained with the HF Trainer).
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_cosine_schedule_with_warmup(opt, 10, 110)
    ref = []
    for _ in range(110):
        ref.append(hf.get_last_lr()[0])
        opt.step()
        hf.step()
    assert [lr_lambda(s, schedule="cosine", **kw) for s in range(110)] == pytest.approx(ref)


def test_loraplus_gives_b_its_own_learning_rate(tiny_llama):
    from lora import LoRAConfig, inject_lora, lora_layers

    inject_lora(tiny_llama, LoRAConfig(r=4, alpha=8, use_dora=True))
    optimizer = build_optimizer(TrainConfig(lr=1e-3, loraplus_ratio=16), tiny_llama)
    a_group, b_group = optimizer.param_groups
    assert (a_group["lr"], b_group["lr"]) == (1e-3, 1.6e-2)
    layers = list(lora_layers(tiny_llama).values())
    assert {id(p) for p in b_group["params"]} == {id(layer.lora_B.weight) for layer in layers}
    assert {id(p) for p in a_group["params"]} == {id(p) for layer in layers
                                                  for p in (layer.lora_A.weight, layer.lora_magnitude_vector)}
