"""training.best: the best adapter by a validation metric, early stopping, and both across a resume;
training.curves and training.card: the run's plot and the adapter's model card."""
from __future__ import annotations

import json

import pytest
import torch

import train
from train_runs import adapter_tensors, metrics, tiny_args, tiny_cfg
from training.best import BestKeeper
from training.config import Config
from utils.compat import reset_accelerate


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    reset_accelerate()


def keeper(metric="val_loss", patience=0, **state):
    cfg = Config()
    cfg.train.keep_best, cfg.train.early_stopping_patience, cfg.train.eval_every = metric, patience, 1
    saved, said = [], []
    return BestKeeper(cfg, lambda name, record: saved.append(record["step"]), state or None, said.append), saved, said


def test_keeper_saves_on_improvement_and_stops_after_patience_by_hand():
    k, saved, said = keeper("val_loss", patience=2)
    losses = [3.0, 2.5, 2.7, 2.4, 2.6, 2.6]
    stops = [k.update({"step": i + 1, "val_loss": v}) for i, v in enumerate(losses)]
    assert saved == [1, 2, 4]                       # 3.0, 2.5, then 2.4
    assert stops == [False, False, False, False, False, True]
    assert k.state() == {"metric": "val_loss", "value": 2.4, "step": 4, "evaluations_since_best": 2}
    assert said and "early stopping at step 6" in said[0] and "best 2.4000 at step 4" in said[0]
    higher, saved, _ = keeper("val_hit_rate")
    for i, v in enumerate([0.5, 0.4, 0.6]):
        higher.update({"step": i + 1, "val_hit_rate": v, "val_loss": 9.0})
    assert saved == [1, 3]                          # hit rate: higher is better
    nan, saved, _ = keeper("val_loss")
    nan.update({"step": 1, "val_loss": float("nan")})
    assert saved == []                              # a NaN is never the best


def test_a_resumed_keeper_continues_its_count():
    k, saved, _ = keeper("val_loss", patience=2, value=2.0, step=4, evaluations_since_best=1)
    assert k.update({"step": 5, "val_loss": 2.1}) is True and saved == []


def test_keep_best_and_early_stopping_in_a_run_and_across_a_resume(tiny_llama_dir, tmp_path, capsys):
    """lr 0.05 makes the tiny model overshoot after improving: the best adapter is an early one, and
    patience 2 stops the run well before max_steps. Resumed from a checkpoint taken before the
    stop, the run stops at the same step with the same best adapter."""
    extra = ("--train.max_steps", "40", "--train.eval_every", "2", "--train.eval_batches", "2", "--train.lr", "0.05",
             "--train.keep_best", "val_loss", "--train.early_stopping_patience", "2", "--train.save_every", "2",
             "--train.keep_last", "40")
    out = tmp_path / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, *extra)) == 0
    said = capsys.readouterr().out
    rows = metrics(out)
    vals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    best_step, best_val = min(vals, key=lambda sv: sv[1])
    stop_step = rows[-1]["step"]
    assert stop_step < 40 and f"early stopping at step {stop_step}" in said
    assert [s for s, _ in vals if s > best_step] == [best_step + 2, best_step + 4] and stop_step == best_step + 4
    card = (out / "adapter-best" / "README.md").read_text()
    assert f"At step {best_step}:" in card and f"| validation loss | {best_val:.4f} |" in card
    best = adapter_tensors(out / "adapter-best")
    assert any(not torch.equal(v, adapter_tensors(out / "adapter")[k]) for k, v in best.items())

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    import shutil

    start = best_step + 2  # after the best, before the stop: the count of evaluations without improvement is 1
    shutil.copytree(out / "checkpoints" / f"step-{start}", resumed / "checkpoints" / f"step-{start}")
    assert train.main(tiny_args(tiny_llama_dir, resumed, *extra, "--resume", "latest")) == 0
    assert f"early stopping at step {stop_step}" in capsys.readouterr().out
    assert [r["step"] for r in metrics(resumed)] == list(range(start + 1, stop_step + 1))
    for k, v in best.items():  # the best adapter came back from the checkpoint
        torch.testing.assert_close(adapter_tensors(resumed / "adapter-best")[k], v, rtol=0, atol=0)


