"""train.py on CPU with the tiny random Llama and a slice of the bundled data.

Every run uses configs/tiny.yaml (16-bit float32, no mixed precision) so numbers are exact.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from utils.compat import reset_accelerate
from data import CompletionCollator

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each train() builds its own Accelerator; accelerate keeps global state between them."""
    yield
    reset_accelerate()


def tiny_args(tiny_llama_dir, out: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY), "--model.name", str(tiny_llama_dir), "--output_dir", str(out), *extra]


def tiny_cfg(tiny_llama_dir, out: Path, *extra: str) -> train.Config:
    cfg, _ = train.parse_args(tiny_args(tiny_llama_dir, out, *extra))
    return cfg


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter_model.safetensors")


# ----------------------------------------------------------------------------- config

def test_config_yaml_and_cli_overrides_are_typed(tmp_path):
    cfg, resume = train.parse_args(["--config", str(TINY), "--train.lr", "2e-4", "--train.max_steps=null",
                                    "--lora.target_modules", "q_proj,v_proj", "--train.group_by_length", "yes",
                                    "--data.limit", "50", "--output_dir", str(tmp_path), "--resume", "latest"])
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps is None and cfg.train.group_by_length is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.data.limit == 50
    assert cfg.lora.alpha == 8.0 and cfg.model.bits == 16  # from the YAML
    assert resume == "latest"
    assert train.parse_args(["--lora.target_modules", "all-linear"])[0].lora.target_modules == "all-linear"
    # The saved resolved config loads back to the same config.
    path = tmp_path / "c.yaml"
    path.write_text(train.config_yaml(cfg))
    assert train.load_config(path) == cfg


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")
                                           if not p.name.startswith("accelerate")))
def test_presets_load(preset):
    cfg = train.load_config(REPO / "configs" / preset)
    if preset == "llama31-8b.yaml":  # the course recipe, exactly
        assert (cfg.model.name, cfg.model.bits, cfg.model.quant_type, cfg.model.double_quant,
                cfg.model.compute_dtype) == ("meta-llama/Llama-3.1-8B", 4, "nf4", True, "bfloat16")
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (32, 64.0, 0.1)
        assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        t = cfg.train
        assert (t.epochs, t.batch_size, t.lr, t.schedule, t.warmup_ratio, t.optimizer, t.max_grad_norm,
                t.weight_decay, t.save_every) == (1, 4, 1e-4, "cosine", 0.03, "paged_adamw_32bit", 0.3, 0.001, 2000)
        assert cfg.data.max_length == 182


@pytest.mark.parametrize("argv, message", [
    (["--train.lrr", "1"], "unknown key 'train.lrr'; valid keys in train: epochs, max_steps, batch_size"),
    (["--trian.lr", "1"], "unknown section 'trian'; valid sections: model, lora, data, train, log"),
    (["--train.batch_size", "four"], "train.batch_size must be an integer, got 'four'"),
    (["--train.schedule", "step"], "train.schedule must be one of cosine, linear, constant, got 'step'"),
    (["--lora.r", "0"], "lora: LoRA rank r must be a positive integer, got 0"),
    (["--lora.dropout", "1"], "lora: "),
])
def test_bad_config_fails_with_one_line_listing_valid_keys(argv, message, capsys):
    assert train.main(["--config", str(TINY), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_unknown_key_in_yaml_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-3\n  warmpu_ratio: 0.1\n")
    assert train.main(["--config", str(bad)]) == 2
    assert "valid keys in train:" in capsys.readouterr().err
    with pytest.raises(train.ConfigError, match="warmpu_ratio"):
        train.load_config(bad)


def test_yaml_no_and_a_bare_target_name_mean_what_they_say(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  mixed_precision: no\nlora:\n  target_modules: v_proj\n")
    cfg = train.load_config(cfg_file)
    assert cfg.train.mixed_precision == "no"
    assert list(train.lora_config_of(cfg).target_modules) == ["v_proj"]


def test_a_fresh_run_moves_an_earlier_runs_checkpoints_aside(tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "6", "--train.save_every", "6"))
    train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "4", "--train.save_every", "2",
                         "--train.keep_last", "1"))
    # The new run's own checkpoint survives pruning, and the old one is kept aside, not resumed from.
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-4"]
    assert (out / "checkpoints.previous" / "step-6").is_dir()
    assert train.find_checkpoint("latest", out).name == "step-4"


# ----------------------------------------------------------------------------- loss

