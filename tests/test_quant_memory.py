"""memory_report against bytes computed by hand from the tiny Llama's shapes."""
import math

import pytest

from quant import format_memory_report, load_base_model, memory_report

HIDDEN, INTER, KV, LAYERS = 64, 128, 32, 2  # the tiny fixture: 4 heads of 16, 2 KV heads


def _linear_shapes():
    """(out, in) of every projection in the tiny Llama."""
    per_layer = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN),
                 (INTER, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER)]
    return per_layer * LAYERS


def _other_bytes(vocab, model):
    """Embedding + untied head + norms at 2 bytes, plus the (fp32) rotary buffers."""
    params = 2 * vocab * HIDDEN + (2 * LAYERS + 1) * HIDDEN
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return 2 * params + buffers, params


def test_4bit_bytes_with_double_quant(tiny_llama_dir, tiny_tokenizer):
    model, _ = load_base_model(str(tiny_llama_dir), bits=4, double_quant=True, verbose=False)
    expected = 0
    for out_f, in_f in _linear_shapes():
        blocks = out_f * in_f // 64
        # packed codes + uint8 absmax per block + fp32 absmax per 256 blocks + nested fp32 code (256)
        # + NF4 fp32 code (16) + fp32 offset
        expected += out_f * in_f // 2 + blocks + 4 * math.ceil(blocks / 256) + 4 * 256 + 4 * 16 + 4
    other, other_params = _other_bytes(len(tiny_tokenizer), model)
    report = memory_report(model)
    assert report["quantized_bytes"] == expected
    assert report["other_bytes"] == other
    assert report["total_bytes"] == expected + other
    quantized_params = sum(o * i for o, i in _linear_shapes())
    assert report["bf16_equivalent_bytes"] == 2 * (quantized_params + other_params) + (other - 2 * other_params)
    assert report["quantized_linears"] == 14


def test_4bit_bytes_without_double_quant(tiny_llama_dir):
    model, _ = load_base_model(str(tiny_llama_dir), bits=4, double_quant=False, verbose=False)
    expected = sum(o * i // 2 + 4 * (o * i // 64) + 4 * 16 for o, i in _linear_shapes())
    assert memory_report(model)["quantized_bytes"] == expected


def test_8bit_bytes(tiny_llama_dir):
    model, _ = load_base_model(str(tiny_llama_dir), bits=8, verbose=False)
    # int8 weights + one fp32 scale per output row (SCB), shared by weight and matmul state
    expected = sum(o * i + 4 * o for o, i in _linear_shapes())
    assert memory_report(model)["quantized_bytes"] == expected


@pytest.mark.parametrize("tied", [False, True])
def test_16bit_counts_tied_weights_once(tiny_llama, tied):
    model = tiny_llama.bfloat16()
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    report = memory_report(model)
    unique = {p.data_ptr(): p for p in model.parameters()}
    params = sum(p.numel() for p in unique.values())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert report["quantized_bytes"] == 0
    assert report["total_bytes"] == report["bf16_equivalent_bytes"] == 2 * params + buffers


def test_format_is_one_line():
    line = format_memory_report({"quantized_linears": 210, "quantized_bytes": 55_000_000, "other_bytes": 56_700_000,
                                 "total_bytes": 111_700_000, "bf16_equivalent_bytes": 269_000_000})
    assert line == ("memory: 210 quantized linears 55.0 MB + other 56.7 MB = 111.7 MB "
                    "(16-bit: 269.0 MB, 2.41x smaller)")
