"""training.parallel: clipping, FSDP2's sharding of 4-bit weights and adapters, and 2 gloo processes (ddp,
allreduce, fsdp, compiled layers, an extra adapter parameter) matching 1 process with doubled accumulation."""
from __future__ import annotations

import math

import pytest
import torch

import train
from lora import LoRAConfig, inject_lora, lora_parameters
from quant import load_base_model, prepare_for_kbit_training
from train_runs import (GATED_LAUNCHER, GatedLoRALinear, adapter_tensors, free_port, fsdp_adapter_worker, launch_two,
                        metrics, tiny_cfg, two_and_one)
from training.loss import CompletionLossModel
from training.parallel import clip_gradients, wrap_fsdp
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


@pytest.fixture
def one_process_group():
    """A gloo process group of this process alone: fully_shard needs one, and shards over it as over many."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _loss_and_grad_norm(loss_model, tokenizer, fsdp=None) -> tuple[float, float]:
    """One bf16-autocast forward and backward of two listings; (loss sum, adapter gradient norm), gradients cleared."""
    batch = tokenizer(["Lamp, brass, 40 cm. Price is $12.99", "Two mugs. Price is $8.50"], return_tensors="pt",
                      padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :4] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = loss_model(batch["input_ids"], batch["attention_mask"], labels)
    loss.backward()
    params = lora_parameters(loss_model.model)
    norm = clip_gradients(None, params, 0.0, fsdp=fsdp)
    for p in params:
        p.grad = None
    return float(loss.detach()), norm


def _tiny_4bit_loss_model(tiny_llama_dir, storage: str) -> tuple[CompletionLossModel, object]:
    """The tiny Llama in NF4 (bf16 compute, `storage`), bf16 norms as under fsdp, with a LoRA all of whose weights
    are nonzero (so that A gets gradients too); and its tokenizer."""
    model, tokenizer = load_base_model(str(tiny_llama_dir), bits=4, compute_dtype="bfloat16", quant_storage=storage,
                                       device="cpu", verbose=False, layerwise=True)
    prepare_for_kbit_training(model, upcast_norms=False)
    torch.manual_seed(0)
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    for p in lora_parameters(model):
        torch.nn.init.normal_(p, std=0.1)
    return CompletionLossModel(model), tokenizer


@pytest.mark.parametrize("storage", ["float32", "bfloat16"])
def test_fsdp_shards_packed_4bit_weights_without_casting_them(tiny_llama_dir, one_process_group, storage):
    """The 4-bit trap of FSDP2 (accelerate#3983): a mixed-precision cast of the packed storage to the compute
    dtype (fp32 storage under bf16 compute) turns the packed bytes into other bytes, and training goes silently
    wrong (loss 0, NaN grad norms). wrap_fsdp casts no parameter: sharded and gathered back, the model gives
    the unsharded model's loss and adapter gradient norm bit for bit."""
    loss_model, tokenizer = _tiny_4bit_loss_model(tiny_llama_dir, storage)
    unsharded = _loss_and_grad_norm(loss_model, tokenizer)
    wrap_fsdp(loss_model, torch.device("cpu"))
    assert _loss_and_grad_norm(loss_model, tokenizer, fsdp=loss_model) == unsharded
    assert unsharded[0] > 0 and math.isfinite(unsharded[1]) and unsharded[1] > 0


def test_fsdp_refuses_uint8_4bit_storage_in_one_line(tiny_llama_dir, one_process_group):
    """torch 2.11's FSDP2 cannot shard integer tensors (nn.Parameter of a uint8 DTensor fails deep inside
    fully_shard); resolve stores 4-bit weights in the compute dtype for fsdp, and wrap_fsdp says what to set."""
    loss_model, _ = _tiny_4bit_loss_model(tiny_llama_dir, "uint8")
    refusal = r"q_proj.base_layer.weight is stored as torch.uint8, which FSDP2 cannot shard \(torch 2.11\); set "
    with pytest.raises(train.ConfigError, match=refusal + "model.quant_storage") as refused:
        wrap_fsdp(loss_model, torch.device("cpu"))
    assert "\n" not in str(refused.value)


def test_fsdp_shards_one_adapter_whatever_each_process_drew(tiny_llama_dir, tmp_path):
    """Two gloo processes draw different LoRA A (seed = rank); wrap_fsdp makes every process shard process 0's
    (each keeps a slice of its own copy: without the broadcast the gathered A would be half of each). Gathered
    for saving, every process holds process 0's whole adapter; afterwards the parameters are slices again."""
    import torch.multiprocessing as mp

    mp.spawn(fsdp_adapter_worker, args=(2, free_port(), tiny_llama_dir, tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    first = ranks[0]["before"]
    assert any(not torch.equal(first[k], ranks[1]["before"][k]) for k in first if "lora_A" in k)
    for saved in ranks:
        assert saved["sliced"] and saved["gathered"].keys() == first.keys()
        for k, v in first.items():
            assert torch.equal(saved["gathered"][k], v), k


@pytest.mark.slow
@pytest.mark.parametrize("distributed, bits", [("allreduce", 16), ("fsdp", 16), ("fsdp", 4)])
def test_allreduce_and_fsdp_match_one_process_with_double_accumulation(tiny_llama_dir, tmp_path, distributed, bits):
    """The other two ways of sharing the work give the 1-process run's losses, norms and adapter.

    allreduce: no DDP wrapper, one all-reduce of the LoRA gradients after backward (what CUDA
    graphs use on several GPUs). fsdp (FSDP2): every parameter of every decoder layer, 4-bit or
    LoRA, sharded over the two processes; the adapter is gathered for saving, the optimizer
    state saved per process. FSDP2 casts nothing and reduces in fp32, so its losses, norms and
    adapter are the 1-process run's to fp32 rounding (losses and norms within 1e-6, measured
    1e-7, the first steps' bit for bit; adapter 1e-5, measured 3e-6); the 4-bit run too (NF4
    stored as bf16, which resolve sets for fsdp; bf16 compute; gradient checkpointing). A
    checkpoint of the fsdp run resumes with fsdp and the same processes, and refuses otherwise.
    """
    common = ("--train.max_steps", "6", "--train.batch_size", "2", "--train.group_by_length", "true",
              "--train.distributed", distributed)
    if bits == 4:
        common += ("--model.bits", "4", "--model.compute_dtype", "bfloat16", "--train.mixed_precision", "bf16",
                   "--train.gradient_checkpointing", "true")
    evals = ("--train.eval_every", "3", "--train.eval_batches", "5")
    two, one, _ = two_and_one(tiny_llama_dir, tmp_path, common, ("--train.save_every", "3", *evals), evals)
    tight = distributed == "fsdp"  # allreduce sums the gradients in another order
    loss_rel, norm_rel = (1e-6, 1e-6) if tight else (1e-5, 1e-4)
    rtol, atol = 1e-5, 1e-6
    assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)], rel=loss_rel)
    assert [r["grad_norm"] for r in metrics(two)] == pytest.approx([r["grad_norm"] for r in metrics(one)],
                                                                    rel=norm_rel)
    assert [r["val_loss"] for r in metrics(two) if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in metrics(one) if "val_loss" in r], rel=loss_rel)
    for k, v in adapter_tensors(one / "adapter").items():
        torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=rtol, atol=atol)
    step3 = two / "checkpoints" / "step-3"
    if distributed == "fsdp":
        assert sorted(p.name for p in step3.glob("optimizer*")) == ["optimizer-rank0.pt", "optimizer-rank1.pt"]
        with pytest.raises(train.ConfigError, match="same number of processes"):
            train.train(tiny_cfg(tiny_llama_dir, two, *common, "--train.grad_accum", "2"), resume=str(step3))
        (two / "metrics.jsonl").write_text("")
        done = launch_two(tiny_llama_dir, two, *common, "--train.grad_accum", "1", "--resume", str(step3))
        assert done.returncode == 0, done.stderr[-3000:]
        assert [r["loss"] for r in metrics(two)] == pytest.approx([r["loss"] for r in metrics(one)][3:], rel=loss_rel)
        for k, v in adapter_tensors(one / "adapter").items():
            torch.testing.assert_close(adapter_tensors(two / "adapter")[k], v, rtol=rtol, atol=atol)


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


def test_an_fsdp1_checkpoint_is_refused_in_one_line(tiny_llama_dir, tmp_path):
    """FSDP1 saved each process's flat slice of all adapter parameters; FSDP2's per-parameter slices cannot take
    them, so a checkpoint without fsdp_version 2 is refused before any model loads."""
    from training.resolve import resolve

    cfg = tiny_cfg(tiny_llama_dir, tmp_path, "--train.distributed", "fsdp", "--train.grad_accum", "1")
    state = {"step": 3, "global_batch": 8, "world_size": 2, "distributed": "fsdp"}
    with pytest.raises(train.ConfigError, match="written by FSDP1 .* start a new run"):
        resolve(cfg, 2, "cpu", state, tmp_path / "step-3", say=lambda _: None)
