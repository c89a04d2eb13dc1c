"""python -m lora.export: the merged folder equals base + adapter, its GGUF reads back (transformers' GGUF
loader) as the same model and tokenizer, llama.cpp's pre-tokenizer name splits text as the HF one does,
and user errors are one line."""
import json
import os
import shutil
from pathlib import Path

import pytest
import regex
import torch
from test_lora_inject import randomize
from tokenizers import Regex, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from lora import LoRAConfig, inject_lora, load_adapter, save_adapter
from lora.export import main
from lora.gguf_export import (LLAMA3_SPLIT, ExportError, permute_for_rope, pre_tokenizer_name, rope_factors,
                              write_gguf)
from quant.tiny import CORPUS, build_tiny_llama

REPO = Path(__file__).resolve().parent.parent
TEXT = "How much does this cost to the nearest dollar?\n\nCordless drill with two batteries.\n\nPrice is $"
STRINGS = ["Price is $123.00", "Price is $0.99", "  5 and  12,345", "<s>drill</s>", "a\n\n  b\t c", *CORPUS[4:6]]
# Unit roundoff of the formats the weights are rounded to: half an ulp, relative to the value (bf16 keeps
# 8 significant bits, f16 11), and for q8_0 half a step of a block of 32 weights scaled to +-127, relative
# to the block's largest |weight|.
BF16, F16, Q8_0 = 2.0 ** -8, 2.0 ** -11, 1 / 254


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([tokenizer.encode(TEXT)])).logits[0].float()


def fp32(path, **kwargs):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)


def gguf_only(folder: Path, name: str, tmp: Path) -> Path:
    """A folder holding only the GGUF file: beside a tokenizer.json, transformers would read that instead."""
    tmp.mkdir()
    os.link(folder / name, tmp / name)
    return tmp


def export(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir, tmp_path_factory) -> Path:
    """An all-linear adapter with nonzero B on the tiny Llama, saved as train.py saves it."""
    model = fp32(tiny_llama_dir)
    inject_lora(model, LoRAConfig(r=8, alpha=16, target_modules="all-linear"))
    return save_adapter(randomize(model), tmp_path_factory.mktemp("adapter") / "a", str(tiny_llama_dir))


@pytest.fixture(scope="module")
def unmerged(tiny_llama_dir, adapter):
    """Logits of base + adapter, unmerged, in float32."""
    model = fp32(tiny_llama_dir)
    load_adapter(model, adapter)
    return logits(model, AutoTokenizer.from_pretrained(tiny_llama_dir))


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory) -> dict[str, Path]:
    """float32 folders with an f16 and a q8_0 GGUF, and a bfloat16 folder, written by the CLI."""
    root = tmp_path_factory.mktemp("exports")
    (root / "f16").mkdir()  # an empty --out is used, not refused
    folders = {}
    for kind, argv in {"f16": ["--dtype", "float32", "--gguf", "f16"], "q8_0": ["--dtype", "float32", "--gguf", "q8_0"],
                       "bf16": []}.items():
        assert main(["--adapter", str(adapter), "--out", str(root / kind), *argv]) == 0
        folders[kind] = root / kind
    assert sorted(p.name for p in root.iterdir()) == ["bf16", "f16", "q8_0"]  # no temporary folders left
    return folders


def test_merged_folder_equals_unmerged(exported, unmerged):
    plain = fp32(exported["f16"])
    assert not any("lora" in name for name, _ in plain.named_parameters())
    # Merging in float32 only reorders float32 sums (W x + s B (A x) vs (W + s B A) x): a few float32 ulps
    # (2^-24) per layer (measured 6e-7 of max|logit| here, 2.5e-6 on SmolLM2's 30 layers).
    err = (logits(plain, AutoTokenizer.from_pretrained(exported["f16"])) - unmerged).abs().max()
    assert err <= 1e-5 * unmerged.abs().max()


