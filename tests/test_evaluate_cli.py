"""evaluate.py end to end through main(): tiny model, adapters saved by pricer and by peft, baselines, errors."""
from __future__ import annotations

import csv
import json
import statistics
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import data
import evaluate as ev
from conftest import write_items
from data import load_items, split_items
from lora import LoRAConfig, inject_lora, lora_layers, save_adapter
from predictors import pick_items, predict_expected
from quant.tiny import build_tiny_llama

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def items_file(tmp_path_factory):
    """A small curated JSONL (title/text/price), as data/ reads it."""
    return write_items(tmp_path_factory.mktemp("items") / "items.jsonl", 60, seed=0, noun="set", max_words=30,
                       price=lambda rng: rng.uniform(1, 900))


@pytest.fixture(scope="module")
def pricer_adapter(tiny_llama_dir, tmp_path_factory):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    inject_lora(model, LoRAConfig(r=4, alpha=8.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0.0, 0.5)   # a trained-looking adapter: it must move the outputs
    return save_adapter(model, tmp_path_factory.mktemp("pricer") / "adapter", base_model_name_or_path=str(tiny_llama_dir))


@pytest.fixture(scope="module")
def peft_adapter(tiny_llama_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    torch.manual_seed(2)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():   # as after training: B no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(path)
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama_dir)
    return path


def run_main(argv, capsys):
    rc = ev.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    print(err, file=sys.stderr)   # shown by pytest when the test fails
    return rc, out, err


def read_predictions(out_dir):
    with (out_dir / "predictions.csv").open() as f:
        return list(csv.DictReader(f))


def peft_reference(base_dir, adapter_dir, items, bits_dtype=torch.bfloat16):
    """Expected prices from peft's own model (base in bf16, as --bits 16 loads it) for the same prompts."""
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=bits_dtype)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    prompts = [data.test_prompt(it, tokenizer, 160) for it in items]
    return predict_expected(model, tokenizer, prompts, batch_size=4)


