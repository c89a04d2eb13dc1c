"""evaluate.py end to end through main(): tiny model, adapters saved by pricer and by peft, baselines, errors."""
from __future__ import annotations

import csv
import json
import os
import statistics
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import data
import evaluate as ev
from conftest import write_items
from data import load_items, split_items
from evaluation import pick_items
from lora import LoRAConfig, inject_lora, lora_layers, save_adapter
from predictors import predict_expected
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
    pytest.importorskip("peft")
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
    pytest.importorskip("peft")
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=bits_dtype)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    prompts = [data.test_prompt(it, tokenizer, 160) for it in items]
    return predict_expected(model, tokenizer, prompts, batch_size=4)


@pytest.mark.peft_parity
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
    assert "answer_width" not in report   # unpadded answers: report.json as before data.answer_width
    assert (out / "chart.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "all" in stdout and "failures 0 of 6" in stdout

    rows = read_predictions(out)
    items = pick_items(ev.parse_args(["--data", str(items_file), "--split", "all", "--limit", "6",
                                      "--out", str(out)]))[0]
    # Rows come in the order of the prompts' lengths: the batches pad least (and match a whole-split run).
    by_title = {r["title"]: r for r in rows}
    assert sorted(by_title) == sorted(it.title for it in items) and len(rows) == len(items)
    guesses = [float(by_title[it.title]["guess"]) for it in items]
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
    assert [ln.split()[0] for ln in lines[1:3]] == ["base-greedy", "mean"]
    # then the mean baseline against the first report on the items both scored (evaluation/paired.py)
    assert lines[3].startswith("paired against base-greedy") and lines[4].startswith(f"  mean ({report['n']} items)")
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
                                     "  max_text_tokens: 64\n  answer_width: 4\n")
    common = ["--adapter", str(run / "adapter"), "--data", "d", "--out", "o"]
    args = ev.parse_args(common)
    assert (args.seed, args.val_fraction, args.test_fraction, args.max_text_tokens) == (7, 0.0, 0.3, 64)
    assert args.answer_width == 4
    assert (args.bits, args.quant_type, args.compute_dtype) == (4, "fp4", "float32")
    args = ev.parse_args(common + ["--seed", "1", "--quant-type", "nf4"])
    assert (args.seed, args.quant_type) == (1, "nf4")
    plain = ev.parse_args(["--base", "b", "--data", "d", "--out", "o"])
    assert (plain.seed, plain.test_fraction, plain.bits, plain.compute_dtype) == (42, 0.1, 4, "bfloat16")
    assert plain.answer_width == 0
    with pytest.raises(SystemExit):
        ev.parse_args(["--base", "b", "--data", "d", "--out", "o", "--answer-width", "-1"])



def test_an_adapter_out_of_its_run_keeps_its_settings(tmp_path, capsys):
    """A copied or shipped adapter folder reads its own training-config.yaml (train.py saves it there);
    in its run, the run's config.yaml beside it comes first; a damaged one is one line naming it."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "training-config.yaml").write_text("model:\n  bits: 16\ndata:\n  max_text_tokens: 99\n"
                                                  "  holdout_source: mixed\n")
    args = ev.parse_args(["--adapter", str(shipped), "--data", "d", "--out", "o"])
    assert (args.bits, args.max_text_tokens, args.holdout_source, args.seed) == (16, 99, "mixed", 42)
    (tmp_path / "config.yaml").write_text("model:\n  bits: 8\n")   # shipped/ is now <run>/adapter
    assert ev.parse_args(["--adapter", str(shipped), "--data", "d", "--out", "o"]).bits == 8
    (tmp_path / "config.yaml").unlink()
    (shipped / "training-config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(SystemExit) as e:
        ev.parse_args(["--adapter", str(shipped), "--data", "d", "--out", "o"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{shipped / 'training-config.yaml'}: not readable YAML" in err.strip().splitlines()[-1]

# --- bad --out, refused before any data or model is read ------------------------------------------------------

@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if evaluate.py loads the model or the data."""
    def refuse(*_a, **_k):
        raise AssertionError("loaded before --out was checked")
    monkeypatch.setattr(ev, "load_model", refuse)
    monkeypatch.setattr(ev, "pick_items", refuse)