def test_keep_best_needs_validation(capsys):
    from train_runs import TINY

    assert train.main(["--config", str(TINY), "--train.keep_best", "val_loss"]) == 2
    assert "set train.eval_every too" in capsys.readouterr().err
    assert train.main(["--config", str(TINY), "--train.keep_best", "val_rmsle", "--train.eval_every", "5"]) == 2
    assert "set train.price_eval_items" in capsys.readouterr().err


def test_a_run_writes_curves_run_json_and_a_model_card(tiny_llama_dir, tmp_path):
    from training.curves import main as curves_main

    out = tmp_path / "run"
    adapter = train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "4", "--train.eval_every", "2",
                                   "--train.eval_batches", "1"))
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    run = json.loads((out / "run.json").read_text())
    assert {"git", "versions", "python", "device", "processes", "time"} <= set(run)
    assert run["versions"]["torch"] == torch.__version__ and run["device"] == "cpu" and run["processes"] == 1
    assert len(run["git"]["commit"] or "") == 40 and isinstance(run["git"]["dirty"], bool)
    card = (adapter / "README.md").read_text()
    val = [r for r in metrics(out) if "val_loss" in r][-1]
    assert f"base_model: {tiny_llama_dir}" in card and f"| validation loss | {val['val_loss']:.4f} |" in card
    assert "AutoPeftModelForCausalLM" in card and "vllm serve" in card and "r 4, alpha 8" in card
    # Two runs in one figure.
    other = tmp_path / "other"
    train.train(tiny_cfg(tiny_llama_dir, other, "--train.max_steps", "3"))
    assert curves_main([str(out), str(other), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").read_bytes().startswith(b"\x89PNG")
    assert curves_main([str(out), str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2


def test_the_embedded_models_adapters_name_its_hub_id(tmp_path, monkeypatch):
    """An adapter trained on `smollm2-135m` names HuggingFaceTB/SmolLM2-135M-Instruct, the id peft and
    vLLM find; pricer still loads it (and old adapters that name the alias) on the embedded copy."""
    from lora import LoRAConfig, inject_lora
    from quant.tiny import build_tiny_llama
    from training.checkpoint import AdapterSaver

    folder = build_tiny_llama(tmp_path / "tiny")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    inject_lora(model, LoRAConfig(r=2))
    cfg = Config()  # model.name is the embedded alias

    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    saved = AdapterSaver(OneProcess(), model, tmp_path / "run", cfg, None, {"items": 1, "split": "x"})("adapter")
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (saved / "README.md").read_text()
    # the resolved config travels in the folder, as --config reads it back
    from training import config_yaml, load_config
    assert (saved / "training-config.yaml").read_text() == config_yaml(cfg)
    assert config_yaml(load_config(saved / "training-config.yaml")) == config_yaml(cfg)


def test_a_resume_that_changes_the_metric_starts_a_new_best():
    """train.keep_best may change on resume: the old metric's best (a hit rate of 0.9) is no val_loss to beat."""
    cfg = Config()
    cfg.train.keep_best, cfg.train.early_stopping_patience, cfg.train.eval_every = "val_loss", 2, 1
    saved = []
    old = {"metric": "val_hit_rate", "value": 0.9, "step": 4, "evaluations_since_best": 1}
    k = BestKeeper(cfg, lambda name, record: saved.append(record["step"]), old, print)
    assert k.update({"step": 5, "val_loss": 2.1}) is False and saved == [5]
    assert k.state() == {"metric": "val_loss", "value": 2.1, "step": 5, "evaluations_since_best": 0}
