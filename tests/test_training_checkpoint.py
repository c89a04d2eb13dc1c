"""training.checkpoint and training.rundir: checkpoints never run code, damaged ones are passed over
or named, failed saves leave nothing behind, resumes check their data, outputs are readable."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from train_runs import REPO, adapter_tensors, finished_run, metrics, tiny_args, tiny_cfg
from training import rng
from utils.compat import reset_accelerate

RUN = ("--train.max_steps", "6", "--train.save_every", "3", "--train.keep_last", "3", "--lora.dropout", "0.1")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def finished(tiny_llama_dir, tmp_path_factory) -> Path:
    """A 6-step run with checkpoints at steps 3 and 6 (copied by each test before it damages one)."""
    return finished_run(tiny_llama_dir, tmp_path_factory, *RUN)


def copy_run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "adapter")
    return out


class Payload:
    """Unpickling this creates a file: what a planted checkpoint would do, had it been unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt"])
def test_a_planted_payload_is_refused_and_never_runs(finished, tmp_path, tiny_llama_dir, capsys, name):
    out = copy_run(finished, tmp_path)
    marker = tmp_path / "ran"
    torch.save({"state": Payload(marker)}, out / "checkpoints" / "step-6" / name)
    # Named explicitly: refused with one line naming the file.
    code = train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", str(out / "checkpoints" / "step-6")))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("error: ") and "\n" not in err
    assert f"step-6/{name} holds objects other than tensors" in err and "refused" in err
    assert not marker.exists()
    # --resume latest passes over it to the intact step-3, saying so, and still never runs it.
    reset_accelerate()
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", "latest")) == 0
    assert "skipping damaged checkpoint step-6" in capsys.readouterr().out
    assert not marker.exists()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_rng_state_round_trips_without_pickle(tmp_path):
    torch.manual_seed(3)
    import random

    import numpy as np

    random.seed(4)
    np.random.seed(5)
    state = rng.capture()
    rng.save([state, state], tmp_path)
    assert not any(b"\x80" == p.read_bytes()[:1] for p in tmp_path.iterdir())  # no pickle protocol header
    want = (torch.rand(3), random.random(), np.random.rand())
    loaded = rng.load(tmp_path)
    assert len(loaded) == 2
    rng.restore(loaded[1])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


@pytest.mark.parametrize("damage", ["truncate optimizer.pt", "truncate trainer_state.json", "remove scheduler.pt",
                                    "garble rng.json", "truncate adapter/adapter_model.safetensors"])
def test_latest_falls_back_to_the_newest_intact_checkpoint(finished, tmp_path, tiny_llama_dir, capsys, damage):
    out = copy_run(finished, tmp_path)
    how, name = damage.split(" ")
    path = out / "checkpoints" / "step-6" / name
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "remove":
        path.unlink()
    else:
        path.write_text("{not json")
    # Named explicitly, a damaged checkpoint is one line that names the file.
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", str(out / "checkpoints" / "step-6"))) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "step-6" in err and name.split("/")[-1] in err
    # --resume latest passes over it, saying why, and resumes from step 3.
    reset_accelerate()
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", "latest")) == 0
    note = capsys.readouterr().out
    assert "skipping damaged checkpoint step-6" in note and name.split("/")[-1] in note
    # Resumed from step 3, the run ends where the uninterrupted one did (RNG restored as well).
    for k, v in adapter_tensors(finished / "adapter").items():
        torch.testing.assert_close(adapter_tensors(out / "adapter")[k], v, rtol=1e-6, atol=1e-7)


def test_no_intact_checkpoint_is_one_line(finished, tmp_path, tiny_llama_dir, capsys):
    out = copy_run(finished, tmp_path)
    for step in ("step-3", "step-6"):
        (out / "checkpoints" / step / "optimizer.pt").write_bytes(b"PK\x03\x04 not a zip")
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", "latest")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --resume latest: no intact checkpoint") and "\n" not in err


