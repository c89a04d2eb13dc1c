"""training.changes and training.optim.reschedule: a resume honours every change it may make, from the
step it resumes at, records it, and refuses every other change before a model loads."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import train
from training import Config, ConfigError, build_scheduler, lr_lambda, reschedule
from training.changes import MAY_CHANGE, compare, fixed_keys, flat
from training.config import TrainConfig
from training.optim import warmup_steps
from utils.compat import reset_accelerate

from train_runs import adapter_tensors, finished_run, metrics, tiny_args

REPO = Path(__file__).resolve().parent.parent
RUN = ("--train.max_steps", "6", "--train.save_every", "2", "--train.keep_last", "3")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def six_steps(tiny_llama_dir, tmp_path_factory) -> Path:
    """A 6-step run with checkpoints at steps 2, 4 and 6 (each test resumes a copy)."""
    return finished_run(tiny_llama_dir, tmp_path_factory, *RUN)


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


# ---------------------------------------------------------------- the two sets of keys

def test_every_key_is_in_exactly_one_set_and_the_set_names_real_keys():
    keys = set(flat(Config()))
    assert set(MAY_CHANGE) <= keys, set(MAY_CHANGE) - keys
    assert set(fixed_keys()) | set(MAY_CHANGE) == keys
    assert not set(fixed_keys()) & set(MAY_CHANGE)
    for key in ("model.name", "model.bits", "lora.r", "lora.target_modules", "data.answer_width", "data.source",
                "train.optimizer", "train.seed", "train.mixed_precision", "train.group_by_length"):
        assert key in fixed_keys()


def test_the_readme_table_lists_every_key_on_its_side():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### What a resume may change")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `([\w.]+)` \| (may change|refused) \|", section, re.M))
    assert rows == {**{k: "may change" for k in MAY_CHANGE}, **{k: "refused" for k in fixed_keys()}}


def test_compare_lists_allowed_changes_and_names_both_values_of_a_refused_one(tmp_path):
    saved = Config()
    now = dataclasses.replace(saved, train=dataclasses.replace(saved.train, lr=2e-4, max_steps=8))
    assert compare(saved, now, 6, tmp_path) == [
        {"key": "train.max_steps", "from": None, "to": 8, "step": 6},
        {"key": "train.lr", "from": 1e-4, "to": 2e-4, "step": 6}]
    wider = dataclasses.replace(now, data=dataclasses.replace(saved.data, answer_width=4))
    with pytest.raises(ConfigError, match=r"data\.answer_width is 0 in checkpoint .* and 4 now"):
        compare(saved, wider, 6, tmp_path)


_VALUES = {"train.lr": st.sampled_from([1e-4, 2e-4, 5e-3]), "train.max_steps": st.sampled_from([None, 8, 20]),
           "train.save_every": st.sampled_from([0, 2]), "log.log_every": st.sampled_from([1, 10]),
           "lora.r": st.sampled_from([4, 8]), "data.answer_width": st.sampled_from([0, 4]),
           "train.optimizer": st.sampled_from(["adamw", "adamw_8bit"]), "model.bits": st.sampled_from([4, 16])}


def _with(cfg: Config, values: dict) -> Config:
    for key, value in values.items():
        section, name = key.split(".")
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
    return cfg


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=_VALUES), st.fixed_dictionaries({}, optional=_VALUES))
def test_compare_returns_exactly_the_differences_or_refuses_a_fixed_one(before, after):
    saved, now = _with(Config(), before), _with(Config(), after)
    differ = [k for k in flat(now) if flat(saved)[k] != flat(now)[k]]
    fixed = [k for k in differ if k not in MAY_CHANGE]
    if fixed:
        with pytest.raises(ConfigError, match=re.escape(fixed[0])):
            compare(saved, now, 3, Path("ck"))
    else:
        changes = compare(saved, now, 3, Path("ck"))
        assert [(c["key"], c["from"], c["to"], c["step"]) for c in changes] == [
            (k, flat(saved)[k], flat(now)[k], 3) for k in differ]


# ---------------------------------------------------------------- the schedule follows the new config

def _optimizer(a_lr=1e-3, b_lr=1e-3):
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.AdamW([{"params": [a], "lr": a_lr}, {"params": [b], "lr": b_lr}], weight_decay=0.0)


def _lrs(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_reschedule_with_the_same_config_continues_an_uninterrupted_schedule_exactly():
    cfg, total = TrainConfig(lr=1e-3, warmup_steps=2, loraplus_ratio=4.0), 10
    optimizer = _optimizer(1e-3, 4e-3)
    whole = _lrs(build_scheduler(cfg, optimizer, total), optimizer, total)
    restored = _optimizer(0.5, 0.5)  # what load_state_dict leaves: the lr of the step it was saved at
    assert _lrs(reschedule(cfg, restored, total, 4), restored, total - 4) == whole[4:]


def test_reschedule_takes_a_new_lr_ratio_weight_decay_and_length_from_the_resumed_step():
    old, new = TrainConfig(lr=1e-3, warmup_steps=2), TrainConfig(lr=1e-4, warmup_steps=2, loraplus_ratio=16.0,
                                                                 weight_decay=0.1, schedule="linear")
    optimizer = _optimizer()
    _lrs(build_scheduler(old, optimizer, 6), optimizer, 6)
    seen = _lrs(reschedule(new, optimizer, 8, 6), optimizer, 2)
    for step, (a, b) in zip((6, 7), seen):
        factor = lr_lambda(step, warmup=warmup_steps(new, 8), total=8, schedule="linear")
        assert a == pytest.approx(1e-4 * factor) and b == pytest.approx(1.6e-3 * factor)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.1]


# ---------------------------------------------------------------- train.py end to end

def test_a_resume_with_a_new_lr_trains_with_it_and_every_record_says_so(six_steps, tiny_llama_dir, tmp_path, capsys):
    plain, lower = _copy(six_steps, tmp_path, "plain"), _copy(six_steps, tmp_path, "lower")
    assert train.main(tiny_args(tiny_llama_dir, plain, *RUN, "--train.max_steps", "8", "--resume", "latest")) == 0
    reset_accelerate()
    capsys.readouterr()
    assert train.main(tiny_args(tiny_llama_dir, lower, *RUN, "--train.max_steps", "8", "--train.lr", "1e-4",
                                "--resume", "latest")) == 0
    said = capsys.readouterr().out
    assert "train.lr: 0.005 -> 0.0001 from step 6" in said and "train.max_steps: 6 -> 8 from step 6" in said
    factor = lr_lambda(6, warmup=2, total=8, schedule="cosine")
    assert metrics(lower)[6]["lr"] == pytest.approx(1e-4 * factor)
    assert metrics(plain)[6]["lr"] == pytest.approx(5e-3 * factor)
    a, b = adapter_tensors(plain / "adapter"), adapter_tensors(lower / "adapter")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for text in ((lower / "config.yaml").read_text(), (lower / "adapter" / "training-config.yaml").read_text(),
                 (lower / "checkpoints" / "step-8" / "config.yaml").read_text()):
        assert "#   train.lr: 0.005 -> 0.0001 from step 6" in text and yaml.safe_load(text)["train"]["lr"] == 1e-4
    assert "- changed on resume: train.lr: 0.005 -> 0.0001 from step 6" in (lower / "adapter" / "README.md").read_text()
    assert {"key": "train.lr", "from": 0.005, "to": 0.0001, "step": 6} in json.loads(
        (lower / "run.json").read_text())["changes"]


def test_changes_of_earlier_resumes_stay_on_record(six_steps, tiny_llama_dir, tmp_path):
    run = _copy(six_steps, tmp_path)
    assert train.main(tiny_args(tiny_llama_dir, run, *RUN, "--train.max_steps", "8", "--resume", "latest")) == 0
    reset_accelerate()
    assert train.main(tiny_args(tiny_llama_dir, run, *RUN, "--train.max_steps", "10", "--train.lr", "1e-3",
                                "--resume", "latest")) == 0
    header = (run / "adapter" / "training-config.yaml").read_text()
    assert "train.max_steps: 6 -> 8 from step 6" in header and "train.max_steps: 8 -> 10 from step 8" in header
    assert "train.lr: 0.005 -> 0.001 from step 8" in header


@pytest.mark.parametrize("extra, key", [(("--data.answer_width", "4"), "data.answer_width"),
                                        (("--lora.target_modules", "all-linear"), "lora.target_modules"),
                                        (("--train.optimizer", "adamw_8bit"), "train.optimizer")])
def test_a_change_that_cannot_be_honoured_is_refused_before_the_model_loads(six_steps, tiny_llama_dir, tmp_path,
                                                                            capsys, monkeypatch, extra, key):
    run = _copy(six_steps, tmp_path)
    before = (run / "config.yaml").read_text()
    monkeypatch.setattr(train, "load_base_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert train.main(tiny_args(tiny_llama_dir, run, *RUN, *extra, "--resume", "latest")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --resume: {key} is ") and "cannot change" in errors[0]
    assert (run / "config.yaml").read_text() == before