@pytest.mark.parametrize("which", ["pricer", "peft"])
def test_end_to_end_adapter_matches_peft(which, request, tiny_llama_dir, items_file, tmp_path, capsys):
    adapter = request.getfixturevalue(f"{which}_adapter")
    out = tmp_path / "eval"
    rc, stdout, _ = run_main(["--adapter", adapter, "--data", items_file, "--split", "all", "--limit", 6,
                              "--bits", 16, "--predictor", "expected", "--batch-size", 4, "--out", out], capsys)
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 6 and report["failures"] == 0
    assert report["base"] == str(tiny_llama_dir) and report["adapter"] == str(adapter)   # base read from the adapter
    assert (report["predictor"], report["split"], report["limit"], report["seed"]) == ("expected", "all", 6, 42)
    assert 0 < report["search_mass"] <= 1
    assert (out / "chart.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "all" in stdout and "failures 0 of 6" in stdout

    rows = read_predictions(out)
    items = pick_items(ev.parse_args(["--data", str(items_file), "--split", "all", "--limit", "6",
                                      "--out", str(out)]))[0]
    assert [r["title"] for r in rows] == [it.title for it in items]
    guesses = [float(r["guess"]) for r in rows]
    assert guesses == pytest.approx(peft_reference(tiny_llama_dir, adapter, items), abs=0.02)
    base_only = peft_reference(tiny_llama_dir, None, items)
    assert max(abs(g - b) for g, b in zip(guesses, base_only)) > 0.1   # the adapter was really applied
    assert report["avg_error"] == pytest.approx(statistics.fmean(abs(g - it.price) for g, it in zip(guesses, items)),
                                                abs=0.01)


def test_base_only_greedy_then_compare(tiny_llama_dir, items_file, tmp_path, capsys):
    base_out, mean_out = tmp_path / "base-greedy", tmp_path / "mean"
    rc, stdout, _ = run_main(["--base", tiny_llama_dir, "--data", items_file, "--limit", 2, "--bits", 16,
                              "--out", base_out], capsys)
    assert rc == 0
    report = json.loads((base_out / "report.json").read_text())
    test_split = split_items(load_items(items_file, verbose=False), seed=42).test
    assert report["n"] == min(2, len(test_split)) and report["adapter"] is None and report["predictor"] == "greedy"
    assert {r["title"] for r in read_predictions(base_out)} <= {it.title for it in test_split}
    assert run_main(["--predictor", "mean", "--data", items_file, "--out", mean_out], capsys)[0] == 0

    rc, stdout, _ = run_main(["--compare", base_out, mean_out], capsys)
    assert rc == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["name", "n", "avg", "error", "RMSLE", "hit", "rate", "failures"]
    assert [ln.split()[0] for ln in lines[1:]] == ["base-greedy", "mean"]
    mean_report = json.loads((mean_out / "report.json").read_text())
    assert lines[2].split() == ["mean", str(mean_report["n"]), f"${mean_report['avg_error']:,.2f}",
                                f"{mean_report['rmsle']:.2f}", f"{mean_report['hit_rate'] * 100:.1f}%", "0"]
    assert not list(tmp_path.glob("*/compare*"))


@pytest.mark.parametrize("kind", ["mean", "median"])
def test_constant_baselines_from_training_split(kind, items_file, tmp_path, capsys):
    out = tmp_path / kind
    assert run_main(["--predictor", kind, "--data", items_file, "--split", "val", "--out", out], capsys)[0] == 0
    splits = split_items(load_items(items_file, verbose=False), seed=42)
    train_prices = [it.price for it in splits.train]
    want = statistics.fmean(train_prices) if kind == "mean" else statistics.median(train_prices)
    rows = read_predictions(out)
    assert len(rows) == len(splits.val)
    assert {float(r["guess"]) for r in rows} == {round(want, 2)}
    report = json.loads((out / "report.json").read_text())
    assert report["base"] is None and report["device"] == "none"


def test_balanced_sample_spreads_prices(items_file, tmp_path, capsys):
    out = tmp_path / "balanced"
    assert run_main(["--predictor", "median", "--data", items_file, "--split", "all", "--limit", 8,
                     "--sample", "balanced", "--out", out], capsys)[0] == 0
    prices = sorted(float(r["truth"]) for r in read_predictions(out))
    assert len(prices) == 8 and prices[0] < 100 and prices[-1] > 300


@pytest.fixture(scope="module")
def narrow_base(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("narrow"), hidden=32)


@pytest.mark.parametrize("case", ["no-model", "no-adapter-folder", "no-weights", "other-base", "damaged-data",
                                  "missing-data", "compare-no-report"])
def test_one_line_errors(case, items_file, pricer_adapter, narrow_base, tmp_path, capsys):
    out = tmp_path / "out"
    argv = {
        "no-model": ["--data", items_file, "--out", out],
        "no-adapter-folder": ["--adapter", tmp_path / "nowhere", "--data", items_file, "--out", out],
        "no-weights": ["--adapter", tmp_path / "half", "--data", items_file, "--bits", 16, "--out", out],
        "other-base": ["--adapter", pricer_adapter, "--base", narrow_base, "--data", items_file, "--bits", 16,
                       "--out", out],
        "damaged-data": ["--base", narrow_base, "--data", tmp_path / "bad.jsonl.gz", "--out", out],
        "missing-data": ["--base", narrow_base, "--data", tmp_path / "none.jsonl", "--out", out],
        "compare-no-report": ["--compare", tmp_path],
    }[case]
    expected = {
        "no-model": "no model to evaluate", "no-adapter-folder": "no adapter_config.json",
        "no-weights": "adapter_model.safetensors", "other-base": "hidden size 64, this base has 32",
        "damaged-data": "damaged gzip", "missing-data": "none.jsonl", "compare-no-report": "no report.json",
    }[case]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text((pricer_adapter / "adapter_config.json").read_text())
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    rc, _, err = run_main(argv, capsys)
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last
    assert "Traceback" not in err and not out.exists()


def test_options_default_to_what_the_run_trained_with(tmp_path):
    """An adapter in train.py's <run>/adapter is evaluated on the run's split and quantization."""
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  bits: 4\n  quant_type: fp4\n  compute_dtype: float32\n"
                                     "data:\n  seed: 7\n  val_fraction: 0.0\n  test_fraction: 0.3\n"
                                     "  max_text_tokens: 64\n")
    common = ["--adapter", str(run / "adapter"), "--data", "d", "--out", "o"]
    args = ev.parse_args(common)
    assert (args.seed, args.val_fraction, args.test_fraction, args.max_text_tokens) == (7, 0.0, 0.3, 64)
    assert (args.bits, args.quant_type, args.compute_dtype) == (4, "fp4", "float32")
    args = ev.parse_args(common + ["--seed", "1", "--quant-type", "nf4"])
    assert (args.seed, args.quant_type) == (1, "nf4")
    plain = ev.parse_args(["--base", "b", "--data", "d", "--out", "o"])
    assert (plain.seed, plain.test_fraction, plain.bits, plain.compute_dtype) == (42, 0.1, 4, "bfloat16")
