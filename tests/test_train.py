"""train.py on CPU with the tiny random Llama and a slice of the bundled data: whole runs.

Every run uses configs/tiny.yaml (16-bit float32, no mixed precision) so numbers are exact.
Experiments reach into a run through train()'s seams (loss_fn, layer_class), not by patching.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest
import torch

import train
from lora import AdapterError, check_trainable, inject_lora, load_adapter, lora_parameters
from train_runs import GatedLoRALinear, adapter_tensors, metrics, tiny_args, tiny_cfg
from training.loss import completion_loss_sum
from training.parse import load_config
from utils.compat import reset_accelerate


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each train() builds its own Accelerator; accelerate keeps global state between them."""
    yield
    reset_accelerate()


# The first 10 losses of `python train.py --config configs/tiny.yaml` on the tiny Llama (seed 0,
# digit tokenizer), measured on CPU with torch 2.13. An equivalence test (2 processes vs 1, resume
# vs uninterrupted) cannot see a numeric change that moves both of its sides; this can. Tolerance
# 1e-4 relative: float32 CPU runs differ across BLAS builds and thread counts by about 1e-6 per
# step, compounding to ~1e-5 over 10 Adam steps; any change to the loss, its normalisation, the
# LoRA scaling, init, schedule or data order moves these values by 1e-3 or more.
PINNED_TINY_LOSSES = [5.801598, 5.789395, 5.73246, 5.464792, 5.441149, 5.162946, 5.06817, 5.092609, 4.967382, 5.03099]


def test_tiny_config_reproduces_its_pinned_loss_curve(tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    train.train(tiny_cfg(tiny_llama_dir, out))
    losses = [r["loss"] for r in metrics(out)]
    assert losses == pytest.approx(PINNED_TINY_LOSSES, rel=1e-4)


def test_training_lowers_the_loss_and_changes_only_lora(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    captured = {}

    def loss_fn(model, batch):  # the seam: the same loss, and a look at the model it trains
        captured["model"] = model
        return completion_loss_sum(model, batch)

    out = tmp_path / "run"
    adapter = train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "40", "--train.eval_every", "20",
                                   "--train.eval_batches", "2"), loss_fn=loss_fn)
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb", "elapsed"} <= set(rows[0])
    assert "val_loss" in rows[19] and "val_loss" in rows[39] and "val_loss" not in rows[20]
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.8, (first, last)  # the tiny model can still learn the digits of prices
    assert rows[39]["val_loss"] < rows[19]["val_loss"] or rows[39]["val_loss"] < first
    # lr as scheduled: warmup 2 steps then cosine over 40, times train.lr.
    assert [r["lr"] for r in rows[:3]] == pytest.approx([0.0, 2.5e-3, 5e-3])
    assert rows[20]["lr"] == pytest.approx(5e-3 * 0.5 * (1 + math.cos(math.pi * 18 / 38)))
    assert all(r["grad_norm"] > 0 for r in rows)

    trained = captured["model"]
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    fresh_params = dict(fresh.named_parameters())
    changed = []
    for name, p in trained.named_parameters():
        if "lora_" in name:
            changed.append(not torch.equal(p.detach(), torch.zeros_like(p)) if "lora_B" in name else True)
            continue
        assert torch.equal(p.detach(), fresh_params[name.replace(".base_layer", "")].detach()), name
    assert changed and all(changed)
    assert (out / "config.yaml").is_file() and load_config(out / "config.yaml").train.max_steps == 40
    assert adapter == out / "adapter" and (adapter / "adapter_config.json").is_file()


@pytest.mark.peft_parity
def test_adapter_loads_with_lora_and_peft(tiny_llama_dir, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = train.train(tiny_cfg(tiny_llama_dir, tmp_path / "run", "--train.max_steps", "4",
                                   "--lora.use_dora", "true", "--lora.target_modules", "all-linear"))
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    plain = base(ids).logits
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    load_adapter(ours, adapter)
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
                                       adapter).eval()
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-4)  # the adapter does something


