"""LoRALinear against peft 0.21's lora.Linear / bnb Linear4bit / Linear8bitLt on identical bases and weights
(marked peft_parity), and its own invariants (scaling by hand, fresh layer equals base, init statistics)."""
import inspect
import math

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from lora import LoRAConfig, LoRALinear

IN, OUT, R, ALPHA = 64, 32, 4, 8  # OUT a multiple of 32: bitsandbytes CPU packing needs it


def quantized(linear: nn.Linear, kind: str, double_quant: bool = True,
              compute_dtype: torch.dtype = torch.float32) -> nn.Linear:
    """A bitsandbytes copy of `linear`: kind "nf4" / "fp4" (Linear4bit) or "int8" (Linear8bitLt)."""
    has_bias = linear.bias is not None
    if kind == "int8":
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                has_fp16_weights=False, threshold=0.0)
        q.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute_dtype,
                              compress_statistics=double_quant, quant_type=kind)
        q.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type=kind,
                                     compress_statistics=double_quant, module=q)
    if has_bias:
        q.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return q.to("cpu")


def quantize_model(model: nn.Module, kind: str, **kw) -> nn.Module:
    """Replace every linear layer but lm_head with its bitsandbytes copy (what quant.load_base_model does)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and name != "lm_head":
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, quantized(m, kind, **kw))
    return model.requires_grad_(False)


def ours_with_update(base: nn.Module, *, dropout=0.0, use_rslora=False, use_dora=False, seed=0) -> LoRALinear:
    """A pricer LoRALinear over `base` with seeded A and a nonzero random B, so the update is visible."""
    torch.manual_seed(seed)
    ours = LoRALinear(base, r=R, alpha=ALPHA, dropout=dropout, use_rslora=use_rslora, use_dora=use_dora)
    with torch.no_grad():
        ours.lora_B.weight.normal_(0, 0.1)
    return ours


def peft_layer_class(base: nn.Module) -> type:
    """peft's LoRA layer class for `base` (lora.Linear, bnb Linear4bit or Linear8bitLt); skips without peft."""
    pytest.importorskip("peft")
    from peft.tuners.lora import Linear
    from peft.tuners.lora.bnb import Linear4bit, Linear8bitLt

    return {"Linear4bit": Linear4bit, "Linear8bitLt": Linear8bitLt}.get(type(base).__name__, Linear)


def pair(base: nn.Module, *, dropout=0.0, use_rslora=False, use_dora=False, seed=0):
    """(pricer LoRALinear, peft layer) over the same base object, with the same random A, B (and magnitude)."""
    cls = peft_layer_class(base)
    from peft import LoraConfig

    ours = ours_with_update(base, dropout=dropout, use_rslora=use_rslora, use_dora=use_dora, seed=seed)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=dropout, use_rslora=use_rslora, use_dora=use_dora)
    ref = cls(base, "default", config=cfg, r=R, lora_alpha=ALPHA)
    ref.lora_A.float(), ref.lora_B.float()  # as get_peft_model's default autocast_adapter_dtype=True does
    with torch.no_grad():
        ref.lora_A["default"].weight.copy_(ours.lora_A.weight)
        ref.lora_B["default"].weight.copy_(ours.lora_B.weight)
        if use_dora:
            ref.lora_magnitude_vector["default"].weight.copy_(ours.lora_magnitude_vector)
            ours.lora_magnitude_vector.mul_(1.1)  # move m off ||W|| so the magnitude matters...
            ref.lora_magnitude_vector["default"].weight.mul_(1.1)  # ...identically in both
    return ours, ref


def run(layer, x, g, seed=1):
    """Output and (dA, dB[, dm]) for loss = <layer(x), g>, with a fixed dropout mask."""
    torch.manual_seed(seed)
    y = layer(x)
    (y.float() * g).sum().backward()
    if isinstance(layer, LoRALinear):
        params = [layer.lora_A.weight, layer.lora_B.weight, layer.lora_magnitude_vector]
    else:
        params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight,
                  layer.lora_magnitude_vector["default"].weight if layer.lora_magnitude_vector else None]
    return y.detach(), [p.grad for p in params if p is not None]


VARIANTS = {
    "lora": {}, "rslora": {"use_rslora": True}, "dropout": {"dropout": 0.3},
    "dora": {"use_dora": True}, "dora+dropout": {"use_dora": True, "dropout": 0.3},
}


@pytest.mark.peft_parity
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_and_grads_match_peft_fp32(variant):
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT, bias=True).requires_grad_(False)
    ours, ref = pair(base, **VARIANTS[variant])
    x, g = torch.randn(3, 5, IN), torch.randn(3, 5, OUT)
    for mode in (True, False):  # train (dropout on) and eval
        ours.train(mode), ref.train(mode)
        (y1, g1), (y2, g2) = run(ours, x, g), run(ref, x, g)
        torch.testing.assert_close(y1, y2, atol=1e-6, rtol=0)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        ours.zero_grad(), ref.zero_grad()


