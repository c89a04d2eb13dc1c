"""merge_lora and export_merged: merged forward equals unmerged (exactly for float bases, measured for 4/8-bit)."""
import json

import pytest
import torch
from test_lora_inject import load, randomize
from test_lora_layer import quantize_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lora import LoRAConfig, LoRALinear, export_merged, inject_lora, merge_lora
from lora.inject import lora_layers
from lora.layer import dequantized_weight

IDS = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))


def with_adapter(model, **config):
    inject_lora(model, LoRAConfig(r=8, alpha=16, **config))
    return randomize(model)


def logits(model):
    # Train mode (dropout is 0) keeps bitsandbytes off its bf16 CPU inference kernel, so 4-bit runs in fp32.
    with torch.no_grad():
        return model.train()(input_ids=IDS).logits


@pytest.mark.parametrize("config", [{}, {"use_dora": True}, {"use_rslora": True, "target_modules": "all-linear"}])
def test_merge_fp32_equals_unmerged(tiny_llama, config):
    with_adapter(tiny_llama, **config)
    before = logits(tiny_llama)
    merge_lora(tiny_llama)
    assert not lora_layers(tiny_llama) and not hasattr(tiny_llama, "lora_config")
    assert type(tiny_llama.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    torch.testing.assert_close(logits(tiny_llama), before, atol=1e-5, rtol=0)


@pytest.mark.peft_parity
def test_merged_weights_equal_peft_merge_and_unload(tiny_llama_dir):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    ours = with_adapter(load(tiny_llama_dir), use_dora=True)
    pm = get_peft_model(load(tiny_llama_dir), LoraConfig(r=8, lora_alpha=16, use_dora=True,
                                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            theirs = pm.base_model.model.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A.weight)
            theirs.lora_B["default"].weight.copy_(layer.lora_B.weight)
            theirs.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude_vector)
    merged, reference = merge_lora(ours), pm.merge_and_unload()
    for name, p in merged.named_parameters():
        torch.testing.assert_close(p, reference.get_parameter(name), atol=1e-6, rtol=0)


def test_merge_bf16_rounds_once(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    with_adapter(model)
    layer = model.model.layers[1].self_attn.v_proj
    expected = (layer.base_layer.weight.float() + layer.delta_weight().float()).to(torch.bfloat16)
    merge_lora(model)
    assert torch.equal(model.model.layers[1].self_attn.v_proj.weight, expected)


# Worst |merged - (W + dW)| / block absmax over the test model (measured: NF4 0.152-0.155, FP4 0.167-0.170,
# int8 0.0043). Theory: half the widest gap between codes (NF4 0.139, FP4 0.167, int8 0.5/127 = 0.0039),
# plus the double-quantized absmax and fp16 rounding for int8.
QUANT = [("nf4", True, 0.16), ("nf4", False, 0.16), ("fp4", True, 0.175), ("fp4", False, 0.175), ("int8", None, 0.005)]


@pytest.mark.parametrize("kind,double_quant,bound", QUANT)
def test_merge_quantized_base_measured_bound(tiny_llama_dir, kind, double_quant, bound):
    kw = {} if kind == "int8" else {"double_quant": double_quant}
    model = with_adapter(quantize_model(load(tiny_llama_dir), kind, **kw), target_modules="all-linear")
    dense = load(tiny_llama_dir)
    inject_lora(dense, LoRAConfig(r=8, alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for (_, d), (_, q) in zip(lora_layers(dense).items(), lora_layers(model).items(), strict=True):
            d.lora_A.weight.copy_(q.lora_A.weight), d.lora_B.weight.copy_(q.lora_B.weight)
    targets = {name: layer.merged_weight() for name, layer in lora_layers(model).items()}
    old = {name: layer.base_layer.weight for name, layer in lora_layers(model).items()}
    unmerged, full_precision = logits(model), logits(dense)
    merge_lora(model)
    for name, target in targets.items():
        module = model.get_submodule(name)
        new = module.weight
        assert type(new) is type(old[name]) and not isinstance(module, LoRALinear)
        if kind != "int8":
            assert (new.quant_type, new.blocksize, new.compress_statistics, new.quant_storage) == \
                   (old[name].quant_type, old[name].blocksize, old[name].compress_statistics, old[name].quant_storage)
            absmax = target.reshape(-1, new.blocksize).abs().amax(1, keepdim=True)
        else:
            absmax = target.abs().amax(1, keepdim=True)
        err = (dequantized_weight(module).float() - target).reshape(absmax.shape[0], -1).abs() / absmax
        assert err.max() <= bound, name
    # Requantizing costs about one more quantization: the merged logits move from the unmerged ones by
    # about as much as quantizing the base moved them from full precision (measured ratio 0.6-1.1).
    merge_err = (logits(model) - unmerged).abs().max()
    quant_err = (unmerged - full_precision).abs().max()
    assert 0 < merge_err <= 1.5 * quant_err


def test_export_merged_loads_in_plain_transformers(tiny_llama, tiny_tokenizer, tmp_path):
    with_adapter(tiny_llama, use_dora=True)
    before = logits(tiny_llama)
    out = export_merged(tiny_llama, tiny_tokenizer, tmp_path / "merged", dtype=torch.float32)
    assert lora_layers(tiny_llama)  # the model itself is left as it was
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert plain.dtype == torch.float32 and not any("lora" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(logits(plain), before, atol=1e-5, rtol=0)
    assert (out / "tokenizer.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    with pytest.raises(FileExistsError, match="not empty"):
        export_merged(tiny_llama, tiny_tokenizer, out)


def test_export_4bit_base_as_16bit(tiny_llama_dir, tiny_tokenizer, tmp_path):
    model = with_adapter(quantize_model(load(tiny_llama_dir), "nf4"))  # MLP layers stay 4-bit without LoRA
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    before = logits(model)
    exact = export_merged(model, tiny_tokenizer, tmp_path / "fp32", dtype=torch.float32)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(exact)), before, atol=1e-5, rtol=0)
    half = export_merged(model, None, tmp_path / "bf16")
    config = json.loads((half / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    plain = AutoModelForCausalLM.from_pretrained(half, dtype="auto")
    assert plain.dtype == torch.bfloat16
    torch.testing.assert_close(logits(plain).float(), before, atol=0.1, rtol=0)


def test_export_tied_embeddings(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    with_adapter(model.eval())
    before = logits(model)
    out = export_merged(model, None, tmp_path / "tied", dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(logits(plain), before, atol=1e-5, rtol=0)
