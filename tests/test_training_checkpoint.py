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
from train_runs import REPO, adapter_tensors, metrics, tiny_args, tiny_cfg
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
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, *RUN)) == 0
    reset_accelerate()
    return out


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
