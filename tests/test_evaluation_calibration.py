"""evaluation/calibration.py: the conformal margin by hand, the fitted file, and predict.py using it."""
from __future__ import annotations

import csv
import json
import math
import re

import pytest

import predict
from evaluation.calibration import coverage_of, fit_margin, fit_worst_case, main, scores
from lora import LoRAConfig, inject_lora, save_adapter
from predictors.interval_margin import FILE, SEARCH_KEYS, CalibrationError, load_margin


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


def write_eval(folder, rows, overwrite=False, **report):
    folder.mkdir(parents=True, exist_ok=overwrite)
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


def rows_scoring(scores_wanted, truth=100.0):
    """(truth, low, high) rows whose conformity scores are `scores_wanted`: above the truth for a positive score,
    around it for a negative one."""
    return [(truth, truth * math.exp(s), truth * math.exp(s) * 2) if s > 0 else
            (truth, truth * math.exp(s), truth * math.exp(-s)) for s in scores_wanted]


# Source A's truths sit far below its intervals, B's mostly inside: no margin suits both.
SOURCE_A = [0.1, 0.2, 0.3, 0.4, 0.5]
SOURCE_B = [-0.5, -0.4, -0.3, -0.2, 0.35]


def test_worst_case_margin_by_hand():
    """Coverage at q: A's and B's share of scores <= q. q 0.2: A 2/5 (0.4 off 80%); 0.3: A 3/5, B 4/5 (worst 0.2);
    0.35, 0.4 and 0.5 are no better (B 5/5 is 0.2 over): the smallest of the best, 0.3, wins. Each source's own
    fit (rank ceil(6 * 0.8) = 5) is its largest score: 0.5 for A covers all of B, 0.35 for B 3/5 of A."""
    groups = [tuple(zip(*[(t, (lo, hi)) for t, lo, hi in rows_scoring(s)])) for s in (SOURCE_A, SOURCE_B)]
    margin, worst = fit_worst_case(groups, 0.8)
    assert margin == pytest.approx(0.3, abs=1e-8) and worst == pytest.approx(0.2)
    assert [coverage_of(t, iv, margin) for t, iv in groups] == [0.6, 0.8]
    assert [fit_margin(t, iv) for t, iv in groups] == pytest.approx([0.5, 0.35])
    assert coverage_of(*groups[1], fit_margin(*groups[0])) == 1.0
    assert coverage_of(*groups[0], fit_margin(*groups[1])) == 0.6
    # One group: the margin that puts it nearest 80%, here exactly on it (the split-conformal margin's coverage)
    assert fit_worst_case(groups[1:], 0.8)[1] == pytest.approx(0.0)
    with pytest.raises(CalibrationError, match="at least one held-out group"):
        fit_worst_case([], 0.8)


