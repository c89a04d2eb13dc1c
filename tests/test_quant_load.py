"""load_base_model: what gets quantized, what stays 16-bit, the tokenizer it returns, and its errors."""
import sys

import pytest
import torch
from torch import nn

from quant import ModelError, load_base_model

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _projections(model):
    return [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in KINDS]


@pytest.fixture(scope="module")
def nf4_model(tiny_llama_dir):
    return load_base_model(str(tiny_llama_dir), bits=4, verbose=False)


def test_4bit_quantizes_projections_and_keeps_embeddings_and_head_16bit(nf4_model):
    import bitsandbytes as bnb

    model, _ = nf4_model
    projections = _projections(model)
    assert len(projections) == 2 * 7
    for layer in projections:
        assert isinstance(layer, bnb.nn.Linear4bit)
        assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
        assert layer.compute_dtype == torch.bfloat16 and layer.weight.dtype == torch.uint8
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert type(model.get_output_embeddings()) is nn.Linear
    assert model.get_input_embeddings().weight.dtype == model.lm_head.weight.dtype == torch.bfloat16


def test_base_is_frozen_in_eval_mode_with_right_padded_tokenizer(nf4_model):
    model, tokenizer = nf4_model
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"  # the fixture tokenizer has no pad token
    assert tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_4bit_model_computes_with_exactly_the_dequantized_weights(tiny_llama_dir, tiny_llama):
    import bitsandbytes.functional as F

    model, _ = load_base_model(str(tiny_llama_dir), bits=4, quant_type="fp4", double_quant=False,
                               compute_dtype=torch.float32, verbose=False)
    for layer in _projections(model):
        assert layer.weight.quant_state.quant_type == "fp4" and not layer.weight.quant_state.nested
    reference = tiny_llama  # fp32 copy of the same checkpoint; give it the de-quantized weights
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in KINDS:
                target = reference.get_submodule(name)
                restored = F.dequantize_4bit(module.weight.data, module.weight.quant_state)
                assert (restored - target.weight).norm() / target.weight.norm() < 0.2  # quantized, not garbage
                target.weight.copy_(restored)
        ids = torch.tensor([[1, 5, 9, 23, 42, 7]])
        expected = reference(ids).logits
        # Training mode is the QLoRA path: de-quantize, then an fp32 matmul.
        torch.testing.assert_close(model.train()(ids).logits, expected, atol=1e-5, rtol=1e-5)
        # In eval mode on an AVX512-BF16 CPU, bitsandbytes repacks the weight for a bf16 kernel.
        torch.testing.assert_close(model.eval()(ids).logits, expected, atol=0.05, rtol=0.05)


def test_quant_storage_for_fsdp(tiny_llama_dir):
    model, _ = load_base_model(str(tiny_llama_dir), bits=4, quant_storage="bfloat16", verbose=False)
    assert {layer.weight.dtype for layer in _projections(model)} == {torch.bfloat16}


def test_8bit_gives_linear8bitlt(tiny_llama_dir):
    import bitsandbytes as bnb

    model, _ = load_base_model(str(tiny_llama_dir), bits=8, verbose=False)
    for layer in _projections(model):
        assert isinstance(layer, bnb.nn.Linear8bitLt) and layer.weight.dtype == torch.int8
    assert type(model.lm_head) is nn.Linear
    assert model(torch.tensor([[1, 2, 3]])).logits.isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_16bit_is_plain_in_compute_dtype(tiny_llama_dir, dtype, capsys):
    model, _ = load_base_model(str(tiny_llama_dir), bits=16, compute_dtype=dtype)
    assert {type(layer) for layer in _projections(model)} == {nn.Linear}
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert "memory: 0 quantized linears" in capsys.readouterr().err  # the report printed at load (stderr)


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 3}, "bits must be 4, 8 or 16"),
    ({"quant_type": "int4"}, "quant_type must be 'nf4' or 'fp4'"),
    ({"compute_dtype": "float64"}, "unknown dtype"),
])
def test_bad_arguments(tiny_llama_dir, kwargs, message):
    with pytest.raises(ModelError, match=message):
        load_base_model(str(tiny_llama_dir), verbose=False, **kwargs)


def test_4bit_without_bitsandbytes_says_how_to_fix(tiny_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(ModelError, match=r"4-bit loading needs bitsandbytes.*pip install.*bits=16"):
        load_base_model(str(tiny_llama_dir), bits=4, verbose=False)


def test_4bit_where_bitsandbytes_has_no_backend(tiny_llama_dir, monkeypatch):
    import bitsandbytes.functional as F

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("No kernel for quantize_4bit on device xpu\n(details)")
    monkeypatch.setattr(F, "quantize_4bit", no_kernel)
    with pytest.raises(ModelError, match=r"^bitsandbytes \S+ cannot run 4-bit on cpu \(No kernel .*xpu\);.*bits=16$"):
        load_base_model(str(tiny_llama_dir), bits=4, verbose=False)


def test_unreachable_hub_id_suggests_embedded_model(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network in tests; fail at once
    with pytest.raises(ModelError, match=r"cannot fetch 'no-such-org/no-such-model'.*hub unreachable.*smollm2-135m"):
        load_base_model("no-such-org/no-such-model", bits=16, verbose=False)


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelError, match="no model folder at"):
        load_base_model(str(tmp_path / "nope" / "model"), verbose=False)


@pytest.mark.slow
@pytest.mark.gemma3
def test_gemma3_loads_in_4bit_and_prices(gemma3_dir):
    import bitsandbytes as bnb

    model, tokenizer = load_base_model("gemma3-270m", bits=4, compute_dtype=torch.float32, verbose=False)
    projections = _projections(model)
    assert len(projections) == 18 * 7 and all(isinstance(m, bnb.nn.Linear4bit) for m in projections)
    # Gemma ties its head to the 262k-token embedding: one 16-bit matrix, never quantized.
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.padding_side) == ("<pad>", "<eos>", "right")
    prompt = "How much does this cost to the nearest dollar?\n\nAcoustic guitar strings, light gauge.\n\nPrice is $"
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
    assert tokenizer.decode(logits.argmax()).isdigit()
