"""quant.layerwise: a 4-bit model built tensor by tensor is bitwise transformers' own 4-bit load, for less memory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quant import ModelError, load_base_model
from quant.layerwise import Quant4bit, RandomSource, build_4bit, load_4bit_layerwise
from quant.tiny import build_tiny_llama
from utils.compat import disable_cpu_4bit_repacking

REPO = Path(__file__).resolve().parent.parent


def _quant_state_tensors(model):
    """name -> tensor for every quantization statistic (absmax, nested absmax and code) of every 4-bit weight."""
    out = {}
    for name, module in model.named_modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None:
            continue
        out[name + ".absmax"], out[name + ".code"] = state.absmax, state.code
        if state.state2 is not None:
            out[name + ".absmax2"], out[name + ".offset"] = state.state2.absmax, state.offset
    return out


def assert_bitwise_same(a, b):
    """Same parameters (dtype, bytes), same quantization statistics, same buffers, same tying."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        # bytes, not values: 4-bit pairs stored as bf16 (FSDP's storage) include NaN patterns
        assert pa[name].dtype == pb[name].dtype and torch.equal(pa[name].data.view(torch.uint8),
                                                                pb[name].data.view(torch.uint8)), name
        assert type(pa[name]) is type(pb[name]), name
    sa, sb = _quant_state_tensors(a), _quant_state_tensors(b)
    assert sa.keys() == sb.keys() and sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    assert ba.keys() == bb.keys() and all(torch.equal(ba[k], bb[k]) for k in ba)
    tied = lambda m: m.get_output_embeddings().weight is m.get_input_embeddings().weight  # noqa: E731
    assert tied(a) == tied(b)


def logits(model, ids):
    """The model's logits on `ids` (CPU 4-bit kept in its trainable layout, as prepared models are)."""
    disable_cpu_4bit_repacking(model)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("fixture, storage", [("tiny_llama_dir", "uint8"), ("tiny_gemma_dir", "uint8"),
                                              ("tiny_llama_dir", "bfloat16")])
def test_layerwise_load_is_bitwise_todays_load(fixture, storage, request):
    path = request.getfixturevalue(fixture)
    today, tokenizer = load_base_model(str(path), bits=4, device="cpu", quant_storage=storage, verbose=False)
    layerwise, _ = load_base_model(str(path), bits=4, device="cpu", quant_storage=storage, verbose=False,
                                   layerwise=True)
    assert_bitwise_same(today, layerwise)
    ids = tokenizer(["Price is $12.00 for the cordless drill"], return_tensors="pt")["input_ids"]
    assert torch.equal(logits(today, ids), logits(layerwise, ids))
    assert layerwise.is_loaded_in_4bit and layerwise.config.quantization_config.bnb_4bit_quant_storage == \
        today.config.quantization_config.bnb_4bit_quant_storage
    assert not layerwise.training and not any(p.requires_grad for p in layerwise.parameters())


def test_random_builder_is_the_4bit_load_of_its_own_weights(tmp_path):
    """The benchmarks' builder (RandomSource) gives what quantizing a checkpoint of the same 16-bit weights gives."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    source = RandomSource(seed=3)
    dense = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, p in dense.named_parameters():
            p.copy_(source(name, p.shape, torch.device("cpu")))
    dense.save_pretrained(tmp_path)
    built = build_4bit(config, source, "cpu")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map={"": "cpu"},
                                                  quantization_config=Quant4bit().bnb_config())
    assert_bitwise_same(loaded, built)
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(loaded, ids), logits(built, ids))


def test_random_source_does_not_depend_on_order():
    source, cpu = RandomSource(seed=1), torch.device("cpu")
    first = source("model.layers.1.mlp.up_proj.weight", torch.Size([8, 4]), cpu)
    source("model.layers.0.mlp.up_proj.weight", torch.Size([8, 4]), cpu)
    assert torch.equal(first, source("model.layers.1.mlp.up_proj.weight", torch.Size([8, 4]), cpu))
    assert not torch.equal(first, RandomSource(seed=2)("model.layers.1.mlp.up_proj.weight", first.shape, cpu))
    assert torch.equal(source("model.norm.weight", torch.Size([4]), cpu), torch.ones(4, dtype=torch.bfloat16))


MEASURE = """
import json, sys, torch, bitsandbytes
from quant import load_base_model
from quant.peak_memory import PeakMemory
load_base_model(sys.argv[3], bits=4, device="cpu", verbose=False, layerwise=sys.argv[2] == "1")  # its imports
with PeakMemory("cpu") as peak:
    model, _ = load_base_model(sys.argv[1], bits=4, device="cpu", verbose=False, layerwise=sys.argv[2] == "1")
