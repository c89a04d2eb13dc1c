"""Write a merged Llama checkpoint folder as one GGUF file for llama.cpp and Ollama.

    merged folder (config.json, *.safetensors, tokenizer) -> <folder>/model-<f16|q8_0>.gguf

It follows what llama.cpp's convert_hf_to_gguf.py does for a Llama (LlamaModel and its base
TextModel), with the `gguf` package's writer, constants and tensor-name map:
- metadata: the `llama.*` hyper-parameters and general.file_type;
- tensors: HF names mapped to llama.cpp's (blk.N.attn_q, ...); norms and other 1-D tensors stay
  float32; 2-D weights become f16 or q8_0 (f16 where a row is not a whole number of q8_0 blocks);
- the rows of q_proj and k_proj permuted per head, because llama.cpp's Llama rotates consecutive
  pairs of a head's dimensions while transformers rotates its two halves (transformers' GGUF
  loader undoes this permutation);
- Llama 3.1's "llama3" RoPE scaling written as the rope_freqs tensor of per-frequency divisors;
- the tokenizer as "gpt2" (byte-level BPE): tokens, token types, merges, special ids, whether BOS
  and EOS are added, the chat template, and `tokenizer.ggml.pre`, the name of llama.cpp's
  pre-tokenizer that splits text as the HF tokenizer does. llama.cpp's script guesses that name
  from a hash of sample tokenizations; here it is read from the HF pre-tokenizer itself, and a
  shape llama.cpp has no name for is refused rather than written with the wrong splits.

Tensors are converted and written one at a time, so memory holds one tensor beyond the writer's
metadata, whatever the model's size.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The GGUF types offered: llama.cpp's f16 (2-D weights in half precision) and q8_0 (8-bit codes, a scale per 32).
GGUF_KINDS = ("f16", "q8_0")
# Llama 3's pre-tokenizer regex, which llama.cpp calls "llama-bpe" (llama-vocab.cpp).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# HF pre-tokenizer steps -> llama.cpp's name for the same splits (llama-vocab.cpp's regex lists):
# "gpt-2" is GPT-2's regex; "smollm" splits every digit off first, then GPT-2's regex.
PRE_TOKENIZERS = {
    (("ByteLevel", True),): "gpt-2",
    (("Digits", True), ("ByteLevel", True)): "smollm",
    (("Split", LLAMA3_SPLIT), ("ByteLevel", False)): "llama-bpe",
}


class ExportError(ValueError):
    """A model that cannot be written as GGUF as asked (one line: what is wrong, what to do instead)."""


def check_gguf_support(config: Any, tokenizer: Any = None) -> None:
    """Raise ExportError unless this config (and tokenizer, when given) can be written as a Llama GGUF."""
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    if config.model_type != "llama":
        raise ExportError(f"GGUF export writes Llama-architecture models; this base is {config.model_type} "
                          f"({architecture}): export without --gguf and convert the folder with llama.cpp's "
                          "convert_hf_to_gguf.py")
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type not in ("default", "llama3"):
        raise ExportError(f"GGUF export handles default and llama3 RoPE, this model uses {rope_type!r}: export "
                          "without --gguf and convert the folder with llama.cpp's convert_hf_to_gguf.py")
    if tokenizer is not None:
        pre_tokenizer_name(tokenizer)


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's tokenizer.ggml.pre for this HF tokenizer; ExportError unless a byte-level BPE llama.cpp knows."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    steps = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or [spec.get("pre_tokenizer") or {}]
    shape = tuple(_step(s) for s in steps)
    if spec["model"]["type"] != "BPE" or spec.get("normalizer") is not None or shape not in PRE_TOKENIZERS:
        raise ExportError(f"GGUF export writes byte-level BPE tokenizers split as GPT-2, SmolLM or Llama 3 split "
                          f"text; this one is {spec['model']['type']} with pre-tokenizer {shape} and normalizer "
                          f"{(spec.get('normalizer') or {}).get('type')}: convert the folder with llama.cpp's "
                          "convert_hf_to_gguf.py")
    return PRE_TOKENIZERS[shape]


def _step(step: dict) -> tuple:
    """One pre-tokenizer step as the fields that decide how it splits text."""
    kind = step.get("type")
    if kind == "ByteLevel":
        # add_prefix_space would put a space before the text, which llama.cpp's gpt2 vocabulary never does.
        return (kind, step.get("use_regex", True)) + (("add_prefix_space",) if step.get("add_prefix_space") else ())
    if kind == "Digits":
        return (kind, step.get("individual_digits", False))
    if kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
        return (kind, step["pattern"].get("Regex"))
    return (kind,)


def write_gguf(folder: str | os.PathLike, kind: str, path: str | os.PathLike | None = None,
               name: str | None = None) -> Path:
    """Write the Llama checkpoint in `folder` as GGUF (`kind` f16 or q8_0) to path, default folder/model-<kind>.gguf."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    if kind not in GGUF_KINDS:
        raise ExportError(f"unknown GGUF type {kind!r}: use one of {', '.join(GGUF_KINDS)}")
    folder = Path(folder)
    path = Path(path) if path is not None else folder / f"model-{kind}.gguf"
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_gguf_support(config, tokenizer)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hyperparameters(writer, config, kind, name or folder.name)
        _add_tokenizer(writer, tokenizer, config.vocab_size)
        plan = list(_tensor_plan(folder, config, kind))
        for name, _, qtype, shape, _ in plan:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), _nbytes(shape, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, _, qtype, _, load in plan:
            writer.write_tensor_data(gguf.quants.quantize(load(), qtype))
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)
        raise
    writer.close()
    return path


