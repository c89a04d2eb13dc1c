"""Fuzzing the adapter loader: any bytes or JSON as adapter_config.json, any bytes as adapter_model.safetensors.

`load_adapter` must load the adapter, or raise AdapterError / FileNotFoundError with a one-line
message and leave the model as it was: never another exception.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from lora import AdapterError, LoRAConfig, inject_lora, load_adapter, save_adapter, unload_lora
from lora.inject import lora_layers

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int64, torch.bool,
          torch.uint8, torch.float8_e4m3fn)


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def good(model, tmp_path_factory):
    """A valid adapter folder (r=4 on q/k/v/o, B random) and its two files' bytes."""
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
    path = save_adapter(model, tmp_path_factory.mktemp("good") / "adapter")
    unload_lora(model)
    return path


def mutated(good_bytes: bytes) -> st.SearchStrategy[bytes]:
    """`good_bytes` with a few bytes overwritten, cut short, or with random bytes spliced in."""
    def apply(args):
        at, junk, cut = args
        at = at % (len(good_bytes) + 1)
        data = good_bytes[:at] + junk + good_bytes[at + len(junk) // 2:]
        return data[:max(at, cut % (len(data) + 1))]
    return st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8), st.integers(0, 1 << 20)).map(apply)


def check(model, folder) -> None:
    """The property: a loaded adapter (then unloaded again), or a one-line AdapterError / FileNotFoundError."""
    try:
        config = load_adapter(model, folder)
    except (AdapterError, FileNotFoundError) as e:
        event("refused")
        assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))
        assert not lora_layers(model) and not hasattr(model, "lora_config")   # left as it was
        return
    event("loaded")
    try:
        assert isinstance(config, LoRAConfig) and lora_layers(model)
        assert all(torch.isfinite(p).all() for layer in lora_layers(model).values()
                   for p in layer.adapter_parameters().values())
    finally:
        unload_lora(model)   # the next example starts from the bare model either way


def _with(good, tmp_path_factory, name: str, data: bytes):
    folder = tmp_path_factory.getbasetemp() / "fuzz-adapter"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(good, folder)
    (folder / name).write_bytes(data)
    return folder


@FUZZ
@given(data=st.data())
def test_any_bytes_as_config(model, good, tmp_path_factory, data):
    original = (good / "adapter_config.json").read_bytes()
    content = data.draw(st.binary(max_size=200) | mutated(original))
    check(model, _with(good, tmp_path_factory, "adapter_config.json", content))


@FUZZ
@given(data=st.data())
@example(data=None)
def test_any_json_as_config(model, good, tmp_path_factory, data):
    config = json.loads((good / "adapter_config.json").read_text())
    if data is None:   # the valid config itself loads
        value = config
    else:
        field = data.draw(st.sampled_from(sorted(config) + ["anything"]))
        value = data.draw(JSON | st.just({**config, field: data.draw(JSON)})
                          | st.just({k: v for k, v in config.items() if k != field}))
    check(model, _with(good, tmp_path_factory, "adapter_config.json", json.dumps(value).encode()))


@FUZZ
@given(data=st.data())
def test_any_bytes_as_weights(model, good, tmp_path_factory, data):
    original = (good / "adapter_model.safetensors").read_bytes()
    content = data.draw(st.binary(max_size=200) | mutated(original))
    check(model, _with(good, tmp_path_factory, "adapter_model.safetensors", content))


@FUZZ
@given(data=st.data())
def test_any_tensors_as_weights(model, good, tmp_path_factory, data):
    """Well-formed safetensors files holding tensors of any dtype, shape and values under the adapter's keys."""
    from safetensors.torch import load_file

    tensors = load_file(good / "adapter_model.safetensors")
    special = st.sampled_from([float("nan"), float("inf"), float("-inf")])
    for key in data.draw(st.lists(st.sampled_from(sorted(tensors)), min_size=1, max_size=3, unique=True)):
        shape = data.draw(st.just(tuple(tensors[key].shape)) | st.sampled_from([(), (4,), (4, 65), (8, 64), (0, 64)]))
        values = torch.tensor(data.draw(st.lists(st.floats(width=32) | special, min_size=1, max_size=4)))
        n = torch.Size(shape).numel()
        tensor = values.repeat(1 + n // len(values))[:n].reshape(shape)
        tensors[key] = tensor.to(data.draw(st.sampled_from(DTYPES[:4]) | st.sampled_from(DTYPES)))
    if data.draw(st.integers(0, 3)) == 0:
        tensors.pop(data.draw(st.sampled_from(sorted(tensors))))
    check(model, _with(good, tmp_path_factory, "adapter_model.safetensors", save(tensors)))