def _one_line_error(rc, err, only=False):
    """The error line that ends stderr (with only=True, the one line stderr holds)."""
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and (len(lines) == 1 or not only), err
    return lines[-1]


@pytest.mark.parametrize("case", ["file", "under-a-file", "report-is-a-folder"])
def test_bad_out_is_refused_before_the_model_loads(case, no_model, items_file, tiny_llama_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "outdir" / "report.json").mkdir(parents=True)
    out, message = {
        "file": (tmp_path / "afile", f"--out {tmp_path / 'afile'} is a file, not a folder"),
        "under-a-file": (tmp_path / "afile" / "eval", f"--out {tmp_path / 'afile' / 'eval'} cannot be created: "
                                                      f"{tmp_path / 'afile'} is a file, not a folder"),
        "report-is-a-folder": (tmp_path / "outdir", f"{tmp_path / 'outdir' / 'report.json'} is a folder"),
    }[case]
    rc, _, err = run_main(["--base", tiny_llama_dir, "--data", items_file, "--out", out], capsys)
    assert message in _one_line_error(rc, err, only=True)


def test_out_in_a_read_only_folder_is_refused(no_model, items_file, tiny_llama_dir, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0555 does not stop root's writes (the under-a-file case covers it)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = run_main(["--base", tiny_llama_dir, "--data", items_file, "--out", ro / "eval"], capsys)
    finally:
        ro.chmod(0o755)
    assert f"--out {ro / 'eval'} is not writable" in _one_line_error(rc, err, only=True)


# --- written as it goes: interruption, crash, resume ----------------------------------------------------------

TIMING = {"time", "seconds", "items_per_s"}


def _counting(monkeypatch, cls, fail_on=None, exc=None):
    """Wrap cls.predict: record each call's number of prompts, raise `exc` on call number `fail_on`."""
    real, calls = cls.predict, []

    def predict(self, prompts, **kw):
        calls.append(len(prompts))
        if len(calls) == fail_on:
            raise exc
        return real(self, prompts, **kw)
    monkeypatch.setattr(cls, "predict", predict)
    return calls


def _settled(report):
    return {k: v for k, v in report.items() if k not in TIMING}


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.fixture
def expected_args(tiny_llama_dir, items_file):
    return ["--base", tiny_llama_dir, "--data", items_file, "--split", "all", "--limit", 10, "--bits", 16,
            "--predictor", "expected", "--batch-size", 3]


def test_interrupted_run_keeps_its_rows_and_resume_ends_as_an_uninterrupted_run(expected_args, tmp_path, capsys,
                                                                                 monkeypatch):
    from evaluation import compute_metrics
    from predictors import ExpectedPredictor

    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_main(expected_args + ["--out", whole], capsys)[0] == 0
    with monkeypatch.context() as m:
        _counting(m, ExpectedPredictor, fail_on=3, exc=KeyboardInterrupt())
        rc, _, err = run_main(expected_args + ["--out", part], capsys)
    assert rc == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted: kept 6 of 10 predictions in {part}; "
                                            "run the same command with --resume to continue")
    rows, whole_rows = read_predictions(part), read_predictions(whole)
    assert rows == whole_rows[:6]   # written per batch, in item order, each row whole
    partial = _report(part)
    assert (partial["complete"], partial["n"], partial["total"]) == (False, 6, 10)
    guesses = [float(r["guess"]) if r["guess"] else None for r in rows]
    intervals = [(float(r["low"]), float(r["high"])) if r["low"] else None for r in rows]
    metrics = compute_metrics([float(r["truth"]) for r in rows], guesses, intervals=intervals)
    assert {k: partial[k] for k in metrics} == metrics   # n counts only the rows scored
    assert partial["interval"]["n"] == 6                  # the expected predictor states an interval per item
    assert not (part / "chart.png").exists()

    with monkeypatch.context() as m:
        calls = _counting(m, ExpectedPredictor)
        rc, stdout, _ = run_main(expected_args + ["--out", part, "--resume"], capsys)
    assert rc == 0 and calls == [3, 1]   # only the 4 items left
    assert (part / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()
    assert _settled(_report(part)) == _settled(_report(whole)) and _report(part)["complete"] is True
    assert (part / "chart.png").read_bytes().startswith(PNG_SIGNATURE) and "failures 0 of 10" in stdout


def test_rows_carry_the_searched_mass_and_an_older_folder_without_it_resumes(expected_args, tmp_path, capsys,
                                                                             monkeypatch):
    """Each row of predictions.csv says how much of the model's probability the search reached and whether that
    is too little (predict.py's "uncertain" rule); report.json's search_mass is their mean. A folder an older
    pricer wrote (no mass columns) resumes: its rows keep empty mass cells, the new rows get theirs."""
    from evaluation.pricing import uncertain
    from predictors import ExpectedPredictor

    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_main(expected_args + ["--out", whole], capsys)[0] == 0
    rows = read_predictions(whole)
    masses = [float(r["mass"]) for r in rows]
    assert all(0 < m <= 1 for m in masses) and [r["uncertain"] for r in rows] == [str(int(uncertain(m)))
                                                                                  for m in masses]
    assert statistics.fmean(masses) == pytest.approx(_report(whole)["search_mass"], abs=1e-4)
    with monkeypatch.context() as m:
        _counting(m, ExpectedPredictor, fail_on=3, exc=KeyboardInterrupt())
        assert run_main(expected_args + ["--out", part], capsys)[0] == 130
    with (part / "predictions.csv").open(newline="") as f:
        old = [row[:7] for row in csv.reader(f)]    # as a pricer before the mass columns wrote it
    with (part / "predictions.csv").open("w", newline="") as f:
        csv.writer(f).writerows(old)
    assert run_main(expected_args + ["--out", part, "--resume"], capsys)[0] == 0
    resumed = read_predictions(part)
    assert [r["mass"] for r in resumed] == [""] * 6 + [r["mass"] for r in rows[6:]]
    assert [{k: r[k] for k in list(r)[:7]} for r in resumed] == [{k: r[k] for k in list(r)[:7]} for r in rows]


def test_a_crash_keeps_the_finished_batches(expected_args, tmp_path, capsys, monkeypatch):
    from predictors import ExpectedPredictor

    out = tmp_path / "crash"
    _counting(monkeypatch, ExpectedPredictor, fail_on=2, exc=RuntimeError("CUDA out of memory"))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        ev.main([str(a) for a in expected_args + ["--out", out]])
    assert f"kept 3 of 10 predictions in {out}" in capsys.readouterr().err
    assert len(read_predictions(out)) == 3
    assert (_report(out)["complete"], _report(out)["n"]) == (False, 3)


@pytest.fixture
def median_args(items_file):
    return ["--predictor", "median", "--data", items_file, "--split", "all", "--limit", 20, "--batch-size", 4]


def _interrupted_median(monkeypatch, median_args, out, capsys, fail_on=3):
    from predictors import MedianBaseline

    with monkeypatch.context() as m:
        _counting(m, MedianBaseline, fail_on=fail_on, exc=KeyboardInterrupt())
        assert run_main(median_args + ["--out", out], capsys)[0] == 130


def test_resume_drops_a_torn_row_and_rows_the_report_does_not_count(median_args, tmp_path, capsys, monkeypatch):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_main(median_args + ["--out", whole], capsys)[0] == 0
    _interrupted_median(monkeypatch, median_args, part, capsys)
    rows = (whole / "predictions.csv").read_text().splitlines(keepends=True)
    with (part / "predictions.csv").open("a") as f:
        f.write(rows[9] + rows[10][:7])    # a row the report does not count yet, then a torn one
    assert run_main(median_args + ["--out", part, "--resume"], capsys)[0] == 0
    assert (part / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()
    assert _settled(_report(part)) == _settled(_report(whole))


@pytest.mark.parametrize("change, message", [
    (["--batch-size", "5"], "batch_size 5 (report.json has 4)"),
    (["--predictor", "mean"], "predictor 'mean' (report.json has 'median')"),
])
def test_resume_refuses_other_settings(change, message, median_args, tmp_path, capsys, monkeypatch):
    part = tmp_path / "part"
    _interrupted_median(monkeypatch, median_args, part, capsys)
    argv = median_args + change if change[0] != "--predictor" else [
        a if a != "median" else "mean" for a in median_args]
    rc, _, err = run_main(argv + ["--out", part, "--resume"], capsys)
    line = _one_line_error(rc, err)
    assert message in line and "--resume" in line


def test_resume_with_nothing_to_resume(median_args, tmp_path, capsys):
    rc, _, err = run_main(median_args + ["--out", tmp_path / "none", "--resume"], capsys)
    assert f"nothing to resume in {tmp_path / 'none'}" in _one_line_error(rc, err)


def test_resume_refuses_rows_of_other_items(median_args, tmp_path, capsys, monkeypatch):
    part = tmp_path / "part"
    _interrupted_median(monkeypatch, median_args, part, capsys)
    text = (part / "predictions.csv").read_text().splitlines(keepends=True)
    (part / "predictions.csv").write_text("".join(text[:2] + ["Someone else,1.00,2.00,1.00,green\n"] + text[3:]))
    rc, _, err = run_main(median_args + ["--out", part, "--resume"], capsys)
    assert "row 2 is 'Someone else'" in _one_line_error(rc, err)


def test_saved_files_are_readable_by_others(median_args, tmp_path, capsys, monkeypatch):
    old = os.umask(0o022)
    try:
        part = tmp_path / "part"
        _interrupted_median(monkeypatch, median_args, part, capsys)
        assert {p.name: p.stat().st_mode & 0o777 for p in part.iterdir()} == {
            "predictions.csv": 0o644, "report.json": 0o644}
        assert run_main(median_args + ["--out", part, "--resume"], capsys)[0] == 0
        assert {p.name: p.stat().st_mode & 0o777 for p in part.iterdir()} == {
            "predictions.csv": 0o644, "report.json": 0o644, "chart.png": 0o644}
        assert part.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


# --- failures, bad adapters, bad reports, bad data: honest numbers, one-line errors ----------------------------

def test_failures_are_misses_unless_scored_as_zero(items_file, tmp_path, capsys, monkeypatch):
    from predictors import MedianBaseline, Prediction

    monkeypatch.setattr(MedianBaseline, "predict", lambda self, prompts, **kw: [Prediction(None)] * len(prompts))
    args = ["--predictor", "median", "--data", items_file, "--split", "all", "--limit", 12]
    rc, stdout, _ = run_main(args + ["--out", tmp_path / "miss"], capsys)
    report = _report(tmp_path / "miss")
    assert rc == 0 and (report["failures"], report["hit_rate"], report["red"]) == (12, 0.0, 1.0)
    assert report["score_failures_as_zero"] is False
    assert ("failures 12 of 12 (no price in the reply): counted as misses; avg error and RMSLE score them as a "
            "$0 guess") in stdout
    truths = [float(r["truth"]) for r in read_predictions(tmp_path / "miss")]
    assert report["avg_error"] == pytest.approx(statistics.fmean(truths))
    rc, stdout, _ = run_main(args + ["--score-failures-as-zero", "--out", tmp_path / "zero"], capsys)
    zero = _report(tmp_path / "zero")
    assert zero["score_failures_as_zero"] is True and "--score-failures-as-zero" in stdout
    assert zero["hit_rate"] == pytest.approx(sum(t < 40 for t in truths) / 12)    # $0 within $40 of a cheap item


def test_adapter_with_nan_weights_is_refused(pricer_adapter, items_file, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-adapter"
    shutil.copytree(pricer_adapter, bad)
    tensors = {k: torch.full_like(v, float("nan")) for k, v in load_file(bad / "adapter_model.safetensors").items()}
    save_file(tensors, bad / "adapter_model.safetensors")
    out = tmp_path / "out"
    rc, _, err = run_main(["--adapter", bad, "--data", items_file, "--bits", 16, "--out", out], capsys)
    line = _one_line_error(rc, err)
    assert line.startswith(f"error: {bad / 'adapter_model.safetensors'}: base_model.model.") and "NaN" in line
    assert not out.exists()


@pytest.mark.parametrize("content, message", [(b"[]", "holds a list, not a report"), (b"{", "not valid JSON"),
                                              (b'{"n": 2}', "lacks avg_error")])
def test_compare_names_a_bad_report(content, message, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_bytes(content)
    rc, _, err = run_main(["--compare", tmp_path / "r"], capsys)
    assert _one_line_error(rc, err).startswith(f"error: {tmp_path / 'r' / 'report.json'}: {message}")


def test_csv_with_other_columns(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("name,cost\nA kettle,12\n")
    rc, _, err = run_main(["--predictor", "median", "--data", tmp_path / "x.csv", "--out", tmp_path / "o"], capsys)
    assert _one_line_error(rc, err) == (f"error: {tmp_path / 'x.csv'}: no price column; found columns: name, cost; "
                                        "need title, text (or description) and price")


@pytest.mark.parametrize("content", ["[]", '"x"', "{"])
def test_adapter_config_that_is_not_an_object(content, pricer_adapter, items_file, tmp_path, capsys):
    import shutil

    bad = tmp_path / "adapter"
    shutil.copytree(pricer_adapter, bad)
    (bad / "adapter_config.json").write_text(content)
    rc, _, err = run_main(["--adapter", bad, "--data", items_file, "--bits", 16, "--out", tmp_path / "o"], capsys)
    assert _one_line_error(rc, err).startswith(f"error: {bad / 'adapter_config.json'}: ")


def test_unreadable_run_config_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(SystemExit) as e:
        ev.parse_args(["--adapter", str(tmp_path / "run" / "adapter"), "--data", "d", "--out", "o"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'run' / 'config.yaml'}: not readable YAML" in err.strip().splitlines()[-1]
    (tmp_path / "run" / "config.yaml").write_text("- a list\n")   # not a mapping: the defaults apply
    assert ev.parse_args(["--adapter", str(tmp_path / "run" / "adapter"), "--data", "d", "--out", "o"]).seed == 42


def test_report_provenance_model_card_and_run_name(tiny_llama_dir, items_file, tmp_path, capsys):
    """report.json says which code and packages made it; the adapter folder is left as it was unless
    --update-card asks for the test metrics in its model card; a report of train.py's <run>/adapter goes by
    the run's name."""
    import shutil

    import torch

    from lora import LoRAConfig, inject_lora, save_adapter
    from transformers import AutoModelForCausalLM

    run = tmp_path / "my-run"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    inject_lora(model, LoRAConfig(r=2))
    save_adapter(model, run / "adapter", base_model_name_or_path=str(tiny_llama_dir))
    (run / "adapter" / "README.md").write_text("# my-run\n\n## Use\n")
    (run / "config.yaml").write_text("log:\n  run_name: tiny pricer\nmodel:\n  bits: 16\ndata:\n  answer_width: 4\n")
    before = {p.name: p.read_bytes() for p in (run / "adapter").iterdir()}
    args = ["--adapter", run / "adapter", "--data", items_file, "--split", "all", "--limit", 4,
            "--predictor", "expected", "--batch-size", 4]
    assert run_main([*args, "--out", tmp_path / "quiet"], capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in (run / "adapter").iterdir()} == before   # evaluating only reads
    out = tmp_path / "eval"
    assert run_main([*args, "--out", out, "--update-card"], capsys)[0] == 0
    report = json.loads((out / "report.json").read_text())
    assert report["name"] == "tiny pricer" and report["bits"] == 16        # from the run's config.yaml
    assert report["answer_width"] == 4 and report["search_digits"] == 4
    assert report["code"]["versions"]["torch"] == torch.__version__
    assert len(report["code"]["git"]["commit"]) == 40
    card = (run / "adapter" / "README.md").read_text()
    assert card.count("### ") == 1 and f"| RMSLE | {report['rmsle']:.3f} |" in card
    assert card.count("## Evaluations") == 1
    with pytest.raises(SystemExit):
        ev.parse_args(["--base", "b", "--data", "d", "--out", "o", "--update-card"])   # no adapter to write into
    assert "interval coverage" in card and "all split of" in card
    assert f"predictor expected, estimate mean, search width {report['search_width']}, device" in card
    shutil.copytree(run / "adapter", run / "adapter-best")
    from evaluation import model_name

    assert model_name(str(run / "adapter-best"), "x") == "tiny pricer (best)"


def test_holdout_source_is_the_test_split(tmp_path, capsys):
    """--holdout-source: the test split is that source's items (no duplicate of them is trained on)."""
    rows = [{"title": f"Item {i}", "text": f"Item {i}\nwords about item {i}", "price": 10.0 + i} for i in range(12)]
    folder = tmp_path / "data"
    folder.mkdir()
    for name, part in (("alpha.jsonl", rows[:8]), ("beta.jsonl", rows[8:])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "eval"
    rc, stdout, _ = run_main(["--predictor", "median", "--data", folder, "--holdout-source", "beta", "--out", out],
                             capsys)
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 4 and report["holdout_source"] == "beta"
    assert {r["title"] for r in read_predictions(out)} == {f"Item {i}" for i in range(8, 12)}


# --- what a run records is what ran: one writer, no mixed evaluations, safe cells, honest errors -----------------

def test_an_out_held_by_another_process_is_refused(no_model, items_file, tmp_path, capsys):
    import subprocess
    import textwrap

    out = tmp_path / "eval"
    script = textwrap.dedent("""
        import sys, time
        from utils.folder_lock import hold_folder
        with hold_folder(sys.argv[1], "evaluate.py"):
            print("held", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _, err = run_main(["--predictor", "median", "--data", items_file, "--out", out], capsys)
    finally:
        holder.kill()
        holder.wait()
    line = _one_line_error(rc, err, only=True)
    assert line.startswith(f"error: {out} is in use by pid {holder.pid} (") and "wait for it" in line


def test_a_fresh_run_refuses_a_used_out_and_overwrite_moves_it_aside(median_args, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_main(median_args + ["--out", out], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = run_main(median_args + ["--batch-size", 5, "--out", out], capsys)
    assert _one_line_error(rc, err) == (
        f"error: {out} holds an earlier evaluation (report.json, predictions.csv, chart.png; 20 of 20 items): "
        "continue it with --resume, or start afresh with --overwrite (the earlier one is moved aside, not deleted)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rc, _, err = run_main(median_args + ["--batch-size", 5, "--out", out, "--overwrite"], capsys)
    assert rc == 0 and _report(out)["batch_size"] == 5
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("eval.previous-")]
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before and str(aside) in err


def test_resume_refuses_an_adapter_whose_weights_changed(pricer_adapter, items_file, tmp_path, capsys, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    from predictors import GreedyPredictor

    adapter, out = tmp_path / "adapter", tmp_path / "eval"
    shutil.copytree(pricer_adapter, adapter)
    argv = ["--adapter", adapter, "--data", items_file, "--split", "all", "--limit", 6, "--bits", 16,
            "--max-new-tokens", 2, "--batch-size", 3, "--out", out]
    with monkeypatch.context() as m:
        _counting(m, GreedyPredictor, fail_on=2, exc=KeyboardInterrupt())
        assert run_main(argv, capsys)[0] == 130
    weights = adapter / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)   # retrained into the same folder
    rc, _, err = run_main(argv + ["--resume"], capsys)
    line = _one_line_error(rc, err)
    assert "was made with other settings; this run has adapter_sha256 '" in line and "--resume" in line
    assert _report(out)["complete"] is False


def test_resume_refuses_items_that_changed_after_the_kept_rows(median_args, items_file, tmp_path, capsys,
                                                               monkeypatch):
    data = tmp_path / "items.jsonl"
    data.write_text(items_file.read_text())
    argv = [str(data) if a == items_file else a for a in median_args]
    part = tmp_path / "part"
    _interrupted_median(monkeypatch, argv, part, capsys)
    last = pick_items(ev.parse_args([str(a) for a in argv + ["--out", part]]))[0][-1]   # not among the kept rows
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**r, "price": r["price"] + 1} if r["title"] == last.title else r) + "\n"
                            for r in rows))
    rc, _, err = run_main(argv + ["--out", part, "--resume"], capsys)
    assert "this run has items_sha256 '" in _one_line_error(rc, err)


FORMULA_TITLES = ["=HYPERLINK(\"http://x\",\"y\")", "+1 kettle", "-5% off a kettle", "@SUM(A1:A2)",
                  "'quoted' kettle", "A plain kettle"]


def test_formula_titles_are_escaped_and_read_back(tmp_path, capsys, monkeypatch):
    from evaluation.report import read_predictions as read_back
    from evaluation.redraw import redraw

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"title": t, "text": f"{t}\nwords about item {i}", "price": 10.0 + i}) + "\n"
                            for i, t in enumerate(FORMULA_TITLES)))
    argv = ["--predictor", "median", "--data", data, "--split", "all", "--batch-size", 2]
    part, whole = tmp_path / "part", tmp_path / "mean"
    _interrupted_median(monkeypatch, argv, part, capsys, fail_on=2)
    assert run_main(argv + ["--out", part, "--resume"], capsys)[0] == 0
    with (part / "predictions.csv").open(newline="") as f:
        cells = [row[0] for row in csv.reader(f)][1:]
    titles = [it.title for it in pick_items(ev.parse_args([str(a) for a in argv + ["--out", part]]))[0]]
    assert sorted(titles) == sorted(FORMULA_TITLES) and len(cells) == 6
    assert cells == [("'" + t if t[0] in "=+-@'" else t) for t in titles]   # each text cell safe in a spreadsheet
    assert [r["title"] for r in read_back(part)] == titles                  # and read back as it was
    assert run_main([a if a != "median" else "mean" for a in argv] + ["--out", whole], capsys)[0] == 0
    rc, stdout, _ = run_main(["--compare", part, whole], capsys)
    assert rc == 0 and "mean (6 items)" in stdout                            # paired item by item, by title
    assert redraw(part).read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", "0"), ("--max-new-tokens", "-1"),
                                         ("--max-text-tokens", "0"), ("--max-text-tokens", "-5")])
def test_counts_out_of_range_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        ev.parse_args(["--base", "b", "--data", "d", "--out", "o", flag, value])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert last == f"evaluate.py: error: argument {flag}: must be a positive whole number, got {value}"


def test_a_bad_calibration_beside_the_adapter_is_a_usage_error(pricer_adapter, tmp_path, capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(pricer_adapter, adapter)
    (adapter / "interval_calibration.json").write_text('{"margin": -3}')
    with pytest.raises(SystemExit) as e:
        ev.parse_args(["--adapter", str(adapter), "--predictor", "expected", "--data", "d", "--out", "o"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{adapter / 'interval_calibration.json'}: margin -3 is outside [-1, 10]" in err.strip().splitlines()[-1]


FULL_DISK = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))   # as a disk with `limit` bytes left per file
import evaluate
sys.exit(evaluate.main(sys.argv[2:]))
"""


def test_a_full_disk_keeps_the_rows_and_says_to_resume(tmp_path, capsys):
    import subprocess

    data = tmp_path / "items.jsonl"   # long titles: predictions.csv outgrows report.json within a few batches
    data.write_text("".join(json.dumps({"title": f"Kettle {i} " + "steel " * 40, "text": f"Kettle {i}\nwords",
                                        "price": 10.0 + i}) + "\n" for i in range(24)))
    argv = ["--predictor", "median", "--data", data, "--split", "all", "--batch-size", 4]
    whole, out = tmp_path / "whole", tmp_path / "full"
    assert run_main(argv + ["--out", whole], capsys)[0] == 0
    rows = (whole / "predictions.csv").read_bytes().splitlines(keepends=True)
    limit = len(b"".join(rows[:1 + 12])) + 1   # room for three batches' rows, not four; report.json fits
    assert (whole / "report.json").stat().st_size < limit
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *map(str, argv), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: could not write {out / 'predictions.csv'} (File too large); kept 12 of 24 predictions in {out}: "
        "free some disk space, then run the same command with --resume")
    assert (_report(out)["n"], len(read_predictions(out))) == (12, 12)
    assert run_main(argv + ["--out", out, "--resume"], capsys)[0] == 0
    assert (out / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
