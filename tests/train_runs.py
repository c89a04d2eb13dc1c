"""Helpers for tests that run train.py on the tiny random Llama: arguments, outputs, 2-process launches,
and a LoRALinear variant with one more trainable parameter (the seam `train(..., layer_class=...)`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

import train
from lora import LoRALinear

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


def tiny_args(tiny_llama_dir, out: Path, *extra: str) -> list[str]:
    """train.py's arguments for configs/tiny.yaml on the tiny Llama, writing to `out`."""
    return ["--config", str(TINY), "--model.name", str(tiny_llama_dir), "--output_dir", str(out), *extra]


def tiny_cfg(tiny_llama_dir, out: Path, *extra: str) -> train.Config:
    """The Config those arguments give."""
    cfg, _ = train.parse_args(tiny_args(tiny_llama_dir, out, *extra))
    return cfg


def finished_run(tiny_llama_dir, tmp_path_factory, *extra: str) -> Path:
    """A whole tiny run in a fresh folder (a module fixture's: tests copy it before changing it)."""
    from utils.compat import reset_accelerate

    out = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(tiny_args(tiny_llama_dir, out, *extra)) == 0
    reset_accelerate()
    return out


def metrics(out: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    """An adapter folder's weights by key."""
    return load_file(path / "adapter_model.safetensors")


class GatedLoRALinear(LoRALinear):
    """LoRALinear plus one trainable parameter, a gain per output row on the update: what a
    researcher adding a parameter to lora/layer.py does. Nothing else in pricer is told of it."""

    def __init__(self, base: nn.Linear, **kwargs) -> None:
        super().__init__(base, **kwargs)
        self.lora_gain = nn.Parameter(torch.ones(self.out_features, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        x = x.to(self.lora_A.weight.dtype)
        update = self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling * self.lora_gain
        return (result + update).to(result.dtype)


# gloo's teardown at process exit now and then aborts a process whose work is done (a C++
# thread still joinable when the interpreter finalises; pytorch/pytorch#179291): seen once in
# ~20 launches here, after all steps and the adapter were written.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"
GATED_LAUNCHER = REPO / "tests" / "launch_gated.py"


def launch_two(tiny_llama_dir, out: Path, *extra: str, script: Path = REPO / "train.py"):
    """`script` (train.py) in 2 CPU processes over gloo, as `accelerate launch --multi_gpu` starts them.

    A run that aborts in gloo's teardown is run once more (from scratch, same output folder):
    any other failure, or the same abort twice, is returned as it is.
    """
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    for attempt in range(2):
        if attempt:
            shutil.rmtree(out, ignore_errors=True)  # from scratch: the aborted run's files would refuse a fresh one
        done = subprocess.run([*launch, *tiny_args(tiny_llama_dir, out, *extra)],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or GLOO_TEARDOWN_ABORT not in done.stderr:
            return done
    return done


def two_and_one(tiny_llama_dir, tmp_path, common, two_extra=(), one_extra=(), script: Path = REPO / "train.py",
                **seams):
    """`common` steps in 2 gloo processes x accumulation 1 and in 1 process x accumulation 2.

    Returns (two's folder, one's folder, the 2-process run); the 2-process run must succeed.
    """
    two = tmp_path / "two"
    done = launch_two(tiny_llama_dir, two, *common, "--train.grad_accum", "1", *two_extra, script=script)
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    train.train(tiny_cfg(tiny_llama_dir, one, *common, "--train.grad_accum", "2", *one_extra), **seams)
    return two, one, done


def free_port() -> int:
    """A TCP port nothing listens on now, for a process group's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_adapter_worker(rank: int, world: int, port: int, tiny_llama_dir: Path, out: Path) -> None:
    """One of `world` gloo processes (torch.multiprocessing.spawn): the tiny Llama with a LoRA drawn from seed
    `rank`, so that every process starts from its own, sharded by wrap_fsdp; saves the adapter before and
    as full_adapter_parameters gathers it, and whether the parameters are slices again afterwards."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM

    from lora import LoRAConfig, inject_lora, lora_parameters
    from lora.io import adapter_state_dict
    from training.loss import CompletionLossModel
    from training.parallel import full_adapter_parameters, wrap_fsdp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        model.requires_grad_(False)
        torch.manual_seed(rank)
        inject_lora(model, LoRAConfig(r=4, alpha=8))
        before = {k: v.clone() for k, v in adapter_state_dict(model).items()}  # the broadcast writes in place
        loss_model = CompletionLossModel(model)
        wrap_fsdp(loss_model, torch.device("cpu"))
        with full_adapter_parameters(loss_model):
            gathered = adapter_state_dict(model)
        sliced = all(isinstance(p, DTensor) for p in lora_parameters(model))
        torch.save({"before": before, "gathered": gathered, "sliced": sliced}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
