"""Load a frozen base model in 4-bit, 8-bit or 16-bit through transformers' BitsAndBytesConfig.

Placement: with `device=None` every process puts the WHOLE model on its own device
(accelerate's PartialState: cuda:LOCAL_RANK under `accelerate launch`/torchrun, the one GPU
otherwise, CPU when there is none). That is what data-parallel QLoRA needs: each rank holds a
full quantized replica and only the LoRA gradients are all-reduced. bitsandbytes runs 4-bit and
8-bit on CPU too (slowly), which is what the tests and the CPU demo use.

What stays unquantized: transformers never converts the output embedding (lm_head, tied or not)
nor nn.Embedding layers, so embeddings and head stay in `compute_dtype`; so do norms.

Tokenizer: the pad token is set to EOS when the tokenizer has none (Llama 3, the test fixtures),
and padding_side is "right", which is what causal-LM training wants (positions of real tokens
start at 0 and labels align with inputs). Callers that generate in batches set "left" themselves.
Because pad may equal EOS, collators must build labels by construction, never by masking pad ids.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from quant.exceptions import ModelError
from quant.memory import format_memory_report, memory_report
from quant.peak_memory import PeakMemory
from quant.resolve import is_local, resolve_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from quant.layerwise import OnUnit

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32, "uint8": torch.uint8}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name as written in a YAML config ("bfloat16", "bf16", ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).removeprefix("torch.") not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[str(dtype).removeprefix("torch.")]


def default_device() -> torch.device:
    """This process's device: its own GPU under Accelerate/torchrun, the GPU if there is one, else CPU."""
    from accelerate import PartialState

    device = PartialState().device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def check_bitsandbytes(bits: int, device: torch.device, compute_dtype: torch.dtype,
                       quant_type: str = "nf4") -> None:
    """Raise ModelError unless bitsandbytes imports and can quantize on `device` right now."""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as F
    except Exception as e:  # a broken native library raises more than ImportError
        raise ModelError(f"{bits}-bit loading needs bitsandbytes, which failed to import ({_first_line(e)}); "
                         "run `pip install 'bitsandbytes>=0.50,<0.51'` or load with bits=16") from e
    try:
        probe = torch.randn(64, 64, device=device, dtype=compute_dtype)
        if bits == 4:
            F.dequantize_4bit(*F.quantize_4bit(probe, quant_type=quant_type))
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False).to(device)
            layer(probe)
    except Exception as e:
        raise ModelError(f"bitsandbytes {bnb.__version__} cannot run {bits}-bit on {device} ({_first_line(e)}); "
                         "use a CUDA GPU or CPU with bitsandbytes>=0.50, or load with bits=16") from e


