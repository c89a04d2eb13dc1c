"""Get a frozen k-bit base ready for adapter training (our peft-free prepare_model_for_kbit_training)."""
from __future__ import annotations

import torch
from torch import nn

from quant.memory import quantized_linear_types
from utils.compat import disable_cpu_4bit_repacking

_HALF = (torch.float16, torch.bfloat16)


def prepare_for_kbit_training(model: nn.Module, gradient_checkpointing: bool = False, *,
                              upcast_embeddings: bool = False, upcast_norms: bool = True) -> nn.Module:
    """Freeze the base, keep small 16-bit params in fp32, optionally checkpoint activations; returns `model`.

    What it does, and where it differs from peft 0.21's `prepare_model_for_kbit_training`:

    1. Freezes every parameter (as peft does); adapters added afterwards are the only trainables.
    2. On a model with bitsandbytes linears, casts the fp16/bf16 parameters that are neither
       quantized nor the token embedding / output head to fp32: in a Llama these are the
       RMSNorm weights. A norm's output is `weight * normalized(x)`, so an fp32 weight makes the
       output, and through the residual additions the whole residual stream, fp32; every
       quantized linear casts its input to compute_dtype itself, so the matmuls stay fast while
       the additions that accumulate across layers do not lose bf16's 8 mantissa bits each time.
       That is what keeps k-bit training stable, and it costs a few KB per layer.
       peft casts ALL non-4-bit 16-bit params, embeddings and lm_head included: on Llama 3.1 8B
       that is 1.05B frozen parameters going from 2 to 4 bytes (+2.1 GB) to gain nothing for
       stability (transformers' loss upcasts the logits to fp32 anyway). We keep them in
       compute_dtype and cast the head's (fp32) input to its dtype with a forward pre-hook, so the
       model also runs without autocast. `upcast_embeddings=True` gives peft's behaviour exactly.
       On a 16-bit model (no quantized linears) nothing is cast: fp32 norms would feed fp32
       activations into bf16 nn.Linear layers, and plain LoRA on a bf16 base does not need it.
       `upcast_norms=False` skips this step: FSDP flattens a layer's parameters into one tensor
       of one dtype, so a sharded layer keeps its norms in the dtype its 4-bit weights are stored in.
    3. With `gradient_checkpointing`, enables non-reentrant activation checkpointing. Non-reentrant
       checkpointing needs no input that requires grad, but transformers 5 hooks the input
       embeddings to require grad anyway; we make sure that hook exists on any version, so
       switching to the reentrant variant still trains. peft enables it only for reentrant.
    4. Sets `config.use_cache = False`: a KV cache is useless in training and incompatible with
       checkpointing (generate() still reads use_cache from the generation config).
    5. Turns off bitsandbytes' AVX512-BF16 repacking of 4-bit weights on CPU (its kernel has no
       backward; see the comment at the end).
    """
    model.requires_grad_(False)
    quantized = quantized_linear_types()
    if upcast_norms and quantized and any(isinstance(m, quantized) for m in model.modules()):
        big = set() if upcast_embeddings else {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
        for module in model.modules():
            if isinstance(module, quantized) or id(module) in big:
                continue
            for param in module.parameters(recurse=False):
                if param.dtype in _HALF:
                    param.data = param.data.float()
        head = model.get_output_embeddings()
        if not upcast_embeddings and head is not None and not hasattr(head, "_pricer_cast_hook"):
            head._pricer_cast_hook = head.register_forward_pre_hook(_cast_input_to_weight_dtype)
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if not getattr(model, "_require_grads_hooks", None):
            model.enable_input_require_grads()
    # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster kernel the first
    # time the layer runs in eval mode without grad (a validation pass) and keeps it so; that
    # kernel has no backward, so every later training step would silently lose the gradient
    # through the base layers. A model prepared for training keeps the trainable layout.
    disable_cpu_4bit_repacking(model)
    model.config.use_cache = False
    return model


def _cast_input_to_weight_dtype(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the fp32 residual stream meets a 16-bit head in the head's dtype."""
    return (args[0].to(module.weight.dtype), *args[1:])
