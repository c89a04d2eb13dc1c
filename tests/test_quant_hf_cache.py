"""quant.hf_cache: peft's AutoPeftModelForCausalLM loads a pricer adapter with the hub out of reach, on the
embedded base it was trained on (registered as a revision of its own), with no pricer code; the README's
peft snippet runs as written."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora import LoRAConfig, inject_lora, load_adapter, save_adapter
from quant.embedded import SMOLLM2
from quant.hf_cache import REF, main, register, revision, revision_of_folder

REPO = Path(__file__).resolve().parent.parent
TEXT = "How much does this cost to the nearest dollar?\n\nCordless drill with two batteries.\n\nPrice is $"
# Run as a program of its own: peft and transformers only, the hub out of reach.
LOGITS = """
import torch
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(model.peft_config["default"].base_model_name_or_path,
                                          revision=model.peft_config["default"].revision)
with torch.no_grad():
    logits = model.float()(input_ids=torch.tensor([tokenizer.encode(TEXT)])).logits[0, -1]
torch.save(logits, OUT)
"""


def offline_env(hub: Path, flag: bool) -> dict[str, str]:
    """An environment whose Hugging Face cache is `hub` and whose hub cannot be reached (HF_HUB_OFFLINE, or a dead
    endpoint)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(hub), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2",
               HF_HUB_DOWNLOAD_TIMEOUT="2")
    if flag:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def peft_logits(code: str, cwd: Path, env: dict[str, str], tmp: Path) -> torch.Tensor:
    """Run `code` (which defines `model`) with LOGITS after it in a fresh python; the last position's logits."""
    out = tmp / "logits.pt"
    program = f"TEXT = {TEXT!r}\nOUT = {str(out)!r}\n{code}\n{LOGITS}"
    proc = subprocess.run([sys.executable, "-c", program], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


def pricer_logits(base: Path, adapter: Path) -> torch.Tensor:
    """The same position's logits from pricer's own loading of base + adapter (float32, unmerged)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    load_adapter(model, adapter)
    with torch.no_grad():
        ids = torch.tensor([AutoTokenizer.from_pretrained(base).encode(TEXT)])
        return model.eval()(input_ids=ids).logits[0, -1]


@pytest.fixture
def fake_embedded(tiny_llama_dir, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A tiny Llama standing in for the embedded SmolLM2 in PRICER_CACHE, and an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("PRICER_CACHE", str(tmp_path / "pricer"))
    folder = tmp_path / "pricer" / SMOLLM2.folder
    shutil.copytree(tiny_llama_dir, folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return folder, tmp_path / "hub"


@pytest.mark.peft_parity
@pytest.mark.parametrize("flag", [True, pytest.param(False, marks=[pytest.mark.slow, pytest.mark.hub_retries])],
                         ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_peft_finds_the_embedded_base_offline(fake_embedded, tmp_path, flag):
    """An adapter saved from a model loaded off the embedded folder names the hub id and the embedded revision;
    AutoPeftModelForCausalLM loads it on that folder, as pricer does, with no network. Unreachable without
    HF_HUB_OFFLINE, huggingface_hub retries each lookup with backoff first (about 3 minutes here): that variant
    runs with `pytest -m hub_retries`."""
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from quant import resolve_model

    folder, hub = fake_embedded
    assert Path(resolve_model("smollm2-135m")) == folder      # resolving registers it
    snapshot = hub / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / revision(SMOLLM2)
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert all(os.path.samefile(p, folder / p.name) for p in snapshot.iterdir())   # linked, not copied
    assert (snapshot.parent.parent / "refs" / REF).read_text() == revision(SMOLLM2)
    assert not (snapshot.parent.parent / "refs" / "main").exists()   # the release's own name is left alone
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    inject_lora(model, LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    adapter = save_adapter(model, tmp_path / "adapter", base_model_name_or_path=SMOLLM2.hub_id)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (SMOLLM2.hub_id, revision(SMOLLM2))
    code = f"from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained({str(adapter)!r})"
    got = peft_logits(code, tmp_path, offline_env(hub, flag), tmp_path)
    want = pricer_logits(folder, adapter)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item(), rtol=0)


def test_other_bases_get_no_revision(tiny_llama_dir, fake_embedded, tmp_path):
    """A base that is not the embedded folder (the real release, any other model) is named without a revision."""
    from transformers import AutoModelForCausalLM

    folder, _ = fake_embedded
    assert revision_of_folder(folder) == revision(SMOLLM2) and revision_of_folder(tiny_llama_dir) is None
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    inject_lora(model, LoRAConfig(r=2))
    saved = save_adapter(model, tmp_path / "a", base_model_name_or_path=SMOLLM2.hub_id)
    assert json.loads((saved / "adapter_config.json").read_text())["revision"] is None


def test_registering_follows_a_moved_folder_and_prints_where(fake_embedded, tmp_path, capsys):
    """Registering twice keeps one snapshot; a folder moved elsewhere is linked anew; the CLI prints the folder."""
    folder, hub = fake_embedded
    first = register(SMOLLM2, folder)
    assert register(SMOLLM2, folder) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    register(SMOLLM2, moved)
    assert all(os.path.samefile(p, moved / p.name) for p in first.iterdir())
    shutil.rmtree(first)   # as `huggingface-cli delete-cache` does: pricer's own files stay
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in moved.iterdir())
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]   # no temporary folder left
    assert main(["smollm2-135m"]) == 0
    assert f"folder {folder}" in capsys.readouterr().out
    assert main(["no-such-model"]) == 2


def readme_peft_snippet() -> str:
    """The README's python block that loads the shipped adapter with AutoPeftModelForCausalLM."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if 'AutoPeftModelForCausalLM.from_pretrained("adapters/smollm2-135m-pricer")' in b]
    assert len(found) == 1, "README.md should hold one peft snippet for the shipped adapter"
    return found[0]


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.peft_parity
def test_readme_peft_snippet_runs_offline(smollm2_dir, tmp_path):
    """The README's peft snippet, as written, loads the shipped adapter with the hub unreachable, and gives the
    logits of pricer's own loading (16-bit base, float32)."""
    pytest.importorskip("peft")
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE)   # where resolving the embedded model (smollm2_dir) registered it
    assert (hub / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / revision(SMOLLM2)).is_dir()
    got = peft_logits(readme_peft_snippet(), REPO, offline_env(hub, True), tmp_path)
    want = pricer_logits(smollm2_dir, REPO / "adapters" / "smollm2-135m-pricer")
    assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item(), rtol=0)
    assert got.argmax() == want.argmax()