def test_bf16_folder_rounds_each_weight_once(exported, unmerged):
    assert json.loads((exported["bf16"] / "config.json").read_text())["dtype"] == "bfloat16"
    tokenizer = AutoTokenizer.from_pretrained(exported["bf16"])
    # Computed in float32, so only the weights' rounding shows: each moved by at most BF16 of itself, with
    # random signs, which moves the logits by a small multiple of BF16 * max|logit| (measured 1.8x here,
    # 1.5x on SmolLM2).
    bound = 4 * BF16 * unmerged.abs().max()
    err = (logits(fp32(exported["bf16"]), tokenizer) - unmerged).abs().max()
    assert 0 < err <= bound


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_gguf_logits_match_merged_folder(exported, kind, tmp_path):
    folder = exported[kind]
    merged = logits(fp32(folder), AutoTokenizer.from_pretrained(folder))
    name = f"model-{kind}.gguf"
    model = fp32(gguf_only(folder, name, tmp_path / "g"), gguf_file=name)
    # The GGUF holds the float32 folder's weights rounded once, to f16 (each by <= F16 of itself) or to q8_0
    # (each by <= Q8_0 of its block's absmax, several times F16 relative to a typical weight); the logits
    # move by a multiple of that unit times max|logit|: measured f16 1.7x, q8_0 5.6x here (SmolLM2: 1.4x
    # and 11x, its 30 layers compounding the q8_0 steps).
    unit, factor = {"f16": (F16, 4), "q8_0": (Q8_0, 12)}[kind]
    err = (logits(model, AutoTokenizer.from_pretrained(folder)) - merged).abs().max()
    assert 0 < err <= factor * unit * merged.abs().max()


def test_gguf_is_laid_out_as_llama_cpp_expects(exported, tiny_llama_dir):
    from gguf import GGUFReader, LlamaFileType, dequantize

    reader = GGUFReader(exported["f16"] / "model-f16.gguf")
    field = {k: f.contents() for k, f in reader.fields.items()}
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    assert field["general.architecture"] == "llama" and field["general.file_type"] == LlamaFileType.MOSTLY_F16
    assert (field["llama.block_count"], field["llama.embedding_length"], field["llama.feed_forward_length"],
            field["llama.attention.head_count"], field["llama.attention.head_count_kv"], field["llama.vocab_size"]) == \
           (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
            config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"])
    assert (field["tokenizer.ggml.model"], field["tokenizer.ggml.pre"], field["tokenizer.ggml.add_bos_token"]) == \
           ("gpt2", "smollm", True)
    tensors = {t.name: t for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.ffn_down.weight"} <= set(tensors)
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    # Rows of q (4 heads) and k (2 heads) are reordered per head for llama.cpp's consecutive-pair RoPE.
    model = fp32(exported["f16"])
    for name, hf, heads in [("attn_q", "q_proj", 4), ("attn_k", "k_proj", 2)]:
        t = tensors[f"blk.0.{name}.weight"]
        stored = torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).reshape(-1, config["hidden_size"])
        weight = getattr(model.model.layers[0].self_attn, hf).weight
        torch.testing.assert_close(stored, permute_for_rope(weight, heads).half().float(), atol=0, rtol=0)


def with_pre_tokenizer(tiny_llama_dir: Path, tmp: Path, variant: str) -> Path:
    """A copy of a tiny Llama whose tokenizer splits text as llama.cpp's `variant` pre-tokenizer does."""
    shutil.copytree(tiny_llama_dir, tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    steps = {"gpt-2": pre_tokenizers.ByteLevel(add_prefix_space=False),
             "llama-bpe": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])}
    if variant in steps:
        tokenizer.backend_tokenizer.pre_tokenizer = steps[variant]
        tokenizer.save_pretrained(tmp)
    return tmp


# llama.cpp's regex lists for these names (src/llama-vocab.cpp), applied one after the other, each
# splitting every piece into its matches and the text between them (unicode_regex_split).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA_CPP_REGEXES = {
    "gpt-2": [GPT2_REGEX],
    "smollm": [r"\p{N}", GPT2_REGEX],
    "llama-bpe": [r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
}


def llama_cpp_split(text: str, regexes: list[str]) -> list[str]:
    pieces = [text]
    for pattern in regexes:
        split = []
        for piece in pieces:
            at = 0
            for m in regex.finditer(pattern, piece):
                split += [piece[at:m.start()]] if m.start() > at else []
                split.append(m.group())
                at = m.end()
            split += [piece[at:]] if at < len(piece) else []
        pieces = split
    return pieces


@pytest.mark.parametrize("numbers, variant", [("digits", "smollm"), ("digits", "gpt-2"), ("digits", "llama-bpe"),
                                              ("triples", "smollm")])
