"""prepare_for_kbit_training: dtypes against peft's version, and training through a 4/8-bit base on CPU."""
import math

import pytest
import torch
from torch import nn

from quant import load_base_model, prepare_for_kbit_training


class TinyAdapter(nn.Module):
    """A minimal LoRA-style wrapper (independent of lora/): base(x) + B(A(x)) * scale, A and B trainable fp32."""

    def __init__(self, base: nn.Module, r: int = 4):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.randn(base.out_features, r) * 0.01)  # nonzero so A gets gradient too

    def forward(self, x):
        out = self.base(x)
        return out + ((x.to(self.A.dtype) @ self.A.T) @ self.B.T).to(out.dtype)


def _add_adapters(model):
    adapters = []
    for layer in model.model.layers:
        for name in ("q_proj", "v_proj"):
            adapter = TinyAdapter(getattr(layer.self_attn, name))
            setattr(layer.self_attn, name, adapter)
            adapters.append(adapter)
    return adapters


def _dtypes(model):
    return {name: p.dtype for name, p in model.named_parameters()}


@pytest.mark.peft_parity
def test_matches_peft_with_upcast_embeddings_and_differs_only_on_them_by_default(tiny_llama_dir):
    pytest.importorskip("peft")
    from peft import prepare_model_for_kbit_training

    reference, _ = load_base_model(str(tiny_llama_dir), bits=4, verbose=False)
    prepare_model_for_kbit_training(reference, use_gradient_checkpointing=False)
    peft_like, _ = load_base_model(str(tiny_llama_dir), bits=4, verbose=False)
    prepare_for_kbit_training(peft_like, upcast_embeddings=True)
    assert _dtypes(peft_like) == _dtypes(reference)
    ours, _ = load_base_model(str(tiny_llama_dir), bits=4, verbose=False)
    prepare_for_kbit_training(ours)
    differ = {n for n, d in _dtypes(ours).items() if d != _dtypes(reference)[n]}
    assert differ == {"model.embed_tokens.weight", "lm_head.weight"}
    assert ours.lm_head.weight.dtype == torch.bfloat16
    assert {d for n, d in _dtypes(ours).items() if "norm" in n} == {torch.float32}
    assert not any(p.requires_grad for p in ours.parameters()) and ours.config.use_cache is False


def test_16bit_model_is_only_frozen_not_upcast(tiny_llama_dir):
    model, _ = load_base_model(str(tiny_llama_dir), bits=16, verbose=False)
    model.lm_head.weight.requires_grad_(True)
    prepare_for_kbit_training(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bits", [4, 8])
def test_forward_backward_through_quantized_base_with_adapter(tiny_llama_dir, bits):
    model, _ = load_base_model(str(tiny_llama_dir), bits=bits, verbose=False)
    prepare_for_kbit_training(model, gradient_checkpointing=True)
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    adapters = _add_adapters(model)
    model.train()
    ids = torch.tensor([[1, 5, 9, 23, 42, 7, 11, 3], [1, 8, 8, 30, 2, 19, 4, 6]])

    def adapter_grads():
        for p in model.parameters():
            p.grad = None
        loss = model(input_ids=ids, labels=ids).loss  # no autocast: the dtype hooks must suffice
        loss.backward()
        assert torch.isfinite(loss)
        return [p.grad.clone() for a in adapters for p in (a.A, a.B)]

    checkpointed = adapter_grads()
    assert all(g is not None and g.isfinite().all() and g.abs().sum() > 0 for g in checkpointed)
    assert all(p.grad is None for n, p in model.named_parameters() if ".A" not in n and ".B" not in n)
    model.gradient_checkpointing_disable()
    plain = adapter_grads()
    for a, b in zip(checkpointed, plain):  # checkpointing recomputes; it must not change the gradient
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
