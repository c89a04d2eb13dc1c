"""save_adapter / load_adapter: peft's file format both ways (marked peft_parity), and every bad-adapter error."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_lora_inject import load, randomize
from transformers import LlamaConfig, LlamaForCausalLM

from lora import AdapterError, LoRAConfig, inject_lora, load_adapter, save_adapter
from lora.inject import lora_layers

IDS = torch.tensor([[1, 5, 9, 40, 77, 3, 120, 200, 12]])


def trained(path, **config):
    """A tiny Llama with a LoRA adapter whose weights are random (as after training)."""
    model = load(path)
    inject_lora(model, LoRAConfig(r=4, alpha=8, **config))
    return randomize(model)


@pytest.mark.peft_parity
@pytest.mark.parametrize("config", [{}, {"use_dora": True}, {"use_rslora": True, "target_modules": "all-linear"},
                                    {"target_modules": r".*\.1\.mlp\.(up|down)_proj", "init": "gaussian"}])
def test_peft_loads_what_pricer_saves(tiny_llama_dir, tmp_path, config):
    pytest.importorskip("peft")
    from peft import PeftModel

    ours = trained(tiny_llama_dir, **config)
    save_adapter(ours, tmp_path / "adapter")
    pm = PeftModel.from_pretrained(load(tiny_llama_dir), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=IDS).logits, ours(input_ids=IDS).logits, atol=1e-5, rtol=0)
    assert sum(hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict) for m in pm.modules()) \
        == len(lora_layers(ours))


@pytest.mark.peft_parity
def test_file_format_is_peft_s(tiny_llama_dir, tmp_path):
    """Same keys, shapes, dtypes and config fields as peft's own save_pretrained."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    ours = trained(tiny_llama_dir, use_dora=True)
    save_adapter(ours, tmp_path / "ours", base_model_name_or_path="org/tiny")
    pm = get_peft_model(load(tiny_llama_dir), LoraConfig(r=4, lora_alpha=8, use_dora=True, task_type="CAUSAL_LM",
                                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    pm.save_pretrained(tmp_path / "peft")
    a = load_file(tmp_path / "ours/adapter_model.safetensors")
    b = load_file(tmp_path / "peft/adapter_model.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in a
    ca = json.loads((tmp_path / "ours/adapter_config.json").read_text())
    cb = json.loads((tmp_path / "peft/adapter_config.json").read_text())
    assert set(ca) == set(cb)
    for key in ("r", "lora_alpha", "lora_dropout", "use_rslora", "use_dora", "peft_type", "task_type", "bias"):
        assert ca[key] == cb[key], key
    assert sorted(ca["target_modules"]) == sorted(cb["target_modules"])
    assert ca["base_model_name_or_path"] == "org/tiny"


@pytest.mark.peft_parity
@pytest.mark.parametrize("config", [
    dict(target_modules=["q_proj", "v_proj"]),
    dict(target_modules=["q_proj", "v_proj"], use_dora=True),
    dict(target_modules="all-linear", use_rslora=True, lora_dropout=0.1),
    dict(target_modules=r".*layers\.0\.mlp\.gate_proj", init_lora_weights="gaussian"),
    dict(target_modules=["k_proj"], init_lora_weights=False),
])
def test_pricer_loads_what_peft_saves(tiny_llama_dir, tmp_path, config):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(load(tiny_llama_dir), LoraConfig(r=4, lora_alpha=16, task_type="CAUSAL_LM", **config))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_magnitude" in n:
                p.add_(0.05 * torch.randn_like(p))
    pm.save_pretrained(tmp_path / "peft")
    ours = load(tiny_llama_dir)
    loaded = load_adapter(ours, tmp_path / "peft")
    assert loaded.r == 4 and loaded.alpha == 16 and loaded.use_dora == config.get("use_dora", False)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=IDS).logits, pm.eval()(input_ids=IDS).logits, atol=1e-5, rtol=0)


def test_round_trip_and_atomic_overwrite(tiny_llama_dir, tmp_path):
    ours = trained(tiny_llama_dir, use_dora=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    save_adapter(ours, out)
    first = load_file(out / "adapter_model.safetensors")
    randomize(ours, seed=5)
    save_adapter(ours, out)  # overwrite in place
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp folders left behind
    second = load_file(out / "adapter_model.safetensors")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    fresh = load(tiny_llama_dir)
    config = load_adapter(fresh, out)
    assert config.use_dora and config.r == 4
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=IDS).logits, ours(input_ids=IDS).logits)


