"""Fine-tune a causal LM with hand-written QLoRA to predict Amazon prices.

    python train.py --config configs/demo.yaml [--train.lr 2e-4 ...] [--resume latest|PATH] [--overwrite]
    accelerate launch --num_processes 2 train.py --config configs/llama31-8b.yaml
    python train.py --help                      # every config key with its default, range and meaning
    python train.py --config configs/demo.yaml --print-config    # the config it would run, then exit

The recipe, top to bottom like nanoGPT's: config -> accelerator -> data -> base model (quant/) ->
LoRA (lora/) -> wrapping -> optimizer and schedule -> the loop -> <output_dir>/adapter/ (peft
format). What the loop uses and a reader may skip lives in training/, one file per piece.

Two decisions the rest follows from:
- One global data order per epoch. Every optimizer step consumes the next
  global_batch = batch_size * grad_accum * world_size examples of it, and process r takes its
  slice of each micro-batch, so 2 processes x accumulation a see exactly the examples of
  1 process x accumulation 2a (data/order.py).
- The loss of a step is the sum of token losses over all its supervised (answer) tokens, in
  every micro-batch and process, divided by their total count: not a mean of per-batch means,
  which would weigh a 3-token price against an 8-token one unevenly (training/loss.py).
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import set_seed

from data import CompletionCollator, DataError
from lora import AdapterError, LoRALinear, check_trainable, inject_lora, load_adapter, lora_layers, lora_parameters
from lora.inject import parameter_counts
from quant import (ModelError, check_projections, format_memory_report, load_base_model, memory_report,
                   prepare_for_kbit_training)
from training import (AdapterSaver, BestKeeper, CheckpointError, CompletionLossModel, Config, ConfigError,
                      CudaGraphLoss, RunLog, StepBatches, StopFlag, TrainingDiverged, TrainingInterrupted, Validator,
                      accumulate_gradients, build_optimizer, build_scheduler, claim_output_dir, clip_gradients,
                      compile_decoder_layers, completion_loss_sum, config_yaml, examples_of, load_splits,
                      load_adapter_values, lora_config_of, make_accelerator, parse_args, pick_checkpoint, reschedule,
                      resolve, restore, save_checkpoint, shard_while_loading, wrap_for_processes, write_run_files)
from training.loss import LossFn
from utils.folder_lock import FolderError, hold_folder


def add_adapter(model: torch.nn.Module, cfg: Config, checkpoint: Path | None, layer_class: type[LoRALinear]) -> None:
    """A fresh adapter as cfg.lora says, or the checkpoint's (refused when its LoRA settings differ).

    Under fsdp the load already put a fresh one, frozen with the rest, in every decoder layer before
    sharding it (training.parallel.ShardWhileLoading): a checkpoint's weights go into its slices,
    and it becomes trainable.
    """
    lora_config = saved = lora_config_of(cfg)
    if lora_layers(model):
        if checkpoint:
            saved = load_adapter_values(model, checkpoint / "adapter")
        for p in lora_parameters(model):
            p.requires_grad_(True)
    elif checkpoint is None:
        check_projections(model, lora_config.target_modules)  # names the model's Linear layers if none match
        inject_lora(model, lora_config, layer_class)
    else:
        saved = load_adapter(model, checkpoint / "adapter", layer_class)
    keys = ("r", "alpha", "dropout", "use_rslora", "use_dora")
    if any(getattr(saved, k) != getattr(lora_config, k) for k in keys):
        raise ConfigError(f"checkpoint {checkpoint} has LoRA " + ", ".join(f"{k}={getattr(saved, k)}" for k in keys)
                          + "; resume with the same lora settings")
    check_trainable(model)


def describe(say, model: torch.nn.Module, batches: StepBatches, world: int, total_steps: int) -> None:
    """Print what is about to train: trainable share, memory, batch geometry."""
    t = batches.cfg
    trainable, total = parameter_counts(model)
    say(f"params: trainable {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    say(format_memory_report(memory_report(model)))
    say(f"batch: {t.batch_size} per device x {t.grad_accum} accumulation x {world} process(es) = "
        f"{batches.global_batch} examples per step; {batches.steps_per_epoch:,} steps per epoch; {total_steps:,} steps")


def check_finite(loss: float, grad_norm: float, step: int, mixed_precision: str, last_saved: Path | None) -> None:
    """TrainingDiverged before the update when the loss or gradient norm is NaN/inf (fp16's scaler skips inf norms)."""
    if not math.isfinite(loss) or (not math.isfinite(grad_norm) and mixed_precision != "fp16"):
        raise TrainingDiverged(f"loss {loss} / grad norm {grad_norm} at step {step + 1}: stopping before the update; "
                               f"last good checkpoint: {last_saved} (lower train.lr or max_grad_norm, then --resume)")


def train(cfg: Config, resume: str | None = None, *, overwrite: bool = False, loss_fn: LossFn = completion_loss_sum,
          layer_class: type[LoRALinear] = LoRALinear) -> Path:
    """Train a LoRA adapter as `cfg` says; returns <output_dir>/adapter. Seams: `loss_fn(model, batch) -> (loss sum,
    supervised count)` replaces the completion loss (eager steps); `layer_class` is a LoRALinear subclass to inject."""
    # --- accelerator (one process per device) and the run's folder.
    accelerator = make_accelerator(cfg)
    rank, world, say = accelerator.process_index, accelerator.num_processes, accelerator.print
    out = Path(cfg.output_dir)
    if accelerator.is_main_process and (note := claim_output_dir(out, resume is not None, overwrite)):
        say(note)
    accelerator.wait_for_everyone()

    # --- data: items -> deterministic split, before any model loads; a resumed run must match it.
    splits, train_items = load_splits(cfg.data, verbose=accelerator.is_main_process)
    say(f"data: {splits.summary()}; training on {len(train_items):,}")
    fingerprint = {"source": cfg.data.source, **splits.fingerprint(train_items)}
    checkpoint, state = pick_checkpoint(resume, out, fingerprint, say) if resume else (None, None)
    cfg, changes = resolve(cfg, world, accelerator.device.type, state, checkpoint, say=say)  # or refused
    t = cfg.train
    write_run_files(out, cfg, accelerator, changes)

    # --- base model (frozen; 4-bit ones quantized tensor by tensor, never whole in 16 bits) and tokenizer, on this
    # process's device. fsdp: each process builds only its slices, every decoder layer sharded with its LoRA.
    set_seed(t.seed)
    model, tokenizer = load_base_model(
        cfg.model.name, bits=cfg.model.bits, quant_type=cfg.model.quant_type, double_quant=cfg.model.double_quant,
        compute_dtype=cfg.model.compute_dtype, device=accelerator.device, quant_storage=cfg.model.quant_storage,
        verbose=False, layerwise=cfg.model.bits == 4, on_unit=shard_while_loading(cfg, accelerator, layer_class))
    model = prepare_for_kbit_training(model, gradient_checkpointing=t.gradient_checkpointing,
                                      upcast_norms=t.distributed != "fsdp")

    # --- examples and their order; with CUDA graphs every batch is padded to one shape.
    collate = CompletionCollator(tokenizer, max_length=cfg.data.max_length, pad_to_multiple_of=cfg.data.max_length
                                 if t.cuda_graphs else cfg.data.pad_to_multiple_of)
    batches = StepBatches(examples_of(train_items, tokenizer, cfg.data), collate, t, rank, world)
    val_examples = examples_of(splits.val, tokenizer, cfg.data) if t.eval_every else []
    total_steps = batches.total_steps()

    # --- LoRA (fsdp: trains what the load put in), speed: compiled layers; wrapping: how processes share a step.
    add_adapter(model, cfg, checkpoint, layer_class)
    if t.compile:
        say(f"compile: {compile_decoder_layers(model)} decoder layers (torch.compile; the first step compiles)")
    describe(say, model, batches, world, total_steps)
    wrapped = wrap_for_processes(CompletionLossModel(model, loss_fn), t.distributed, accelerator)
    if t.cuda_graphs:
        wrapped.step_model = CudaGraphLoss(wrapped.step_model)

    # --- optimizer and schedule on the parameters as wrapped (FSDP's hold slices); only the optimizer goes
    # through accelerate: the data order is ours, and a prepared scheduler would step once per process.
    optimizer = build_optimizer(t, model)
    scheduler = build_scheduler(t, optimizer, total_steps)
    optimizer = accelerator.prepare_optimizer(optimizer)
    step = state["step"] if state else 0
    if checkpoint:
        say(restore(checkpoint, state, optimizer, accelerator, wrapped.fsdp is not None, t.seed, out))
        scheduler = reschedule(t, scheduler.optimizer, total_steps, step)  # a changed lr takes effect from here
    else:
        set_seed(t.seed + rank)  # dropout differs per process; the LoRA init above was shared

    # --- the loop: accumulate, clip, check, step, log, validate (keep the best, stop early), checkpoint, stop.
    params = lora_parameters(model)
    validate = Validator(accelerator, model, wrapped, val_examples, splits, collate, cfg)
    save_adapter_as = AdapterSaver(accelerator, model, out, cfg, wrapped.fsdp, fingerprint, changes)
    best = BestKeeper(cfg, save_adapter_as, state and state.get("best"), say)
    log = RunLog(accelerator, cfg, out, total_steps, step)  # drops rows after `step`; peak memory from here
    wrapped.train()
    last_saved, stop_early = checkpoint, False
    with StopFlag() as stop, log:
        while step < total_steps and not stop_early:
            started = time.time()
            micro = [{k: v.to(accelerator.device) for k, v in b.items()} for b in batches(step)]
            loss_sum, n_tok = accumulate_gradients(accelerator, wrapped.step_model, micro, wrapped.allreduce)
            loss = float(loss_sum / n_tok)
            grad_norm = clip_gradients(accelerator, params, t.max_grad_norm, fsdp=wrapped.fsdp)
            check_finite(loss, grad_norm, step, t.mixed_precision, last_saved)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            record = log.record(step, loss, lr, grad_norm, micro, started)
            if t.eval_every and step % t.eval_every == 0:
                record |= validate()
                stop_early = best.update(record)
            log.write(record)
            stopping = stop.raised(accelerator)
            if (t.save_every and step % t.save_every == 0) or stopping:
                position = {**batches.position(step), "data": fingerprint, "best": best.state(), "changes": changes}
                save_checkpoint(accelerator, out / "checkpoints", step, model, optimizer, scheduler, position, cfg,
                                wrapped.fsdp)
                last_saved = out / "checkpoints" / f"step-{step}"
            if stopping:
                raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved to "
                                          f"{out / 'checkpoints' / f'step-{step}'}; continue with --resume latest")
    position = {**batches.position(step), "data": fingerprint, "best": best.state(), "changes": changes}
    adapter = save_adapter_as.final(step, optimizer, scheduler, position, last_saved, log.last_validation, say)
    say(f"adapter saved to {adapter}")
    accelerator.end_training()
    return adapter


def main(argv: list[str] | None = None, **seams) -> int:
    """CLI entry point: exit 0 when trained, 2 on a user error, 1 when training diverged, 130 when interrupted.

    `seams` go to train() (loss_fn, layer_class): tests and experiments call main() with them.
    """
    try:
        cfg, options = parse_args(argv, description=__doc__.splitlines()[0])
        if options.print_config:
            print(config_yaml(cfg), end="")
            return 0
        # One process writes a run folder at a time: rank 0 holds it for the run (accelerate launch sets RANK).
        held = hold_folder(Path(cfg.output_dir), "train.py") if os.environ.get("RANK", "0") == "0" else nullcontext()
        with held:
            train(cfg, options.resume, overwrite=options.overwrite, **seams)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except (TrainingDiverged, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, DataError, AdapterError, ModelError, FileNotFoundError, FolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