def test_resume_refuses_other_data(finished, tmp_path, tiny_llama_dir, capsys):
    out = copy_run(finished, tmp_path)
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--data.limit", "120", "--resume", "latest")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was trained on other data" in err and "160 items" in err and "120 items" in err and "\n" not in err


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_save_that_fails_leaves_no_temp_folder_and_says_what_to_do(tiny_llama_dir, tmp_path):
    """Files may grow to 20 kB, less than a checkpoint's optimizer state: the save of step 3 fails
    as it would on a full disk (File too large / No space left)."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", FULL_DISK.format(limit=20_000),
                           *tiny_args(tiny_llama_dir, out, *RUN)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(err) == 1 and "could not save checkpoint" in err[0] and "step-3" in err[0]
    assert "disk space" in err[0] and "--resume latest" in err[0]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_saved_outputs_are_readable_by_others(tiny_llama_dir, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        train.train(tiny_cfg(tiny_llama_dir, out, "--train.max_steps", "2", "--train.save_every", "2"))
    finally:
        os.umask(old)
    folders = [out / "adapter", out / "checkpoints" / "step-2", out / "checkpoints" / "step-2" / "adapter"]
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
        for f in folder.iterdir():
            if f.is_file():
                assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    assert stat.S_IMODE((out / "config.yaml").stat().st_mode) == 0o644


def test_every_checkpoint_file_loads_without_unpickling(finished):
    """The .pt files load with weights_only=True; the RNG state is JSON and safetensors."""
    step = finished / "checkpoints" / "step-6"
    assert sorted(p.name for p in step.iterdir()) == ["adapter", "config.yaml", "optimizer.pt", "rng.json",
                                                      "rng.safetensors", "scheduler.pt", "trainer_state.json"]
    for name in ("optimizer.pt", "scheduler.pt"):
        assert isinstance(torch.load(step / name, weights_only=True), dict)
    assert len(rng.load(step)) == 1


def test_an_adapter_that_cannot_be_written_leaves_a_checkpoint_it_is_written_from(finished, tiny_llama_dir, tmp_path,
                                                                                   capsys, monkeypatch):
    """The last save (step 4) is older than the final step: step 6 is checkpointed before the adapter, whose
    write then fails; `--resume latest` with the run's config.yaml writes it without training again."""
    from training.checkpoint import AdapterSaver

    def no_space(self, name, record=None):
        raise OSError(28, "No space left on device")

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(AdapterSaver, "__call__", no_space)
        assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--train.save_every", "4")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: could not write the adapter (No space left on device); the trained state is in "
                   f"{out}/checkpoints/step-6: free space, then `python train.py --config {out}/config.yaml "
                   "--resume latest` writes the adapter without training again")
    assert not (out / "adapter").exists() and (out / "checkpoints" / "step-6").is_dir()
    reset_accelerate()
    assert train.main(["--config", str(out / "config.yaml"), "--resume", "latest"]) == 0
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5, 6]   # no step trained again
    for k, v in adapter_tensors(finished / "adapter").items():
        torch.testing.assert_close(adapter_tensors(out / "adapter")[k], v, rtol=1e-6, atol=1e-7)


def test_when_no_file_can_be_written_it_says_which_steps_are_lost(tiny_llama_dir, tmp_path):
    """Files may grow to 4 kB: neither the adapter nor a checkpoint of it can be written."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", FULL_DISK.format(limit=4_000),
                           *tiny_args(tiny_llama_dir, out, "--train.max_steps", "4", "--train.save_every", "0")],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300)
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode == 1 and len(err) == 1, done.stderr[-2000:]
    assert err[0].startswith("error: could not write the adapter (File too large) nor a checkpoint of step 4")
    assert "all 4 steps are lost" in err[0] and f"--config {out}/config.yaml --overwrite" in err[0]


def test_resuming_an_earlier_checkpoint_moves_the_later_ones_aside(finished, tiny_llama_dir, tmp_path, capsys):
    """Resumed from step 3 with keep_last 1, the abandoned step 6 is kept aside, out of `latest`'s reach."""
    out = copy_run(finished, tmp_path)
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--train.save_every", "1", "--train.keep_last", "1",
                                "--resume", str(out / "checkpoints" / "step-3"))) == 0
    assert "moved the later checkpoints step-6" in capsys.readouterr().out
    (aside,) = (out / "checkpoints").glob("abandoned-*")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [aside.name, "step-6"]
    old = finished / "checkpoints" / "step-6"
    assert (aside / "step-6" / "optimizer.pt").read_bytes() == (old / "optimizer.pt").read_bytes()