@pytest.fixture
def saved(tiny_llama_dir, tmp_path):
    path = tmp_path / "adapter"
    save_adapter(trained(tiny_llama_dir), path)
    return path


def edit_weights(path, fn):
    tensors = load_file(path / "adapter_model.safetensors")
    fn(tensors)
    save_file(tensors, path / "adapter_model.safetensors")


def edit_config(path, **changes):
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


def _missing_weights(p):
    (p / "adapter_model.safetensors").unlink()


def _only_bin(p):
    (p / "adapter_model.safetensors").rename(p / "adapter_model.bin")


def _corrupt(p):
    (p / "adapter_model.safetensors").write_bytes(b"\x00garbage")


def _bad_json(p):
    (p / "adapter_config.json").write_text("{not json")


def _missing_config(p):
    (p / "adapter_config.json").unlink()


def _drop_key(p):
    edit_weights(p, lambda t: t.pop(f"{Q0}.lora_B.weight"))


def _extra_key(p):
    edit_weights(p, lambda t: t.update({"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight":
                                        torch.zeros(4, 64)}))


def _wrong_rank(p):
    edit_weights(p, lambda t: t.update({f"{Q0}.lora_A.weight": torch.zeros(8, 64)}))


BAD = {
    "missing weights": (_missing_weights, "has no adapter_model.safetensors"),
    "pickle only": (_only_bin, "adapter_model.bin .a pickle., which pricer never loads"),
    "corrupt weights": (_corrupt, "not a readable safetensors file"),
    "bad json": (_bad_json, "adapter_config.json: not valid JSON"),
    "missing config": (_missing_config, "has no adapter_config.json"),
    "missing key": (_drop_key, f"adapter file lacks {Q0}.lora_B.weight"),
    "unexpected key": (_extra_key, "has weights for base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"),
    "wrong rank": (_wrong_rank, f"{Q0}.lora_A.weight has rank 8 but adapter_config.json says r=4"),
    "not lora": (lambda p: edit_config(p, peft_type="IA3"), "peft_type 'IA3', pricer loads only LORA"),
    "lora bias": (lambda p: edit_config(p, lora_bias=True), "peft option lora_bias=True"),
    "modules to save": (lambda p: edit_config(p, modules_to_save=["lm_head"]), "peft option modules_to_save"),
    "rank pattern": (lambda p: edit_config(p, rank_pattern={"q_proj": 8}), "peft option rank_pattern"),
    "pissa": (lambda p: edit_config(p, init_lora_weights="pissa"), "init_lora_weights='pissa'"),
    "other targets": (lambda p: edit_config(p, target_modules=["c_attn"]), "adapter does not fit this base"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_adapter_errors(tiny_llama, saved, case):
    damage, message = BAD[case]
    damage(saved)
    with pytest.raises(AdapterError, match=message) as err:
        load_adapter(tiny_llama, saved)
    assert "\n" not in str(err.value)
    assert not lora_layers(tiny_llama) and not hasattr(tiny_llama, "lora_config")  # model left as it was


def test_adapter_from_other_base_names_hidden_size(tmp_path, tiny_llama):
    other = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=256,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    inject_lora(other, LoRAConfig(r=4))
    save_adapter(other, tmp_path / "big")
    with pytest.raises(AdapterError, match="adapter was trained on a base with hidden size 128, this base has 64"):
        load_adapter(tiny_llama, tmp_path / "big")


def test_missing_folder_and_unsaved_model(tiny_llama, tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter folder"):
        load_adapter(tiny_llama, tmp_path / "nope")
    with pytest.raises(ValueError, match="has no LoRA layers"):
        save_adapter(tiny_llama, tmp_path / "x")


def _write_config(text):
    def damage(p):
        (p / "adapter_config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def _all_nan(p):
    edit_weights(p, lambda t: [v.fill_(float("nan")) for v in t.values()])


def _one_inf(p):
    edit_weights(p, lambda t: t[f"{Q0}.lora_B.weight"].__setitem__((3, 1), float("inf")))


def _int_weights(p):
    edit_weights(p, lambda t: t.update({f"{Q0}.lora_A.weight": t[f"{Q0}.lora_A.weight"].to(torch.int8)}))


def _no_tensors(p):
    save_file({}, p / "adapter_model.safetensors")


CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
# (damage, the file the message must name, what it must say)
NAMED = {
    "all nan": (_all_nan, WEIGHTS, r": base_model\.model\.\S+ holds NaN or infinite values"),
    "one inf": (_one_inf, WEIGHTS, rf": {Q0}\.lora_B\.weight holds NaN or infinite values"),
    "int weights": (_int_weights, WEIGHTS, rf": {Q0}\.lora_A\.weight has dtype torch\.int8"),
    "no tensors": (_no_tensors, WEIGHTS, "holds no LoRA weights"),
    "config list": (_write_config("[]"), CONFIG, "holds a list, not a JSON object"),
    "config string": (_write_config('"x"'), CONFIG, "holds a str, not a JSON object"),
    "config truncated": (_write_config("{"), CONFIG, "not valid JSON"),
    "config not utf-8": (_write_config(b'{"r": "\xff"}'), CONFIG, "not UTF-8 text"),
    "config deep": (_write_config("[" * 100000), CONFIG, r"not valid JSON \(nested too deeply\)"),
    "r text": (lambda p: edit_config(p, r="x"), CONFIG, "r must be a positive integer, not 'x'"),
    "r bool": (lambda p: edit_config(p, r=True), CONFIG, "r must be a positive integer, not True"),
    "targets number": (lambda p: edit_config(p, target_modules=3), CONFIG, "target_modules must be"),
    "targets of numbers": (lambda p: edit_config(p, target_modules=[1]), CONFIG, "target_modules must be"),
    "alpha text": (lambda p: edit_config(p, lora_alpha="a"), CONFIG, "lora_alpha must be a positive number"),
    "alpha inf": (lambda p: edit_config(p, lora_alpha=float("inf")), CONFIG, "lora_alpha must be a positive number"),
    "dropout null": (lambda p: edit_config(p, lora_dropout=None), CONFIG, "lora_dropout must be a number in"),
    "dora text": (lambda p: edit_config(p, use_dora="false"), CONFIG, "use_dora must be true or false"),
    "base not text": (lambda p: edit_config(p, base_model_name_or_path=[1]), CONFIG,
                      "base_model_name_or_path must be a string"),
    "huge rank": (lambda p: edit_config(p, r=10 ** 9), WEIGHTS,
                  r"\.lora_A\.weight has rank 4 but adapter_config\.json says r=1000000000"),
}


@pytest.mark.parametrize("case", NAMED)
def test_bad_adapter_errors_name_the_file(tiny_llama, saved, case):
    damage, file, message = NAMED[case]
    damage(saved)
    with pytest.raises(AdapterError) as err:
        load_adapter(tiny_llama, saved)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    assert text.startswith(f"{saved / file}: "), text
    assert re.search(message, text), text
    assert not lora_layers(tiny_llama) and not hasattr(tiny_llama, "lora_config")