def test_cli_fits_leave_one_source_out_and_records_each_source(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_eval(adapter / "eval-val", [(10.0 * (i + 1), 10.0 * (i + 1) * 1.5, 10.0 * (i + 1) * 3) for i in range(10)],
               base="smol")
    a = write_eval(tmp_path / "held-out-a", rows_scoring(SOURCE_A), holdout_source="a", split="test")
    b = write_eval(tmp_path / "held-out-b", rows_scoring(SOURCE_B), holdout_source="b", split="test")
    assert main(["--adapter", str(adapter), "--held-out", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "margin +0.300 (x1.35 outward), leave-one-source-out: the worst of 2 held-out sources is 20.0 points " \
           "from 80%" in out
    assert f"held-out a ({a}): 5 items, coverage 0.0% -> 60.0%" in out
    assert f"held-out b ({b}): 5 items, coverage 80.0% -> 80.0%" in out
    assert "val (" in out and "10 items: coverage 0.0% -> 0.0% (its own fit: margin +0.405)" in out
    saved = json.loads((adapter / FILE).read_text())
    assert saved["margin"] == pytest.approx(0.3, abs=1e-8) and load_margin(adapter) == saved["margin"]
    assert saved["method"].startswith("leave-one-source-out") and saved["worst_distance"] == pytest.approx(0.2)
    assert [(h["source"], h["n"], h["coverage"]) for h in saved["held_out"]] == [("a", 5, 0.6), ("b", 5, 0.8)]
    assert (saved["n"], saved["split"], saved["calibrated_coverage"]) == (10, "val", 0.0)
    assert saved["validation_margin"] == pytest.approx(math.log(1.5))
    # Without --held-out the old fit, on validation alone, and no held-out fields
    assert main(["--adapter", str(adapter)]) == 0
    capsys.readouterr()
    assert "held_out" not in json.loads((adapter / FILE).read_text())
    # A folder that is no held-out evaluation, or whose intervals were widened, is refused in one line
    for bad, message in ((write_eval(tmp_path / "pool", rows_scoring(SOURCE_B), split="test"), "names no held-out"),
                         (write_eval(tmp_path / "wide", rows_scoring(SOURCE_B), holdout_source="b",
                                     interval_margin=0.3), "already widened"),
                         (write_eval(tmp_path / "other", rows_scoring(SOURCE_B), holdout_source="b", base="gemma",
                                     split="test"), "evaluates a gemma adapter"),
                         (write_eval(tmp_path / "w100", rows_scoring(SOURCE_B), holdout_source="b", split="test",
                                     search_width=100), None)):
        if message is None:   # validation searched at width 30: a held-out run at 100 is another search
            write_eval(adapter / "eval-val", [(10.0, 15.0, 30.0)] * 10, base="smol", search_width=30, overwrite=True)
            message = "searched otherwise than"
        assert main(["--adapter", str(adapter), "--held-out", str(a), str(bad)]) == 2
        assert message in capsys.readouterr().err


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


def test_a_margin_fitted_on_another_search_is_said(tmp_path, adapter, capsys):
    """The fit records the search it was fitted on; a run that searches otherwise says so (and still widens)."""
    folder = tmp_path / "fit"
    folder.mkdir()
    write_eval(folder / "eval-val", [(10.0 * (i + 1), 15.0 * (i + 1), 30.0 * (i + 1)) for i in range(10)],
               search_width=3, search_digits=2, search_accounting="none")
    assert main(["--adapter", str(folder)]) == 0
    saved = json.loads((folder / FILE).read_text())
    assert (saved["search_width"], saved["search_digits"], saved["search_accounting"]) == (3, 2, "none")
    common = ["--adapter", str(adapter), "--text", "Cordless drill", "--bits", "16", "--search-digits", "2"]
    capsys.readouterr()
    (adapter / FILE).write_text(json.dumps(saved))
    try:
        assert predict.main(common + ["--search-width", "3"]) == 0
        assert "not calibrated" not in capsys.readouterr().err
        assert predict.main(common + ["--search-width", "4"]) == 0
        err = capsys.readouterr().err
        (adapter / FILE).write_text(json.dumps({"margin": saved["margin"]}))   # a file from before the fields
        assert predict.main(common + ["--search-width", "4"]) == 0
        assert "not calibrated" not in capsys.readouterr().err
    finally:
        (adapter / FILE).unlink()
    assert f"note: the interval margin in {adapter}/{FILE} was fitted on a search with search width 3, now 4: " \
           "these 80% intervals are not calibrated for this search" in err


@pytest.mark.parametrize("name", ["smollm2-135m-pricer", "gemma3-270m-pricer"])
def test_shipped_calibrations_refit_from_their_committed_reports(name):
    """Each shipped adapter's stored margin is what the committed predictions it names give: its validation
    report's split-conformal margin, or, fitted leave-one-source-out, the minimax margin of the held-out reports
    (each searched as validation was), with the coverages the file states."""
    from pathlib import Path

    from evaluation.calibration import fit_worst_case, read_intervals

    root = Path(__file__).resolve().parent.parent
    adapter = root / "adapters" / name
    truths, intervals, report = read_intervals(adapter / "eval-val")
    assert report["split"] == "val" and len(truths) == 657
    stored = json.loads((adapter / FILE).read_text())
    if "held_out" in stored:
        groups = [read_intervals(root / h["folder"]) for h in stored["held_out"]]
        margin, worst = fit_worst_case([(t, iv) for t, iv, _ in groups])
        assert stored["worst_distance"] == pytest.approx(worst, abs=1e-12)
        assert stored["validation_margin"] == pytest.approx(fit_margin(truths, intervals), abs=1e-12)
        for h, (t, iv, r) in zip(stored["held_out"], groups):
            assert r["holdout_source"] == h["source"] and {k: r[k] for k in SEARCH_KEYS} == \
                {k: report[k] for k in SEARCH_KEYS}
            assert coverage_of(t, iv, margin) == pytest.approx(h["coverage"], abs=1e-12)
            assert abs(h["coverage"] - 0.8) <= worst + 1e-12
    else:
        margin = fit_margin(truths, intervals)
        assert coverage_of(truths, intervals, margin) >= 0.8 > coverage_of(truths, intervals)
    assert load_margin(adapter) == pytest.approx(margin, abs=1e-12)
    # ... fitted on the search that report ran, which an unset --search-width then takes
    assert {k: stored[k] for k in SEARCH_KEYS} == {k: report[k] for k in SEARCH_KEYS}


def test_unset_search_options_take_the_fitted_search(tmp_path, capsys):
    """A margin holds for the search it was fitted on: --search-width/--search-digits/--search-accounting left unset
    take the fitted ones; set, they win (and the note says the intervals are not calibrated)."""
    import argparse

    from predictors.digit_search import SEARCH_DIGITS, SEARCH_WIDTH
    from predictors.expected import ExpectedPredictor

    (tmp_path / FILE).write_text(json.dumps({"margin": 0.3, "search_width": 7, "search_digits": 3,
                                             "search_accounting": "by-length"}))

    def predictor(**given):
        options = {"adapter": str(tmp_path), "estimate": None, "search_width": None, "search_digits": None,
                   "search_accounting": None, "interval_calibration": None, **given}
        return ExpectedPredictor.from_args(argparse.Namespace(**options))

    fitted = predictor()
    assert (fitted.search_width, fitted.search_digits, fitted.accounting, fitted.interval_margin) == (
        7, 3, "by-length", 0.3)
    assert "not calibrated" not in capsys.readouterr().err
    assert predictor(search_width=12).search_width == 12 and "search width 7, now 12" in capsys.readouterr().err
    off = predictor(interval_calibration="off")   # no margin used: the global defaults, nothing to say
    assert (off.search_width, off.search_digits, off.interval_margin) == (SEARCH_WIDTH, SEARCH_DIGITS, 0.0)
    for bad in ({"search_width": 0}, {"search_width": "7"}, {"search_digits": True}, {"search_accounting": "all"}):
        (tmp_path / FILE).write_text(json.dumps({"margin": 0.3, **bad}))
        with pytest.raises(CalibrationError, match=next(iter(bad))):
            predictor()
