"""resolve_model: local folders and hub ids pass through; missing paths and unknown names fail clearly."""
from pathlib import Path

import pytest

from quant import ModelError, resolve_model


def test_existing_local_folder_passes_through_unchanged(tiny_llama_dir):
    assert resolve_model(str(tiny_llama_dir)) == str(tiny_llama_dir)
    assert resolve_model(tiny_llama_dir) == str(tiny_llama_dir)  # a Path works too


def test_hub_ids_pass_through():
    assert resolve_model("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    # The original release is not swapped for the embedded (Q4_1-derived) copy.
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("missing", ["./no-such-model", "/definitely/not/here", "~/no-such-model", "a/b/c"])
def test_missing_local_path_is_a_clear_one_line_error(missing):
    with pytest.raises(ModelError, match="no model folder at") as info:
        resolve_model(missing)
    assert "\n" not in str(info.value) and "smollm2-135m" in str(info.value)


def test_unknown_bare_name_lists_what_would_work():
    with pytest.raises(ModelError, match=r"unknown model name 'smollm3'.*org/name.*smollm2-135m"):
        resolve_model("smollm3")


def test_folder_without_config_and_plain_file_are_rejected(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(weights)


def test_embedded_name_provisions_into_pricer_cache(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr("quant.resolve.provision_smollm2", lambda: calls.append(1) or tmp_path / "x")
    assert resolve_model("SmolLM2-135M") == str(Path(tmp_path / "x"))
    assert calls == [1]
