"""training.parallel: clipping, and 2 gloo processes (ddp, allreduce, fsdp, compiled layers, an extra
adapter parameter) matching 1 process with doubled accumulation."""
from __future__ import annotations

import pytest
import torch

import train
from train_runs import GATED_LAUNCHER, GatedLoRALinear, adapter_tensors, launch_two, metrics, tiny_cfg, two_and_one
from training.parallel import clip_gradients
from utils.compat import reset_accelerate


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each train() builds its own Accelerator; accelerate keeps global state between them."""
    yield
    reset_accelerate()


def test_clip_gradients_caps_the_norm_and_returns_the_norm_before():
    from accelerate import Accelerator

    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    accelerator = Accelerator(cpu=True)
    assert clip_gradients(accelerator, params, 0.0) == pytest.approx(5.0)  # off: reported, not changed
    assert float(params[0].grad[0]) == 3.0
    assert clip_gradients(accelerator, params, 0.5) == pytest.approx(5.0)
    after = torch.cat([p.grad.flatten() for p in params]).norm()
    assert float(after) == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.3, 0.0, 0.0]), rtol=1e-4, atol=1e-6)


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


@pytest.mark.slow
def test_a_new_adapter_parameter_is_all_reduced_across_processes(tiny_llama_dir, tmp_path):
    """GatedLoRALinear's extra `lora_gain`, named nowhere else, is all-reduced: 2 processes with
    train.distributed allreduce end on the gains of 1 process with doubled accumulation. Without
    the all-reduce each process would step its own gain on half the batch, and they would differ."""
    common = ("--train.max_steps", "4", "--train.batch_size", "2", "--train.distributed", "allreduce",
              "--train.lr", "2e-2")
    two, one, _ = two_and_one(tiny_llama_dir, tmp_path, common, script=GATED_LAUNCHER, layer_class=GatedLoRALinear)
    gains = {k: v for k, v in adapter_tensors(one / "adapter").items() if k.endswith("lora_gain")}
    assert len(gains) == 2 * 4 and not all(torch.equal(v, torch.ones_like(v)) for v in gains.values())
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=1e-5)
    for k, v in gains.items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=1e-5, atol=1e-6)