def _examples():
    # Prices of very different token counts: the naive mean of per-batch means would weigh them unevenly.
    texts = ["Cordless drill with two batteries.", "Guitar strings, light gauge.", "Office desk organizer.",
             "Kids toy building blocks set, 500 pieces.", "Water filter replacement.", "Photo editing license."]
    prices = ["5.00", "1234.00", "12.00", "999.00", "7.00", "45.00"]
    return [{"prompt": f"How much does this cost?\n\n{t}\n\nPrice is $", "completion": p} for t, p in zip(texts, prices)]


def test_completion_loss_matches_hf_full_logits_loss(tiny_llama, tiny_tokenizer):
    tiny_tokenizer.pad_token = tiny_tokenizer.eos_token
    batch = CompletionCollator(tiny_tokenizer, max_length=64)(_examples())
    loss_sum, n = train.completion_loss_sum(tiny_llama, batch)
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
    wrapped = train.CompletionLossModel(model)
    params = lora_parameters(model)
    accelerator = Accelerator(cpu=True)

    def grads(micro):
        for p in params:
            p.grad = None
        loss_sum, n_tok = train.accumulate_gradients(accelerator, wrapped, [collate(m) for m in micro])
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
        part, n = train.completion_loss_sum(model, collate(m))
        (part / n / 2).backward()
    assert max(float((p.grad - g).abs().max()) for p, g in zip(params, g_one)) > 1e-4


def test_clip_gradients_caps_the_norm_and_returns_the_norm_before():
    from accelerate import Accelerator

    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    accelerator = Accelerator(cpu=True)
    assert train.clip_gradients(accelerator, params, 0.0) == pytest.approx(5.0)  # off: reported, not changed
    assert float(params[0].grad[0]) == 3.0
    assert train.clip_gradients(accelerator, params, 0.5) == pytest.approx(5.0)
    after = torch.cat([p.grad.flatten() for p in params]).norm()
    assert float(after) == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.3, 0.0, 0.0]), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- schedule and data order

def test_lr_follows_warmup_then_cosine_linear_constant():
    kw = dict(warmup=10, total=110)
    cosine = [train.lr_lambda(s, schedule="cosine", **kw) for s in (0, 5, 10, 35, 60, 85, 110)]
    # Warmup 0 -> 1 over 10 steps, then 0.5 * (1 + cos(pi * progress)), progress = (s - 10) / 100.
    assert cosine == pytest.approx([0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                    0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])
    assert [train.lr_lambda(s, schedule="linear", **kw) for s in (5, 10, 60, 110)] == pytest.approx([0.5, 1, 0.5, 0])
    assert [train.lr_lambda(s, schedule="constant", **kw) for s in (5, 10, 110)] == pytest.approx([0.5, 1, 1])
    assert train.warmup_steps(train.TrainConfig(warmup_ratio=0.03), 1000) == 30
    assert train.warmup_steps(train.TrainConfig(warmup_ratio=0.03), 101) == 4  # ceil, as the HF Trainer
    # The same numbers as transformers' schedule (the course trained with the HF Trainer).
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_cosine_schedule_with_warmup(opt, 10, 110)
    ref = []
    for _ in range(110):
        ref.append(hf.get_last_lr()[0])
        opt.step()
        hf.step()
    assert [train.lr_lambda(s, schedule="cosine", **kw) for s in range(110)] == pytest.approx(ref)


def test_epoch_order_is_seeded_whole_batches_and_groups_lengths():
    lengths = [(i * 37) % 101 for i in range(1000)]
    order = train.epoch_order(lengths, seed=1, epoch=0, global_batch=16)
    assert len(order) == 992 and len(set(order)) == 992
    assert order == train.epoch_order(lengths, seed=1, epoch=0, global_batch=16)
    assert order != train.epoch_order(lengths, seed=1, epoch=1, global_batch=16)
    grouped = train.epoch_order(lengths, seed=1, epoch=0, global_batch=16, group_by_length=True)
    assert sorted(grouped) == sorted(order)
    spread = lambda o: sum(max(lengths[i] for i in o[k:k + 16]) - min(lengths[i] for i in o[k:k + 16])
                           for k in range(0, len(o), 16))
    assert spread(grouped) < spread(order) / 5
    batch_maxima = [max(lengths[i] for i in grouped[k:k + 16]) for k in range(0, 992, 16)]
    assert batch_maxima != sorted(batch_maxima, reverse=True)  # the batches themselves are shuffled