def test_gguf_tokenizer_matches(numbers, variant, request, tmp_path):
    base = request.getfixturevalue({"digits": "tiny_llama_dir", "triples": "tiny_llama3_dir"}[numbers])
    folder = with_pre_tokenizer(base, tmp_path / "hf", variant)
    hf = AutoTokenizer.from_pretrained(folder)
    assert pre_tokenizer_name(hf) == variant
    # The name written is one whose llama.cpp regexes split text exactly as the HF pre-tokenizer does,
    # and the names differ where it matters ("  5": GPT-2's regex keeps a space with the digit).
    for text in STRINGS:
        want = [text[a:b] for _, (a, b) in hf.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        assert llama_cpp_split(text, LLAMA_CPP_REGEXES[variant]) == want, text
    assert llama_cpp_split("  5", LLAMA_CPP_REGEXES["gpt-2"]) != llama_cpp_split("  5", LLAMA_CPP_REGEXES["smollm"])
    name = write_gguf(folder, "f16").name
    gguf = AutoTokenizer.from_pretrained(gguf_only(folder, name, tmp_path / "g"), gguf_file=name)
    for text in STRINGS:
        assert gguf.encode(text) == hf.encode(text), text
    assert (gguf.bos_token, gguf.eos_token, gguf.unk_token) == (hf.bos_token, hf.eos_token, hf.unk_token)


def test_unknown_pre_tokenizer_is_refused(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ExportError, match="byte-level BPE"):
        pre_tokenizer_name(tokenizer)


def test_llama3_rope_factors_match_transformers(tiny_llama_dir, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "llama3")
    config = AutoConfig.from_pretrained(folder)
    # A short original context puts the 8 frequencies of a 16-dim head on both sides of the band and in it.
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config.save_pretrained(folder)
    dim = config.head_dim
    default = 1.0 / (500000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    expected = default / scaled  # llama.cpp divides each frequency by its factor
    assert len({round(f, 3) for f in expected.tolist()}) > 2
    torch.testing.assert_close(rope_factors(config), expected.float(), rtol=1e-6, atol=0)
    tensors = {t.name: t for t in GGUFReader(write_gguf(folder, "f16")).tensors}
    torch.testing.assert_close(torch.from_numpy(tensors["rope_freqs.weight"].data.copy()), expected.float(),
                               rtol=1e-6, atol=0)


def test_failed_gguf_leaves_no_folder(adapter, tmp_path, capsys, monkeypatch):
    import lora.gguf_export

    def fail(*args, **kwargs):
        raise ExportError("disk full (simulated)")

    monkeypatch.setattr(lora.gguf_export, "write_gguf", fail)
    rc, _, err = export(["--adapter", adapter, "--out", tmp_path / "out", "--gguf", "q8_0"], capsys)
    assert rc == 2 and err.splitlines()[-1] == "error: disk full (simulated)"  # after the loading bars
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    folder = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, expected", [
    ("no-adapter-folder", "no adapter folder at"),
    ("no-base", "names no base model: pass --base MODEL"),
    ("unknown-gguf", "unknown --gguf type 'q4_k': use one of f16, q8_0"),
    ("not-llama", "GGUF export writes Llama-architecture models; this base is qwen2 (Qwen2ForCausalLM)"),
    ("out-not-empty", "exists and is not an empty folder"),
])
def test_one_line_errors(case, expected, adapter, qwen_dir, tmp_path, capsys):
    out = tmp_path / "out"
    no_base = shutil.copytree(adapter, tmp_path / "no-base")
    config = json.loads((no_base / "adapter_config.json").read_text())
    (no_base / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    if case == "out-not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    argv = {
        "no-adapter-folder": ["--adapter", tmp_path / "nowhere", "--out", out],
        "no-base": ["--adapter", no_base, "--out", out],
        "unknown-gguf": ["--adapter", adapter, "--out", out, "--gguf", "q4_k"],
        "not-llama": ["--adapter", adapter, "--base", qwen_dir, "--out", out, "--gguf", "f16"],
        "out-not-empty": ["--adapter", adapter, "--out", out],
    }[case]
    rc, _, err = export(argv, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    if case == "out-not-empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_shipped_adapter(smollm2_dir, tmp_path, capsys):
    from quant import load_base_model

    adapter = REPO / "adapters" / "smollm2-135m-pricer"
    rc, out, _ = export(["--adapter", adapter, "--out", tmp_path / "m", "--dtype", "float32", "--gguf", "q8_0"], capsys)
    assert rc == 0, out
    folder = tmp_path / "m"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base, _ = load_base_model("smollm2-135m", bits=16, compute_dtype=torch.float32, device="cpu", verbose=False)
    load_adapter(base, adapter)
    unmerged, merged = logits(base, tokenizer), logits(fp32(folder), tokenizer)
    assert (merged - unmerged).abs().max() <= 1e-5 * unmerged.abs().max()  # as on the tiny model
    g = gguf_only(folder, "model-q8_0.gguf", tmp_path / "g")
    from_gguf = logits(fp32(g, gguf_file="model-q8_0.gguf"), tokenizer)
    err = (from_gguf - merged).abs().max()
    assert 0 < err <= 24 * Q8_0 * merged.abs().max()  # see test_gguf_logits_match_merged_folder
    assert from_gguf[-1].argmax() == merged[-1].argmax()  # the first price digit after "Price is $"
    gguf = AutoTokenizer.from_pretrained(g, gguf_file="model-q8_0.gguf")
    for text in [*STRINGS, TEXT, "<|im_start|>user\nPrice?<|im_end|>"]:
        assert gguf.encode(text) == tokenizer.encode(text), text
    assert gguf.chat_template == tokenizer.chat_template


def test_the_merged_folder_keeps_how_the_adapter_was_trained(adapter, tmp_path, capsys):
    """training-config.yaml travels into the merged folder, where evaluate.py and predict.py --base read the answer
    width, and the bits and dtype the folder is served in: its own, not the 4 bits the adapter trained over."""
    import shutil

    import evaluate

    trained = tmp_path / "trained"
    shutil.copytree(adapter, trained)
    (trained / "training-config.yaml").write_text("# changed on resume: x\nmodel:\n  name: smollm2-135m\n  bits: 4\n"
                                                   "  quant_type: nf4\n  compute_dtype: bfloat16\n"
                                                   "data:\n  answer_width: 4\n  max_text_tokens: 99\n")
    assert export(["--adapter", trained, "--out", tmp_path / "merged", "--dtype", "float32"], capsys)[0] == 0
    written = (tmp_path / "merged" / "training-config.yaml").read_text()
    assert written.startswith("# changed on resume: x\n# python -m lora.export:") and "in 4-bit nf4" in written
    args = evaluate.parse_args(["--base", str(tmp_path / "merged"), "--data", "d", "--out", "o"])
    assert (args.answer_width, args.max_text_tokens) == (4, 99)
    assert (args.bits, args.compute_dtype) == (16, "float32")   # served as saved, not re-quantized to 4 bits
    import predict

    args = predict.parse_args(["--base", str(tmp_path / "merged"), "--text", "drill"])
    assert (args.bits, args.compute_dtype, args.answer_width) == (16, "float32", 4)
    assert predict.parse_args(["--base", str(tmp_path / "merged"), "--text", "drill", "--bits", "4"]).bits == 4
    assert evaluate.parse_args(["--base", "smollm2-135m", "--data", "d", "--out", "o"]).answer_width == 0


def test_the_merged_folder_carries_the_interval_margin(adapter, tmp_path, capsys):
    """The adapter's interval_calibration.json travels into the merged folder (saying where it was fitted), and
    the expected predictor run with --base FOLDER widens its intervals by it, as with --adapter."""
    import shutil

    import evaluate
    from predictors import ExpectedPredictor

    trained = tmp_path / "trained"
    shutil.copytree(adapter, trained)
    (trained / "interval_calibration.json").write_text(json.dumps({"margin": 0.25, "coverage": 0.8, "n": 50}))
    assert export(["--adapter", trained, "--out", tmp_path / "merged", "--dtype", "float32"], capsys)[0] == 0
    record = json.loads((tmp_path / "merged" / "interval_calibration.json").read_text())
    assert record["margin"] == 0.25 and record["copied_from"].startswith(str(trained))
    expected = ["--base", str(tmp_path / "merged"), "--data", "d", "--out", "o", "--predictor", "expected"]
    assert ExpectedPredictor.from_args(evaluate.parse_args(expected)).interval_margin == 0.25
    args = evaluate.parse_args([*expected, "--interval-calibration", "off"])
    assert ExpectedPredictor.from_args(args).interval_margin == 0.0


def test_a_folder_exported_before_bits_16_is_served_as_saved(tmp_path, capsys):
    """An older export copied the adapter's `bits: 4` into the merged folder: read as 16 bits, with a note;
    --bits 4 still quantizes."""
    import predict

    folder = tmp_path / "old-merged"
    folder.mkdir()
    (folder / "training-config.yaml").write_text("model:\n  name: smollm2-135m\n  bits: 4\n  compute_dtype: bfloat16\n"
                                                  "data:\n  answer_width: 4\n")
    args = predict.parse_args(["--base", str(folder), "--text", "drill"])
    assert (args.bits, args.compute_dtype, args.answer_width) == (16, "bfloat16", 4)
    assert "says bits 4" in capsys.readouterr().err
    assert predict.parse_args(["--base", str(folder), "--text", "drill", "--bits", "4"]).bits == 4
