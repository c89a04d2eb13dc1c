"""check_projections: finds LoRA targets, and names the Linear layers a model has when none match."""
import pytest
import torch

from quant import ModelError, check_projections


def test_finds_attention_projections_in_every_layer(tiny_llama):
    found = check_projections(tiny_llama)
    assert len(found) == 2 * 4 and "model.layers.1.self_attn.o_proj" in found


def test_list_regex_and_all_linear_targets(tiny_llama):
    assert check_projections(tiny_llama, ["down_proj"]) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    # Dotted suffixes, as lora.inject_lora reads a list.
    assert check_projections(tiny_llama, ["mlp.down_proj"]) == check_projections(tiny_llama, ["down_proj"])
    assert check_projections(tiny_llama, ["layers.1.mlp.down_proj"]) == ["model.layers.1.mlp.down_proj"]
    assert check_projections(tiny_llama, r".*\.1\.self_attn\.[qv]_proj") == [
        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    everything = check_projections(tiny_llama, "all-linear")
    assert len(everything) == 2 * 7 and "lm_head" not in everything


def test_model_without_projections_names_what_it_has():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(ModelError) as info:
        check_projections(gpt2)
    message = str(info.value)
    assert "GPT2LMHeadModel has no Linear layers matching ('q_proj', 'k_proj', 'v_proj', 'o_proj')" in message
    assert "['c_attn', 'c_fc', 'c_proj', 'lm_head']" in message and "\n" not in message
