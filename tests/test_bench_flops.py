"""bench.common.flops: the LoRA step's model FLOPs, counted from the config, checked against a built model
and by hand."""
import pytest
import torch

from bench.common.flops import decoder_parameters, lora_parameters_of, lora_step_flops_per_token
from bench.common.llama_shapes import llama_config

QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize("shape, decoder, total", [("8b", 6_979_584_000, 8_030_261_248),
                                                   ("70b", 68_452_352_000, 70_553_706_496)])
def test_decoder_parameters_match_the_model_transformers_builds(shape, decoder, total):
    from transformers import LlamaForCausalLM

    config = llama_config(shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert decoder_parameters(config) == decoder == sum(p.numel() for p in model.model.layers.parameters())
    assert sum(p.numel() for p in model.parameters()) == total  # Llama 3.1's published 8.03B and 70.6B


def test_lora_step_flops_by_hand():
    config = llama_config("8b")
    assert lora_parameters_of(config, 32, QKVO) == 27_262_976  # what peft reports for r 32 on q/k/v/o of 8B
    attention = 12 * 32 * 182 * 4096
    assert lora_step_flops_per_token(config, 182, 32, QKVO) == 4 * 6_979_584_000 + attention + 6 * 27_262_976