print("PEAK " + json.dumps({"added": peak.host_added_gb, "reset": peak.host_reset}))
"""


# Measured with a fixed mmap threshold: glibc otherwise raises it after each large free, so freed tensors stay in
# its heap and the peak measures the allocator's history (0.07-0.14 GB from run to run) rather than live memory.
STEADY = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def _load_peak_gb(path: Path, layerwise: bool, warm_up: Path) -> float:
    """Peak host memory a 4-bit load adds, measured in a fresh process (so no freed memory is reused) after a
    load of a tiny model (so the modules a load imports are not counted)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(int(layerwise)), str(warm_up)],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **STEADY})
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK ")), proc.stderr
    measured = json.loads(line[0][5:])
    if not measured["reset"]:
        pytest.skip("this kernel does not let a process reset its peak resident memory (/proc/self/clear_refs)")
    return measured["added"]


def test_layerwise_load_peaks_at_a_fraction_of_todays_host_memory(tmp_path, tiny_llama_dir):
    """A 36M-parameter Llama (146 MB of fp32 safetensors): measured 0.050 GB layer by layer against 0.180 GB
    through from_pretrained on this CPU, three runs each alike to 1 MB (2026-12-05)."""
    path = build_tiny_llama(tmp_path / "llama", hidden=1024, layers=4)
    layerwise, today = _load_peak_gb(path, True, tiny_llama_dir), _load_peak_gb(path, False, tiny_llama_dir)
    assert today > 0.15
    assert layerwise < 0.5 * today, (layerwise, today)


def test_layerwise_refuses_8bit_and_names_missing_tensors(tiny_llama_dir, tmp_path):
    with pytest.raises(ModelError, match="4-bit models only"):
        load_base_model(str(tiny_llama_dir), bits=8, device="cpu", layerwise=True, verbose=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_llama_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(ModelError, match="has no tensor 'model.layers.2"):
        load_4bit_layerwise(broken, "cpu")


def test_verbose_load_reports_its_peaks(tiny_llama_dir, capsys):
    load_base_model(str(tiny_llama_dir), bits=4, device="cpu", layerwise=True)
    err = capsys.readouterr().err
    assert "4-bit nf4, layer by layer) on cpu" in err and "while loading: host peak" in err


def test_a_folder_without_safetensors_loads_as_before(tiny_llama_dir, tmp_path, capsys):
    """train.py asks every 4-bit load for layerwise: a .bin checkpoint still loads (through from_pretrained)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bin"
    folder.mkdir()
    for f in tiny_llama_dir.iterdir():
        if not f.name.endswith(".safetensors") and f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict(), folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors*"))
    model, _ = load_base_model(str(folder), bits=4, device="cpu", layerwise=True)
    reference, _ = load_base_model(str(tiny_llama_dir), bits=4, device="cpu", layerwise=True, verbose=False)
    ids = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert "layer by layer" not in capsys.readouterr().err


class _Recorder:
    """An on_unit over the decoder layers recording, at each hand-over, whether the unit is real and how many of
    the model's parameters are still on the meta device."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, int]] = []

    def units(self, model):
        return list(model.model.layers)

    def __call__(self, model, unit) -> None:
        self.seen.append((not any(p.is_meta for p in unit.parameters()), sum(p.is_meta for p in model.parameters())))


@pytest.mark.parametrize("bits, layerwise", [(4, True), (16, False)])
def test_each_unit_is_handed_over_once_built(tiny_llama_dir, bits, layerwise):
    """on_unit: built layer by layer, each layer is handed over real while the units after it (and the rest) are
    still meta; loaded whole (16-bit), each after the load. Either way the model is the one loaded without it."""
    recorder = _Recorder()
    model, _ = load_base_model(str(tiny_llama_dir), bits=bits, device="cpu", verbose=False, layerwise=layerwise,
                               on_unit=recorder)
    reference, _ = load_base_model(str(tiny_llama_dir), bits=bits, device="cpu", verbose=False, layerwise=layerwise)
    layer_params = len(list(model.model.layers[1].parameters()))
    rest = sum(1 for n, _ in model.named_parameters() if ".layers." not in n)
    assert recorder.seen == ([(True, layer_params + rest), (True, rest)] if layerwise else [(True, 0), (True, 0)])
    if layerwise:
        assert_bitwise_same(model, reference)
    else:
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))