def test_pruning_never_removes_the_checkpoint_just_written(tmp_path):
    from training.checkpoint import prune

    for step in (2, 3, 4, 6):
        (tmp_path / f"step-{step}").mkdir()
    prune(tmp_path, 4, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3", "step-4", "step-6"]
    prune(tmp_path, 4, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-4", "step-6"]


def test_symlinked_checkpoints_are_followed_and_only_links_are_removed(finished, tiny_llama_dir, tmp_path):
    """`checkpoints` a link to another disk works as a folder; a `step-N` link is read through, and pruning
    removes the link, never the files it points to."""
    out = copy_run(finished, tmp_path)
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    (out / "checkpoints").rename(store / "checkpoints")
    (out / "checkpoints").symlink_to(store / "checkpoints")
    (store / "checkpoints" / "step-3").rename(elsewhere / "step-3")
    (store / "checkpoints" / "step-3").symlink_to(elsewhere / "step-3")
    files = sorted(p.name for p in (elsewhere / "step-3").iterdir())
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--train.save_every", "1", "--train.keep_last", "1",
                                "--resume", str(out / "checkpoints" / "step-3"))) == 0
    assert sorted(p.name for p in (elsewhere / "step-3").iterdir()) == files
    assert (out / "checkpoints").is_symlink() and (store / "checkpoints" / "step-6" / "optimizer.pt").is_file()
    assert not (store / "checkpoints" / "step-3").is_symlink()


def _other_optimizer(like: dict, change: str) -> dict:
    """An AdamW state stepped once over parameters shaped like the adapter's, one fewer or transposed."""
    groups = [[torch.zeros(shape) for shape in shapes] for shapes in like]
    if change == "one fewer":
        groups[1].pop()
    else:
        groups[0] = [torch.zeros(p.shape[::-1]) for p in groups[0]]
    params = [[torch.nn.Parameter(p) for p in g] for g in groups]
    optimizer = torch.optim.AdamW([{"params": g} for g in params])
    for p in (p for g in params for p in g):
        p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer.state_dict()


@pytest.mark.parametrize("change", ["one fewer", "transposed", "transposed, named as bitsandbytes names them"])
def test_an_optimizer_state_of_other_parameters_is_refused(finished, tmp_path, tiny_llama_dir, capsys, change):
    out = copy_run(finished, tmp_path)
    step = out / "checkpoints" / "step-6"
    saved = torch.load(step / "optimizer.pt", weights_only=True)
    like = [[tuple(saved["state"][i]["exp_avg"].shape) for i in g["params"]] for g in saved["param_groups"]]
    other = _other_optimizer(like, change.split(",")[0])
    if "bitsandbytes" in change:  # bitsandbytes' 8-bit AdamW keeps state1/state2 (uint8) where torch has exp_avg*
        other["state"] = {i: {"step": s["step"], "state1": s["exp_avg"].to(torch.uint8),
                              "state2": s["exp_avg_sq"].to(torch.uint8)} for i, s in other["state"].items()}
    torch.save(other, step / "optimizer.pt")
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", str(step))) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {step}/optimizer.pt is the optimizer state of ") and "another run or model" in err


@pytest.mark.parametrize("edit, said", [
    ({"step": -50, "examples_seen": -200}, "step -50"), ({"global_batch": 0}, "global_batch 0"),
    ({"world_size": 0}, "world_size 0"), ({"examples_seen": -4}, "examples_seen -4"),
    ({"step": 2 ** 40}, f"step {2 ** 40}"), ({"step": True}, "lacks the integers"),
    ({"step": 50, "examples_seen": 200}, "scheduler.pt is at step 6, trainer_state.json at step 50"),
])
def test_a_trainer_state_no_run_writes_is_refused_in_one_line(finished, tmp_path, tiny_llama_dir, capsys, edit, said):
    import json

    out = copy_run(finished, tmp_path)
    path = out / "checkpoints" / "step-6" / "trainer_state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN, "--resume", str(path.parent))) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and said in err and "step-6" in err


def test_an_output_dir_that_is_a_file_is_one_line(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert train.main(tiny_args(tiny_llama_dir, path, "--train.max_steps", "1")) == 2
    # train.py's folder lock meets it first; train() alone (no lock) says the same with "output_dir " before it
    assert capsys.readouterr().err.strip() == f"error: {path} is a file, not a folder: pass a new or existing folder"
    assert path.read_text() == "mine"