def test_two_processes_see_the_examples_of_one_with_double_accumulation():
    step = list(range(100, 116))  # a global batch of 16
    one = train.micro_batch_indices(step, batch_size=2, grad_accum=8, rank=0, world_size=1)
    two = [train.micro_batch_indices(step, batch_size=2, grad_accum=4, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(i for m in one for i in m) == step
    assert sorted(i for r in two for m in r for i in m) == step
    assert all(len(m) == 2 for r in two for m in r)


# ----------------------------------------------------------------------------- whole runs

def test_training_lowers_the_loss_and_changes_only_lora(tiny_llama_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    captured = {}
    real_inject = train.inject_lora

    def spy(model, config):
        captured["model"] = model
        return real_inject(model, config)

    monkeypatch.setattr(train, "inject_lora", spy)
    out = tmp_path / "run"
    adapter = train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "40", "--train.eval_every", "20",
                                   "--train.eval_batches", "2"))
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
    assert (out / "config.yaml").is_file() and train.load_config(out / "config.yaml").train.max_steps == 40
    assert adapter == out / "adapter" and (adapter / "adapter_config.json").is_file()


def test_adapter_loads_with_lora_and_peft(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora import load_adapter

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


def _sigterm_at_step(monkeypatch, step: int, grad_accum: int = 1):
    """Send this process SIGTERM during the given optimizer step (as `kill` would)."""
    real = train.completion_loss_sum
    calls = {"n": 0}

    def loss(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == (step - 1) * grad_accum + 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batch)

    monkeypatch.setattr(train, "completion_loss_sum", loss)


def test_interrupt_then_resume_matches_an_uninterrupted_run(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    # Dropout on, so the restored RNG state matters too; 2 micro-batches per step.
    extra = ("--train.max_steps", "8", "--lora.dropout", "0.1", "--train.grad_accum", "2",
             "--train.batch_size", "2", "--train.save_every", "3", "--train.group_by_length", "true")
    full = train.train(tiny_cfg(tiny_llama_dir, tmp_path / "full", *extra))

    out = tmp_path / "cut"
    _sigterm_at_step(monkeypatch, 5, grad_accum=2)
    assert train.main(tiny_args(tiny_llama_dir, out, *extra)) == 130
    assert "interrupted at step 5" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-5"]
    assert not (out / "adapter").exists()
    older = shutil.copytree(out / "checkpoints" / "step-3", tmp_path / "step-3")  # keep_last would prune it
    monkeypatch.undo()
    assert train.main(tiny_args(tiny_llama_dir, out, *extra, "--resume", "latest")) == 0

    want, got = adapter_tensors(full), adapter_tensors(out / "adapter")
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert [r["loss"] for r in metrics(out)] == pytest.approx([r["loss"] for r in metrics(tmp_path / "full")],
                                                              rel=1e-5)
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-5", "step-6"]  # keep_last 2

    # Resuming from an explicit older checkpoint reaches the same weights as well.
    assert train.main(tiny_args(tiny_llama_dir, out, *extra, "--resume", str(older))) == 0
    for k in want:
        torch.testing.assert_close(adapter_tensors(out / "adapter")[k], want[k], rtol=1e-6, atol=1e-7)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    from lora import load_adapter

    real = train.completion_loss_sum
    calls = {"n": 0}

    def loss(model, batch):
        part, n = real(model, batch)
        calls["n"] += 1
        return (part * float("nan") if calls["n"] == 5 else part), n

    monkeypatch.setattr(train, "completion_loss_sum", loss)
    out = tmp_path / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, "--train.save_every", "2")) == 1
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


# gloo's teardown at process exit now and then aborts a process whose work is done (a C++
# thread still joinable when the interpreter finalises; pytorch/pytorch#179291): seen once in
# ~20 launches here, after all steps and the adapter were written.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def launch_two(tiny_llama_dir, out: Path, *extra: str):
    """train.py in 2 CPU processes over gloo, as `accelerate launch --multi_gpu` starts them.

    A run that aborts in gloo's teardown is run once more (from scratch, same output folder):
    any other failure, or the same abort twice, is returned as it is.
    """
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train.py")]
    for attempt in range(2):
        done = subprocess.run([*launch, *tiny_args(tiny_llama_dir, out, *extra)],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or GLOO_TEARDOWN_ABORT not in done.stderr:
            return done
    return done


def two_and_one(tiny_llama_dir, tmp_path, common, two_extra=(), one_extra=()):
    """`common` steps in 2 gloo processes x accumulation 1 and in 1 process x accumulation 2.

    Returns (two's folder, one's folder, the 2-process run); the 2-process run must succeed.
    """
    two = tmp_path / "two"
    done = launch_two(tiny_llama_dir, two, *common, "--train.grad_accum", "1", *two_extra)
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    train.train(tiny_cfg(tiny_llama_dir, one, *common, "--train.grad_accum", "2", *one_extra))
    return two, one, done


@pytest.mark.slow
@pytest.mark.parametrize("distributed, bits", [("allreduce", 16), ("fsdp", 16), ("fsdp", 4)])
def test_allreduce_and_fsdp_match_one_process_with_double_accumulation(tiny_llama_dir, tmp_path, distributed, bits):
    """The other two ways of sharing the work give the 1-process run's losses, norms and adapter.

    allreduce: no DDP wrapper, one all-reduce of the LoRA gradients after backward (what CUDA
    graphs use on several GPUs). fsdp: every decoder layer and every LoRA A/B sharded over the
    two processes; the adapter is gathered for saving, the optimizer state saved per process.
    A checkpoint of the fsdp run resumes with fsdp and the same processes, and refuses otherwise.
    With a 4-bit base the run is the same too: one process with fsdp keeps the dtypes FSDP needs.
    """
    common = ("--train.max_steps", "6", "--train.batch_size", "2", "--train.group_by_length", "true",
              "--train.distributed", distributed)
    if bits == 4:  # NF4 weights stored as bf16 (set by train.py for fsdp), bf16 norms and compute
        common += ("--model.bits", "4", "--model.compute_dtype", "bfloat16", "--train.mixed_precision", "bf16")
    evals = ("--train.eval_every", "3", "--train.eval_batches", "5")
    two, one, _ = two_and_one(tiny_llama_dir, tmp_path, common, ("--train.save_every", "3", *evals), evals)
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=1e-5)
    assert [r["grad_norm"] for r in metrics(two)] == pytest.approx([r["grad_norm"] for r in metrics(one)], rel=1e-4)
    assert [r["val_loss"] for r in metrics(two) if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in metrics(one) if "val_loss" in r], rel=1e-5)
    for k, v in adapter_tensors(one / "adapter").items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-5, atol=1e-6)
    step3 = two / "checkpoints" / "step-3"
    if distributed == "fsdp":
        assert sorted(p.name for p in step3.glob("optimizer*")) == ["optimizer-rank0.pt", "optimizer-rank1.pt"]
        with pytest.raises(train.ConfigError, match="same number of processes"):
            train.train(tiny_cfg(tiny_llama_dir, two, *common, "--train.grad_accum", "2"), resume=str(step3))
        (two / "metrics.jsonl").write_text("")
        done = launch_two(tiny_llama_dir, two, *common, "--train.grad_accum", "1", "--resume", str(step3))
        assert done.returncode == 0, done.stderr[-3000:]
        assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)][3:], rel=1e-5)
        for k, v in adapter_tensors(one / "adapter").items():
            torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_process_with_double_accumulation(tiny_llama_dir, tmp_path):
    """A 2-process gloo run (DDP on CPU) and a 1-process run see the same examples per step: same losses.

    Then a checkpoint of the 2-process run resumes in 1 process: grad_accum doubles to keep the
    global batch, and the run ends on the 1-process run's weights.
    """
    common = ("--train.max_steps", "6", "--train.batch_size", "2", "--train.group_by_length", "true")
    two, one, done = two_and_one(tiny_llama_dir, tmp_path, common, ("--train.save_every", "3"))
    assert "x 2 process(es) = 4 examples per step" in done.stdout
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=1e-5)
    assert [r["grad_norm"] for r in metrics(two)] == pytest.approx([r["grad_norm"] for r in metrics(one)], rel=1e-4)
    for k, v in adapter_tensors(one / "adapter").items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-5, atol=1e-6)

    reset_accelerate()
    train.train(tiny_cfg(tiny_llama_dir, two, *common, "--train.grad_accum", "1"),
                resume=str(two / "checkpoints" / "step-3"))
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=1e-5)
    for k, v in adapter_tensors(one / "adapter").items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_layers_under_ddp_match_one_eager_process(tiny_llama_dir, tmp_path):
    """--train.compile true in 2 DDP processes (each compiles its own layers, inductor): the
    losses and adapter of 1 eager process with doubled accumulation, to compile's rounding."""
    common = ("--train.max_steps", "4", "--train.batch_size", "2")
    two, one, done = two_and_one(tiny_llama_dir, tmp_path, common, ("--train.compile", "true"))
    assert "compile: 2 decoder layers" in done.stdout
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=1e-4)
    for k, v in adapter_tensors(one / "adapter").items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-3, atol=1e-5)
