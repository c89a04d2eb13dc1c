"""Making a step fast on a GPU: CUDA graphs of the whole loss (CudaGraphLoss) and torch.compile of
each decoder layer (compile_decoder_layers). Both are switches (train.cuda_graphs, train.compile)
that change no number beyond rounding; tests/test_training_speed.py and test_training_compile.py check that."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data import IGNORE_INDEX
from lora import lora_parameters
from training.errors import ConfigError
from training.loss import CompletionLossModel, StaticCompletionLoss
from utils.compat import trace_scoped_side_effects_under_checkpointing


class CudaGraphLoss:
    """CompletionLossModel's forward and backward captured as CUDA graphs, one pair per batch shape.

    A QLoRA step on a small batch is bound by the CPU launching thousands of small kernels
    (dequantize, matmul, LoRA, norms), not by the GPU. Capturing the step once and replaying
    it removes that cost (torch.cuda.make_graphed_callables; dropout stays random through
    graph-safe RNG). Same call and result as CompletionLossModel; each new (batch, length)
    shape is captured on first use, so pad batches to a fixed length (data.pad_to_multiple_of
    or max_length) to keep the number of graphs small. Wrap the plain CompletionLossModel, not
    DDP (its gradient hooks cannot be captured): on several processes the loop syncs with
    training.parallel.all_reduce_gradients after the step's backward (train.distributed allreduce).
    """

    def __init__(self, loss_model: CompletionLossModel, max_supervised_per_row: int = 16) -> None:
        self.model = loss_model.model
        self.params = lora_parameters(self.model)
        self.per_row = max_supervised_per_row
        self.graphs: dict[tuple[int, int], Any] = {}

    def train(self, mode: bool = True) -> "CudaGraphLoss":
        """Set the model's mode (captured graphs keep the mode they were captured in: training)."""
        self.model.train(mode)
        return self

    def eval(self) -> "CudaGraphLoss":
        return self.train(False)

    def _inputs(self, input_ids: torch.Tensor, labels: torch.Tensor):
        rows, length = input_ids.shape
        nxt = labels[:, 1:]
        mask = nxt != IGNORE_INDEX
        counts = mask.sum(1)
        if int(counts.max()) > self.per_row:
            raise ValueError(f"a row has {int(counts.max())} supervised tokens, more than the "
                             f"{self.per_row} the CUDA graph was sized for")
        k = rows * self.per_row
        b, t = mask.nonzero(as_tuple=True)
        positions = torch.zeros(k, dtype=torch.long, device=input_ids.device)
        targets = torch.zeros(k, dtype=torch.long, device=input_ids.device)
        weights = torch.zeros(k, dtype=torch.float32, device=input_ids.device)
        n = b.numel()
        positions[:n] = b * length + t
        targets[:n] = nxt[b, t]
        weights[:n] = 1.0
        return (input_ids, positions, targets, weights), counts.sum()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        args, n_tok = self._inputs(input_ids, labels)
        # A replay rewrites the graph's static gradient buffers, and autograd may have stolen
        # those very buffers as the parameters' .grad on the last call: with gradient
        # accumulation the next replay would overwrite the gradient summed so far. Own a copy.
        for p in self.params:
            if p.grad is not None:
                p.grad = p.grad.clone()
        key = tuple(input_ids.shape)
        if key not in self.graphs:
            # A fresh wrapper per shape: make_graphed_callables replaces the forward of what it captures.
            # Its sample arguments become the graph's static inputs, into which every later call's
            # arguments are copied: capture on private copies, or the caller's first batch would be
            # overwritten by each later one.
            self.graphs[key] = torch.cuda.make_graphed_callables(
                StaticCompletionLoss(self.model), tuple(a.clone() for a in args), num_warmup_iters=3)
        return self.graphs[key](*args), n_tok


def compile_decoder_layers(model: nn.Module, **options: Any) -> int:
    """torch.compile every decoder layer of a causal LM in place (regional compilation); returns how many.

    A large-batch QLoRA step is GPU-bound, and much of its GPU time is neither matmul nor
    dequantization (bench/RESULTS.md has the profile): RMSNorm's float32 round trip, rotary embedding, SiLU(gate) * up,
    residual additions, LoRA's cast to float32 and back, dropout and scaling, each a separate
    kernel reading and writing a (tokens x 4096) tensor, forward and backward. Inductor fuses
    each run of them into one kernel; the 4-bit matmuls (bitsandbytes' custom ops) stay as
    they are, with no graph break.

    Per layer, not the whole model: the layers run the same code, so one compilation serves
    all of them (one compile, not one per layer), and the loss, head and embeddings stay eager.
    `Module.compile` keeps parameter names, so lora_layers, save_adapter and checkpoints see
    the plain model. It composes with CudaGraphLoss (the compiled kernels are captured like any
    others; compilation happens in its warm-up) and with gradient checkpointing. A new batch
    shape or grad mode compiles once more (then shapes are dynamic); generation would recompile
    at every length, so run it under `torch.compiler.set_stance("force_eager")`, as train.py's
    validation price metric does. `options` go to torch.compile (backend="aot_eager" checks tracing cheaply).
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ConfigError(f"train.compile: found no decoder layers in {type(model).__name__} "
                          "(expected model.get_decoder().layers)")
    trace_scoped_side_effects_under_checkpointing()
    for layer in layers:
        layer.compile(**options)
    return len(layers)
