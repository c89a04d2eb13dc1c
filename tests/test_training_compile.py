"""training.speed.compile_decoder_layers (train.compile): compiled decoder layers give eager's numbers.

The cheap checks trace with backend="aot_eager" (dynamo + autograd tracing, eager kernels), so
results must equal eager exactly; one end-to-end run uses the real backend (inductor, which
generates C++ on CPU and Triton on GPU) and must match an eager run to rounding.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from data import CompletionCollator
from lora import LoRAConfig, inject_lora, lora_layers
from quant import load_base_model, prepare_for_kbit_training
from training.loss import completion_loss_sum
from training.speed import compile_decoder_layers
from utils.compat import reset_accelerate

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = [{"prompt": "How much does this cost?\n\nA cordless drill\n\nPrice is $", "completion": "129.00"},
            {"prompt": "How much does this cost?\n\nGuitar strings\n\nPrice is $", "completion": "7.00"}]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code is cached per code object across tests; start and leave each test clean."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    reset_accelerate()


@pytest.fixture(scope="module")
def four_layer_dir(tmp_path_factory) -> Path:
    """The tiny Llama with 4 layers, so that sharing one compiled graph across layers shows."""
    from quant.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-4"), layers=4)


def _four_bit_lora(path, dropout=0.0, compute_dtype="bfloat16"):
    model, tokenizer = load_base_model(str(path), bits=4, compute_dtype=compute_dtype, device="cpu", verbose=False)
    prepare_for_kbit_training(model)
    torch.manual_seed(0)
    inject_lora(model, LoRAConfig(r=4, alpha=8, dropout=dropout))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model.train(), tokenizer


def _loss_and_grads(model, batch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, n = completion_loss_sum(model, batch)
    (loss / n).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_layers_trace_the_4bit_lora_model_without_breaks_and_keep_its_numbers(four_layer_dir, checkpointing):
    from torch._dynamo.utils import counters

    model, tokenizer = _four_bit_lora(four_layer_dir)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = CompletionCollator(tokenizer, max_length=64)(EXAMPLES)
    eager_loss, eager_grads = _loss_and_grads(model, batch)
    names, layers = list(model.state_dict()), list(lora_layers(model))

    counters.clear()
    assert compile_decoder_layers(model, backend="aot_eager") == model.config.num_hidden_layers
    for _ in range(2):
        loss, grads = _loss_and_grads(model, batch)
        assert loss == eager_loss
        for name, g in grads.items():
            torch.testing.assert_close(g, eager_grads[name], rtol=0, atol=0)
    # bitsandbytes' 4-bit matmul and the LoRA path trace whole: no graph breaks, and the 4
    # layers share two graphs, not one each (a compile per layer would hit dynamo's recompile
    # limit on a 32-layer model and fall back to eager): layer 0 takes the bf16 embeddings, the
    # others the float32 residual stream that prepare_for_kbit_training's norms make.
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 2
    # Module.compile keeps names: saving and lora_layers see the plain model.
    assert list(model.state_dict()) == names and list(lora_layers(model)) == layers


def test_compiled_dropout_draws_fresh_masks_and_is_off_in_eval(tiny_llama_dir):
    # float32 compute, so that inductor's fused kernels round like eager ones (to ~1e-6).
    model, tokenizer = _four_bit_lora(tiny_llama_dir, dropout=0.5, compute_dtype="float32")
    ids = CompletionCollator(tokenizer, max_length=64)(EXAMPLES)["input_ids"]
    with torch.no_grad():
        reference = model.eval()(ids).logits
        compile_decoder_layers(model)  # inductor: its own random-number kernels
        torch.testing.assert_close(model(ids).logits, reference, rtol=1e-4, atol=1e-5)
        model.train()
        first, second = model(ids).logits, model(ids).logits
    assert (first - second).abs().max() > 1e-2  # a fresh mask per call
    assert (first - reference).abs().max() > 1e-2


@pytest.mark.slow
def test_train_compile_matches_an_eager_run(tiny_llama_dir, tmp_path):
    """Inductor-compiled layers through train.py: the same losses, validation and adapter as eager."""
    from safetensors.torch import load_file

    runs = {}
    for name, compile_ in (("eager", "false"), ("compiled", "true")):
        out = tmp_path / name
        cfg, _ = train.parse_args(["--config", str(REPO / "configs" / "tiny.yaml"), "--model.name", str(tiny_llama_dir),
                                   "--output_dir", str(out), "--train.max_steps", "4", "--train.eval_every", "2",
                                   "--train.eval_batches", "1", "--train.price_eval_items", "2",
                                   "--train.compile", compile_])
        adapter = train.train(cfg)
        reset_accelerate()
        runs[name] = ([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()],
                      load_file(adapter / "adapter_model.safetensors"))
    (eager, eager_adapter), (compiled, compiled_adapter) = runs["eager"], runs["compiled"]
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-4)
    assert [r["val_loss"] for r in compiled if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in eager if "val_loss" in r], rel=1e-4)
    assert "val_rmsle" in compiled[1]  # the price metric ran (eagerly, under the compiled layers)
    assert compiled_adapter.keys() == eager_adapter.keys()
    for key, value in eager_adapter.items():
        torch.testing.assert_close(compiled_adapter[key], value, rtol=1e-3, atol=1e-5)


def test_compile_with_fsdp_is_refused_in_one_line(tiny_llama_dir, tmp_path):
    with pytest.raises(train.ConfigError, match="train.compile is not supported with fsdp"):
        train.parse_args(["--config", str(REPO / "configs" / "tiny.yaml"), "--train.compile", "true",
                          "--train.distributed", "fsdp", "--output_dir", str(tmp_path)])