def _rope(config: Any) -> dict:
    """The config's RoPE parameters (transformers 5's rope_parameters, else the older rope_theta/rope_scaling)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return params


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _add_hyperparameters(writer: Any, config: Any, kind: str, name: str) -> None:
    """The llama.* keys llama.cpp's LlamaModel writes, and the general.* ones that describe the file."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """The tokenizer.ggml.* keys of llama.cpp's gpt2 vocabulary, read from the HF tokenizer."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    tokens, types = _tokens(tokenizer, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    # tokenizers writes a merge as "a b" (older files) or ["a", "b"]; GGUF stores the string form.
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    # Whether BOS/EOS are added is what the tokenizer does, not what a config flag says: ask it.
    plain, full = tokenizer.encode("a", add_special_tokens=False), tokenizer.encode("a")
    writer.add_add_bos_token(len(full) > len(plain) and full[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(len(full) > len(plain) and full[-1] == tokenizer.eos_token_id)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def _tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp token type, as convert_hf_to_gguf.py's get_vocab_base assigns them."""
    from gguf import TokenType

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(f"the tokenizer has token id {max(by_id)} but the model only {vocab_size} embeddings: "
                          "resize the embeddings to the tokenizer before exporting")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # an embedding row no token uses (vocabularies padded to a round size)
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        token = by_id[i]
        tokens.append(token)
        if i not in added:
            types.append(TokenType.NORMAL)
        elif added[i].special or (token.startswith("<|") and token.endswith("|>")):
            types.append(TokenType.CONTROL)
        else:
            types.append(TokenType.USER_DEFINED)
    return tokens, types


def _tensor_plan(folder: Path, config: Any, kind: str) -> Iterator[tuple[str, str, Any, tuple, Any]]:
    """(GGUF name, HF name, tensor type, shape, loader) of every tensor, in the checkpoint's order."""
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder} holds no .safetensors weights: write it with export_merged first")
    for file in files:
        with safe_open(file, "pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        for key, shape in shapes.items():
            target = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ExportError(f"{file.name} holds {key}, which a Llama GGUF has no place for: "
                                  "convert the folder with llama.cpp's convert_hf_to_gguf.py")
            yield target, key, _tensor_type(target, shape, kind), shape, _loader(file, key, config)
    factors = rope_factors(config)
    if factors is not None:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        yield name, "", gguf.GGMLQuantizationType.F32, tuple(factors.shape), lambda: factors.numpy()


def _tensor_type(name: str, shape: tuple, kind: str) -> Any:
    """llama.cpp's choice: float32 for norms and 1-D tensors, else the asked type (f16 if q8_0 blocks do not fit)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return T.F32
    if kind == "q8_0" and shape[-1] % GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return T.Q8_0
    return T.F16


def _nbytes(shape: tuple, qtype: Any) -> int:
    """Bytes of a tensor of this shape stored as qtype."""
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape[:-1]) * (shape[-1] // block) * size


def _loader(file: Path, key: str, config: Any):
    """A function that reads one tensor as float32 numpy, q/k rows permuted for llama.cpp's RoPE."""
    def load() -> np.ndarray:
        from safetensors import safe_open

        with safe_open(file, "pt") as f:
            tensor = f.get_tensor(key).float()
        if ".q_proj." in key:
            tensor = permute_for_rope(tensor, config.num_attention_heads)
        elif ".k_proj." in key:
            tensor = permute_for_rope(tensor, config.num_key_value_heads)
        return tensor.numpy()
    return load


def permute_for_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from (first half, second half) to interleaved pairs (llama.cpp's LlamaModel.permute)."""
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def rope_factors(config: Any) -> torch.Tensor | None:
    """Llama 3.1's per-frequency RoPE divisors (llama.cpp's rope_freqs tensor), or None for plain RoPE."""
    rope = _rope(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim = _head_dim(config)
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    context = rope.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freqs
    # Long wavelengths are slowed by `factor`, short ones kept, and the band between interpolated.
    smooth = (context / wavelen - low) / (high - low)
    middle = 1 / ((1 - smooth) / factor + smooth)
    factors = torch.where(wavelen < context / high, torch.ones_like(freqs),
                          torch.where(wavelen > context / low, torch.full_like(freqs, factor), middle))
    return factors.float()
