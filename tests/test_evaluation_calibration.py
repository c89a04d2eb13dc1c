"""evaluation/calibration.py: the conformal margin by hand, the fitted file, and predict.py using it."""
from __future__ import annotations

import csv
import json
import math
import re

import pytest

import predict
from evaluation.calibration import coverage_of, fit_margin, main, scores
from lora import LoRAConfig, inject_lora, save_adapter
from predictors.interval_margin import FILE, CalibrationError, load_margin


def test_scores_are_log_distances_outside_the_interval():
    got = scores([5.0, 15.0, 40.0], [(10.0, 20.0)] * 3)
    assert got == pytest.approx([math.log(2), max(math.log(10 / 15), math.log(15 / 20)), math.log(2)])


def test_margin_is_the_conformal_rank_of_the_scores():
    # 9 items, coverage 0.8: rank ceil(10 * 0.8) = 8, the 8th smallest score
    truths = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    intervals = ([(t / 2, t * 2) for t in truths[:5]]          # inside: score -ln 2
                 + [(t * 1.1, t * 1.2) for t in truths[5:7]]   # just above the truth: ln 1.1
                 + [(1.0, 2.0), (45.0, 54.0)])                 # 8 is 4x the top (ln 4), 9 a fifth of the low (ln 5)
    s = sorted(scores(truths, intervals))
    assert fit_margin(truths, intervals, 0.8) == pytest.approx(s[7])
    assert s[7] == pytest.approx(math.log(4))          # the truth 8 is 4x above its interval's top
    assert coverage_of(truths, intervals, s[7]) >= 0.8 > coverage_of(truths, intervals)


def test_too_few_items_cannot_calibrate():
    with pytest.raises(CalibrationError, match="cannot calibrate 80% coverage"):
        fit_margin([1.0, 2.0, 3.0], [(1.0, 2.0)] * 3, 0.8)    # rank ceil(4 * 0.8) = 4 > 3


def write_eval(folder, rows, **report):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"split": "val", **report}))
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "truth", "guess", "error", "colour", "low", "high"])
        w.writerows([[f"item {i}", t, t, 0, "green", lo, hi] for i, (t, lo, hi) in enumerate(rows)])
    return folder


def test_cli_fits_writes_and_refuses_widened_intervals(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    rows = [(10.0 * (i + 1), 10.0 * (i + 1) * 1.5, 10.0 * (i + 1) * 3) for i in range(10)]   # all truths below
    write_eval(adapter / "eval-val", rows)
    assert main(["--adapter", str(adapter)]) == 0
    assert "coverage 0.0% -> " in capsys.readouterr().out
    saved = json.loads((adapter / FILE).read_text())
    assert saved["margin"] == pytest.approx(math.log(1.5)) and saved["n"] == 10 and saved["split"] == "val"
    assert load_margin(adapter) == pytest.approx(math.log(1.5))
    write_eval(tmp_path / "again", rows, interval_margin=0.4)
    assert main(["--adapter", str(adapter), "--predictions", str(tmp_path / "again")]) == 2
    assert "already widened" in capsys.readouterr().err
    write_eval(tmp_path / "empty", [])   # --check on a file with no intervals: one line, not a traceback
    assert main(["--adapter", str(adapter), "--check", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no item with a stated interval" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    inject_lora(model, LoRAConfig(r=2))
    return save_adapter(model, tmp_path_factory.mktemp("run") / "adapter", base_model_name_or_path=str(tiny_llama_dir))


def interval_of(line):
    low, high = re.search(r"interval \$([\d,.]+) to \$([\d,.]+)", line).groups()
    return float(low.replace(",", "")), float(high.replace(",", ""))


def test_predict_widens_by_the_stored_margin_unless_told_not_to(adapter, capsys):
    common = ["--adapter", str(adapter), "--text", "Cordless drill", "--bits", "16", "--search-width", "3",
              "--search-digits", "2"]
    assert predict.main(common) == 0
    raw_line = capsys.readouterr().out.splitlines()[0]
    (adapter / FILE).write_text(json.dumps({"margin": math.log(2)}))
    try:
        assert predict.main(common) == 0
        wide_line = capsys.readouterr().out.splitlines()[0]
        assert predict.main(common + ["--interval-calibration", "off"]) == 0
        off_line = capsys.readouterr().out.splitlines()[0]
        with pytest.raises(SystemExit):
            predict.main(common[:6] + ["--predictor", "greedy", "--interval-calibration", "off"])
        assert "--interval-calibration: only for --predictor expected" in capsys.readouterr().err
    finally:
        (adapter / FILE).unlink()
    (low, high), (wlow, whigh) = interval_of(raw_line), interval_of(wide_line)
    assert (wlow, whigh) == pytest.approx((low / 2, high * 2), abs=0.01)
    assert "widened x2.00 as calibrated on validation" in wide_line and off_line == raw_line


@pytest.mark.parametrize("name", ["smollm2-135m-pricer", "gemma3-270m-pricer"])
def test_shipped_calibrations_refit_from_their_validation_reports(name):
    """Each shipped adapter's stored margin is what its committed validation predictions give, and covers 80%."""
    from pathlib import Path

    from evaluation.calibration import read_intervals

    adapter = Path(__file__).resolve().parent.parent / "adapters" / name
    truths, intervals, report = read_intervals(adapter / "eval-val")
    assert report["split"] == "val" and len(truths) == 657
    margin = fit_margin(truths, intervals)
    assert load_margin(adapter) == pytest.approx(margin, abs=1e-12)
    assert coverage_of(truths, intervals, margin) >= 0.8 > coverage_of(truths, intervals)
