"""The embedded models as a revision of their own in the Hugging Face cache, so that tools which know only a
hub id (peft's AutoPeftModelForCausalLM above all) find the base an adapter was trained on, offline.

    python -m quant.hf_cache [smollm2-135m|gemma3-270m]    # prints the embedded folder and its cache revision

An adapter trained on an embedded model names the release's hub id (HuggingFaceTB/SmolLM2-135M-Instruct)
as its base, and with it `"revision": REVISION`, a 40-hex name derived from the pinned GGUF. Here that
revision is a snapshot in the Hugging Face cache whose files are hard links to the embedded folder's (no
second copy on disk, and deleting the revision leaves pricer's files), with a ref
named `pricer-embedded` beside it, so `huggingface-cli scan-cache` shows it for what it is. transformers
reads a snapshot named by a commit-like revision straight from the cache, without asking the hub, so
AutoPeftModelForCausalLM.from_pretrained(adapter) loads the converted base with the hub out of reach.

Why a revision and not the hub's own name: the embedded copy is de-quantized from a 4-bit GGUF, close to
but not the release's bf16 files. Registering it as the repository's `main` would hand it to every program
that asks for the release; a revision of its own is asked for only by the adapters trained on it. The
hub has no such revision, so on a machine without pricer's copy the adapter's base is not found (pass
the base explicitly there: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ID), ADAPTER)`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from quant.embedded import EMBEDDED, EmbeddedModel, cache_dir, embedded_named, provision

REF = "pricer-embedded"


def revision(model: EmbeddedModel) -> str:
    """The cache revision of `model`'s embedded copy: 40 hex digits from its hub id and pinned GGUF sha256."""
    return hashlib.sha1(f"pricer embedded {model.hub_id} {model.gguf_sha256}".encode()).hexdigest()


def revision_of_folder(folder: str | os.PathLike | None) -> str | None:
    """The cache revision when `folder` is an embedded model's provisioned folder, else None."""
    if not folder:
        return None
    path = Path(folder).expanduser()
    for model in EMBEDDED:
        target = cache_dir() / model.folder
        if path == target or (path.exists() and target.exists() and path.resolve() == target.resolve()):
            return revision(model)
    return None


def repo_folder(model: EmbeddedModel) -> Path:
    """`model`'s repository folder in the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + model.hub_id.replace("/", "--"))


def register(model: EmbeddedModel, folder: Path) -> Path:
    """Make the snapshot of `model`'s revision link to the files of `folder` (once); return the snapshot."""
    repo = repo_folder(model)
    snapshot = repo / "snapshots" / revision(model)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if snapshot.is_dir() and all(_same(snapshot / f.name, f) for f in files):
        return snapshot
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=snapshot.parent, prefix=".pricer-tmp-"))
    try:
        tmp.chmod(0o755)   # mkdtemp's 0700 would hide the snapshot from other users of a shared cache
        for f in files:
            _link(f, tmp / f.name)
        if snapshot.is_dir():   # links to a folder that has moved (PRICER_CACHE changed): only links go
            shutil.rmtree(snapshot)
        os.replace(tmp, snapshot)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (repo / "refs" / REF).write_text(revision(model))
    return snapshot


def _link(source: Path, link: Path) -> None:
    """A hard link (deleting the revision with `huggingface-cli delete-cache` then leaves pricer's files alone);
    a symbolic one where the two caches are on different file systems."""
    try:
        os.link(source, link)
    except OSError:
        os.symlink(source.resolve(), link)


def _same(link: Path, source: Path) -> bool:
    """Whether `link` is (a link to) the file `source`."""
    try:
        return os.path.samefile(link, source)
    except OSError:
        return False


def register_quietly(model: EmbeddedModel, folder: Path) -> None:
    """register(), with a one-line note instead of an error when the Hugging Face cache cannot be written."""
    try:
        register(model, folder)
    except OSError as e:
        print(f"note: could not register {folder} in the Hugging Face cache ({e}); peft will not find "
              f"{model.hub_id} offline: run python -m quant.hf_cache once the cache is writable", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Provision and register the named embedded model (default smollm2-135m); print its folder and revision."""
    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else "smollm2-135m"
    model = embedded_named(name)
    if model is None or len(args) > 1:
        names = ", ".join(m.names[0] for m in EMBEDDED)
        print(f"error: usage: python -m quant.hf_cache [NAME], NAME one of {names}", file=sys.stderr)
        return 2
    folder = provision(model)
    snapshot = register(model, folder)
    print(f"{model.names[0]}: folder {folder}\n  Hugging Face cache: {model.hub_id} revision {revision(model)} "
          f"(ref {REF}) -> {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
