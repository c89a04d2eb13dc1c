"""resolve_model: local folders and hub ids pass through; missing paths and unknown names fail clearly."""
from pathlib import Path

import pytest

from quant import ModelError, resolve_model


def test_existing_local_folder_passes_through_unchanged(tiny_llama_dir):
    assert resolve_model(str(tiny_llama_dir)) == str(tiny_llama_dir)
    assert resolve_model(tiny_llama_dir) == str(tiny_llama_dir)  # a Path works too


def test_hub_ids_pass_through():
    assert resolve_model("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"


def test_the_embedded_models_hub_id_is_the_cached_original_else_the_embedded_copy(monkeypatch, tmp_path):
    """Adapters name HuggingFaceTB/SmolLM2-135M-Instruct so that other tools find their base; pricer
    takes the original from the Hugging Face cache when it is there, else the embedded copy, and
    never starts a download."""
    from huggingface_hub import constants

    from quant import canonical_name

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("quant.resolve.provision", lambda model: tmp_path / model.folder)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == str(tmp_path / "smollm2-135m-instruct")
    assert resolve_model("google/gemma-3-270m") == str(tmp_path / "gemma-3-270m")
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == str(snapshot)
    assert canonical_name("smollm2-135m") == canonical_name("SmolLM2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert canonical_name("gemma3-270m") == canonical_name("Gemma-3-270M") == "google/gemma-3-270m"
    assert canonical_name("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    assert resolve_model("google/gemma-3-270m-it") == "google/gemma-3-270m-it"   # not embedded: passes through


@pytest.mark.parametrize("missing", ["./no-such-model", "/definitely/not/here", "~/no-such-model", "a/b/c"])
def test_missing_local_path_is_a_clear_one_line_error(missing):
    with pytest.raises(ModelError, match="no model folder at") as info:
        resolve_model(missing)
    assert "\n" not in str(info.value) and "smollm2-135m" in str(info.value)


def test_unknown_bare_name_lists_what_would_work():
    with pytest.raises(ModelError, match=r"unknown model name 'smollm3'.*org/name.*'smollm2-135m' or 'gemma3-270m'"):
        resolve_model("smollm3")


def test_folder_without_config_and_plain_file_are_rejected(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(weights)


@pytest.mark.parametrize("name, folder", [("SmolLM2-135M", "smollm2-135m-instruct"), ("gemma3-270m", "gemma-3-270m"),
                                          ("Gemma-3-270M", "gemma-3-270m")])
def test_embedded_name_provisions_into_pricer_cache(monkeypatch, tmp_path, name, folder):
    calls = []
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr("quant.resolve.provision", lambda model: calls.append(model.folder) or tmp_path / model.folder)
    assert resolve_model(name) == str(Path(tmp_path / folder))
    assert calls == [folder]