@pytest.mark.peft_parity
@pytest.mark.parametrize("kind,double_quant", [("nf4", True), ("nf4", False), ("fp4", True), ("fp4", False),
                                               ("int8", False)])
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_forward_and_grads_match_peft_quantized(kind, double_quant, variant):
    """Same quantized base object under both: fp32 compute agrees to 1e-6 (output) and 1e-5 (grads)."""
    torch.manual_seed(0)
    dense = nn.Linear(IN, OUT, bias=True)
    ours, ref = pair(quantized(dense, kind, double_quant), **VARIANTS[variant])
    x, g = torch.randn(2, 7, IN), torch.randn(2, 7, OUT)
    (y1, g1), (y2, g2) = run(ours, x, g), run(ref, x, g)
    torch.testing.assert_close(y1, y2, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # Inference on a fresh copy of the base, since peft's DoRA rewrites an 8-bit base's weight in place.
    # On AVX512-bf16 CPUs bitsandbytes repacks 4-bit weights here and runs a bf16 kernel (base output
    # moves by ~6e-3); peft 0.21's DoRA then reads the packed bytes as plain 4-bit codes (errors ~1)
    # while pricer unpacks them, so inference is checked against the training-mode output.
    ours.base_layer = quantized(dense, kind, double_quant)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), y2, atol=2e-2, rtol=0)
        if variant == "lora":
            torch.testing.assert_close(ours(x), ref.eval()(x), atol=1e-6, rtol=0)


@pytest.mark.peft_parity
@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_bf16_compute_4bit_matches_peft_within_one_ulp(kind):
    """bf16 activations: peft's bnb layer rounds the update to bf16 before adding, pricer after (as peft's
    nn.Linear path does), so outputs may differ by one bf16 ulp: <= 2^-7 of the output's scale."""
    torch.manual_seed(0)
    base = quantized(nn.Linear(IN, OUT, bias=False), kind, compute_dtype=torch.bfloat16)
    ours, ref = pair(base)
    x = torch.randn(4, IN, dtype=torch.bfloat16)
    y1, y2 = ours(x), ref(x)
    assert y1.dtype == y2.dtype == torch.bfloat16
    torch.testing.assert_close(y1.float(), y2.float(), atol=2 ** -7 * y2.float().abs().max().item(), rtol=0)


@pytest.mark.peft_parity
@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_bf16_autocast_4bit_is_bitwise_peft(kind, variant):
    """Under bf16 autocast (mixed-precision training) both stacks do the same bf16 ops: bitwise equal."""
    torch.manual_seed(0)
    ours, ref = pair(quantized(nn.Linear(IN, OUT), kind, compute_dtype=torch.bfloat16), **VARIANTS[variant])
    x, g = torch.randn(4, IN, dtype=torch.bfloat16), torch.randn(4, OUT)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (y1, g1), (y2, g2) = run(ours, x, g), run(ref, x, g)
    assert torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


@pytest.mark.peft_parity
def test_dtype_rules_match_peft_for_bf16_base():
    """x is cast to A's dtype (float32), the sum back to the base output dtype: bitwise equal to peft."""
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT, dtype=torch.bfloat16).requires_grad_(False)
    ours, ref = pair(base)
    x = torch.randn(3, IN, dtype=torch.bfloat16)
    y = ours(x)
    assert ours.lora_A.weight.dtype == torch.float32 and y.dtype == torch.bfloat16
    assert torch.equal(y, ref(x))


def test_update_is_scaled_b_a_x_by_hand():
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT, bias=False).requires_grad_(False)
    for rs, scale in ((False, ALPHA / R), (True, ALPHA / math.sqrt(R))):
        layer = ours_with_update(base, use_rslora=rs)
        assert layer.scaling == pytest.approx(scale)
        x = torch.randn(5, IN)
        by_hand = x @ base.weight.T + scale * (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
        torch.testing.assert_close(layer(x), by_hand, atol=1e-6, rtol=0)


def test_constructor_defaults_are_lora_configs():
    """LoRALinear(base) with no options is the layer inject_lora builds for LoRAConfig()."""
    defaults = {k: p.default for k, p in inspect.signature(LoRALinear).parameters.items() if k != "base"}
    assert defaults == {k: getattr(LoRAConfig(), k) for k in defaults}


def test_fresh_layer_equals_base_and_only_adapter_trains():
    base = nn.Linear(IN, OUT).requires_grad_(False)
    for use_dora in (False, True):
        layer = LoRALinear(base, r=R, alpha=ALPHA, use_dora=use_dora)
        x = torch.randn(4, IN)
        torch.testing.assert_close(layer(x), base(x), atol=1e-6, rtol=0)
        assert not torch.count_nonzero(layer.lora_B.weight)
        assert layer.weight is base.weight and layer.bias is base.bias


def test_init_statistics():
    torch.manual_seed(0)
    fan_in, r = 4096, 16
    base = nn.Linear(fan_in, 8, bias=False)
    kaiming = LoRALinear(base, r=r).lora_A.weight.float()
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert kaiming.abs().max() <= bound
    assert kaiming.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    gaussian = LoRALinear(base, r=r, init="gaussian").lora_A.weight
    assert gaussian.mean().item() == pytest.approx(0, abs=0.005)
    assert gaussian.std().item() == pytest.approx(1 / r, rel=0.02)
    with pytest.raises(ValueError, match="init"):
        LoRALinear(base, r=r, init="pissa")