def load_base_model(name_or_path: str, bits: int = 4, quant_type: str = "nf4", double_quant: bool = True,
                    compute_dtype: torch.dtype | str = torch.bfloat16, device: torch.device | str | None = None,
                    quant_storage: torch.dtype | str | None = None, trust_remote_code: bool = False,
                    verbose: bool = True, layerwise: bool = False,
                    on_unit: OnUnit | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer): the model frozen, in eval mode, quantized to `bits` on one device.

    `quant_storage` sets bnb_4bit_quant_storage: leave None (uint8) for DDP; set it to the
    compute dtype under FSDP, which can only shard parameters that share one dtype.
    `layerwise` (4-bit only) reads and quantizes the checkpoint tensor by tensor
    (quant/layerwise.py): bitwise the same model, without ever holding it in 16 bits; a local folder
    without safetensors weights loads through from_pretrained as before.
    `on_unit` (quant.layerwise.OnUnit) is handed each of its units once the unit is real: while the
    model is built layer by layer, or, loaded whole (from_pretrained), one after the other after the
    load; either way before this returns. FSDP2 shards there (training.parallel.ShardWhileLoading).
    """
    from transformers import BitsAndBytesConfig

    if bits not in (4, 8, 16):
        raise ModelError(f"bits must be 4, 8 or 16, not {bits!r}")
    if layerwise and bits != 4:
        raise ModelError(f"layerwise loading builds 4-bit models only, not {bits}-bit; drop layerwise or use bits=4")
    if quant_type not in ("nf4", "fp4"):
        raise ModelError(f"quant_type must be 'nf4' or 'fp4', not {quant_type!r}")
    compute_dtype = as_dtype(compute_dtype)
    path = resolve_model(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    quantization_config = None
    if bits == 4:
        check_bitsandbytes(4, device, compute_dtype, quant_type)
        quantization_config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=as_dtype(quant_storage) if quant_storage is not None else torch.uint8)
    elif bits == 8:
        check_bitsandbytes(8, device, compute_dtype)
        quantization_config = BitsAndBytesConfig(load_in_8bit=True)
    tokenizer = load_tokenizer(path, trust_remote_code)
    # a local folder of .bin weights cannot be read tensor by tensor: from_pretrained reads it as before
    layerwise = layerwise and (not is_local(path) or any(Path(path).glob("model*.safetensors*")))
    with PeakMemory(device) as peak:
        try:
            load = _load_layerwise if layerwise else _load_whole
            model = load(path, compute_dtype, quantization_config, device, trust_remote_code, on_unit)
        except OSError as e:
            raise ModelError(_fetch_error(path, e)) from e
    for cfg in (model.config, model.generation_config):
        if cfg is not None and cfg.pad_token_id is None:
            cfg.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.eval()
    if verbose:
        print(f"loaded {name_or_path} ({bits}-bit{' ' + quant_type if bits == 4 else ''}"
              f"{', layer by layer' if layerwise else ''}) on {device}; "
              + format_memory_report(memory_report(model)) + f"; while loading: {peak.summary()}", file=sys.stderr)
    return model, tokenizer


def _load_whole(path: str, dtype: torch.dtype, config, device: torch.device, trust_remote_code: bool,
                on_unit: OnUnit | None) -> PreTrainedModel:
    """transformers' from_pretrained onto `device`; then, frozen, each of on_unit's units handed over in turn."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=config,
                                                 device_map={"": str(device)}, trust_remote_code=trust_remote_code)
    if on_unit is not None:
        model.requires_grad_(False)
        for unit in on_unit.units(model):
            on_unit(model, unit)
    return model


def _load_layerwise(path: str, dtype: torch.dtype, config, device: torch.device, trust_remote_code: bool,
                    on_unit: OnUnit | None) -> PreTrainedModel:
    """quant.layerwise's tensor-by-tensor 4-bit load of a folder or hub id (fetched first: json and safetensors)."""
    from quant.layerwise import Quant4bit, load_4bit_layerwise

    if not is_local(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, allow_patterns=["*.json", "*.safetensors"])
    quant = Quant4bit(config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant, config.bnb_4bit_compute_dtype,
                      config.bnb_4bit_quant_storage)
    return load_4bit_layerwise(path, device, quant, trust_remote_code, on_unit)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of `path` with a pad token (EOS when it has none) and right padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(_fetch_error(path, e)) from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {path} has neither a pad nor an EOS token; add one to "
                             "its tokenizer_config.json (and resize the embeddings) before training")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _fetch_error(path: str, error: Exception) -> str:
    """One line explaining why a folder or hub id could not be read, and what to use instead."""
    if is_local(path):
        return f"cannot load the model in {path} ({_first_line(error)}); is it a complete Hugging Face checkpoint?"
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    return (f"cannot fetch {path!r} from the Hugging Face hub{offline}: hub unreachable, model gated, no such id, "
            f"or a local folder that does not exist ({_first_line(error)}); "
            "use the embedded 'smollm2-135m' or an existing checkpoint folder")


def _first_line(error: Exception) -> str:
    """The first non-empty line of an exception message, so errors stay one line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__