def sigterm_at_step(step: int, grad_accum: int = 1):
    """A loss_fn that sends this process SIGTERM during the given optimizer step (as `kill` would)."""
    calls = {"n": 0}

    def loss(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == (step - 1) * grad_accum + 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return completion_loss_sum(model, batch)
    return loss


def test_interrupt_then_resume_matches_an_uninterrupted_run(tiny_llama_dir, tmp_path, capsys):
    # Dropout on, so the restored RNG state matters too; 2 micro-batches per step.
    extra = ("--train.max_steps", "8", "--lora.dropout", "0.1", "--train.grad_accum", "2",
             "--train.batch_size", "2", "--train.save_every", "3", "--train.group_by_length", "true")
    full = train.train(tiny_cfg(tiny_llama_dir, tmp_path / "full", *extra))

    out = tmp_path / "cut"
    assert train.main(tiny_args(tiny_llama_dir, out, *extra), loss_fn=sigterm_at_step(5, grad_accum=2)) == 130
    assert "interrupted at step 5" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-5"]
    assert not (out / "adapter").exists()
    older = shutil.copytree(out / "checkpoints" / "step-3", tmp_path / "step-3")  # keep_last would prune it
    assert train.main(tiny_args(tiny_llama_dir, out, *extra, "--resume", "latest")) == 0

    want, got = adapter_tensors(full), adapter_tensors(out / "adapter")
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert [r["loss"] for r in metrics(out)] == pytest.approx([r["loss"] for r in metrics(tmp_path / "full")],
                                                              rel=1e-5)
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))
    # keep_last 2, the last of them the final step's (checkpointed before the adapter)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6", "step-8"]

    # Resuming from an explicit older checkpoint reaches the same weights as well.
    assert train.main(tiny_args(tiny_llama_dir, out, *extra, "--resume", str(older))) == 0
    for k in want:
        torch.testing.assert_close(adapter_tensors(out / "adapter")[k], want[k], rtol=1e-6, atol=1e-7)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tiny_llama_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    calls = {"n": 0}

    def loss(model, batch):
        part, n = completion_loss_sum(model, batch)
        calls["n"] += 1
        return (part * float("nan") if calls["n"] == 5 else part), n

    out = tmp_path / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, "--train.save_every", "2"), loss_fn=loss) == 1
    err = capsys.readouterr().err
    assert "error: loss nan" in err and "at step 5" in err and str(out / "checkpoints" / "step-4") in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (out / "adapter").exists()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    state = json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["examples_seen"] == 16
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    load_adapter(model, out / "checkpoints" / "step-4" / "adapter")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_four_bit_base_trains_the_same_with_checkpointing_and_with_validation(tiny_llama_dir, tmp_path):
    # Validation runs the 4-bit base in eval mode without grad, which on CPU makes bitsandbytes
    # repack weights for a kernel with no backward; training must not be changed by it.
    runs = {}
    for name, extra in {"plain": (), "checkpointing": ("--train.gradient_checkpointing", "true"),
                        "validating": ("--train.eval_every", "1", "--train.eval_batches", "1")}.items():
        out = tmp_path / name
        train.train(tiny_cfg(tiny_llama_dir, out, "--model.bits", "4", "--train.max_steps", "4",
                             "--train.loraplus_ratio", "16", *extra))
        runs[name] = [r["loss"] for r in metrics(out)]
        reset_accelerate()
    assert len(runs["plain"]) == 4 and all(math.isfinite(x) for x in runs["plain"])
    assert runs["checkpointing"] == pytest.approx(runs["plain"], rel=1e-5)
    assert runs["validating"] == pytest.approx(runs["plain"], rel=1e-5)


def test_a_fresh_run_refuses_a_used_folder_and_overwrite_moves_the_earlier_run_aside(tiny_llama_dir, tmp_path,
                                                                                      capsys):
    out = tmp_path / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, "--train.max_steps", "3", "--train.save_every", "3",
                                "--train.lr", "1e-3")) == 0
    before = {p.name: p.read_bytes() for p in (out / "metrics.jsonl", out / "config.yaml")}
    adapter_before = adapter_tensors(out / "adapter")
    assert train.main(tiny_args(tiny_llama_dir, out, "--train.max_steps", "2")) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run" in err and "--resume latest" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (out / "metrics.jsonl", out / "config.yaml")} == before

    assert train.main(tiny_args(tiny_llama_dir, out, "--train.max_steps", "2", "--overwrite")) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert len(aside) == 1
    assert {p.name: p.read_bytes() for p in (aside[0] / "metrics.jsonl", aside[0] / "config.yaml")} == before
    assert (aside[0] / "checkpoints" / "step-3" / "trainer_state.json").is_file()
    for k, v in adapter_before.items():
        assert torch.equal(adapter_tensors(aside[0] / "adapter")[k], v)
    # the new run's own checkpoints only: the final step's, written before its adapter
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]


def test_a_new_adapter_parameter_is_trained_clipped_and_saved(tiny_llama_dir, tmp_path):
    """GatedLoRALinear adds `lora_gain`, named nowhere else in pricer: it is an adapter parameter,
    trained, inside clipping's norm, saved under peft-style keys and loaded back."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from training.parallel import clip_gradients

    adapter = train.train(tiny_cfg(tiny_llama_dir, tmp_path / "run", "--train.max_steps", "4", "--train.lr", "2e-2"),
                          layer_class=GatedLoRALinear)
    saved = adapter_tensors(adapter)
    gains = {k: v for k, v in saved.items() if k.endswith(".lora_gain")}
    assert sorted(gains) == sorted(k.replace("lora_A.weight", "lora_gain") for k in saved if "lora_A" in k)
    assert all(not torch.equal(v, torch.ones_like(v)) for v in gains.values())  # stepped

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    load_adapter(model, adapter, layer_class=GatedLoRALinear)
    for name, p in model.named_parameters():
        if name.endswith("lora_gain"):
            assert torch.equal(p.detach(), saved[f"base_model.model.{name}"])
    check_trainable(model)
    # Clipping works on lora_parameters, which holds the gain: the clipped norm counts its gradient.
    params = lora_parameters(model)
    assert sum(p.numel() for p in params) == sum(v.numel() for v in saved.values())
    for p in params:
        p.grad = torch.ones_like(p)
    norm = clip_gradients(Accelerator(cpu=True), params, 1.0)
    assert norm == pytest.approx(math.sqrt(sum(p.numel() for p in params)), rel=1e-5)


def test_training_starts_only_when_exactly_the_adapter_trains(tiny_llama):
    from lora import LoRAConfig

    inject_lora(tiny_llama, LoRAConfig(r=2))
    check_trainable(tiny_llama)
    tiny_llama.model.norm.weight.requires_grad_(True)
    with pytest.raises(AdapterError, match="model.norm.weight requires grad but is not an adapter parameter"):
        check_trainable(tiny_llama)
    tiny_llama.model.norm.weight.requires_grad_(False)
    lora_parameters(tiny_llama)[0].requires_grad_(False)
    with pytest.raises(AdapterError, match="is frozen"):
        check_trainable(tiny_llama)


def test_padded_answers_are_trained_on_and_priced_as_such(tiny_llama_dir, tmp_path, monkeypatch):
    """data.answer_width 4: every supervised answer is four digits and ".00", the validation price metric's
    digit search is told the width, and the run's config keeps it for evaluate.py and predict.py."""
    import re

    from transformers import AutoTokenizer

    from predictors import ExpectedPredictor

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    answers, widths = [], []

    def loss_fn(model, batch):
        for labels in batch["labels"]:
            answers.append(tokenizer.decode(labels[labels != -100], skip_special_tokens=True))
        return completion_loss_sum(model, batch)

    predict = ExpectedPredictor.predict

    def seen(self, prompts, **inputs):
        widths.append(inputs.get("answer_width"))
        return predict(self, prompts, **inputs)

    monkeypatch.setattr(ExpectedPredictor, "predict", seen)
    out = tmp_path / "run"
    train.train(tiny_cfg(tiny_llama_dir, out, "--data.answer_width", "4", "--train.max_steps", "2",
                         "--train.eval_every", "2", "--train.eval_batches", "1", "--train.price_eval_items", "2",
                         "--train.price_predictor", "expected"), loss_fn=loss_fn)
    assert len(answers) == 2 * 4 and all(re.fullmatch(r"\d{4}\.00", a) for a in answers), answers
    assert any(a.startswith("0") for a in answers)   # the bundled prices are mostly under $1,000
    assert widths == [4] and "val_rmsle" in metrics(out)[-1]
    assert load_config(out / "config.yaml").data.answer_width == 4
    assert "- answers: the price zero-padded to 4 digits (`Price is $0012.00`" in (out / "adapter" / "README.md").read_text()


def test_a_second_training_into_a_folder_in_use_is_refused_naming_the_holder(tiny_llama_dir, tmp_path, capsys,
                                                                             monkeypatch):
    from test_utils_folder_lock import _start_holder

    out = tmp_path / "run"
    holder = _start_holder(out)
    monkeypatch.setattr(train, "load_base_model", lambda *a, **k: pytest.fail("the model loaded"))
    try:
        assert train.main(tiny_args(tiny_llama_dir, out, "--train.max_steps", "2")) == 2
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {out} is in use by pid {holder.pid} ({errors[0].split('(', 1)[1]}"]
    assert "holder.py run --marker" in errors[0] and not (out / "config.yaml").exists()

