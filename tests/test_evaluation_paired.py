"""evaluation/paired.py: two evaluations of the same items compared item by item, with a paired bootstrap
interval; and evaluate.py --compare printing it."""
from __future__ import annotations

import math

import pytest

import evaluate as ev
from evaluation.metrics import compute_metrics, item_scores
from evaluation.paired import compare_folders, match, paired_differences, paired_folders, verdict
from evaluation.report import load_reports, write_report


def test_item_scores_average_to_the_reports_metrics():
    truths = [10.0, 100.0, 500.0, 40.0, 900.0]
    guesses = [12.0, None, 100.0, 45.0, 1200.0]
    errors, sles, colours = item_scores(truths, guesses)
    m = compute_metrics(truths, guesses)
    assert sum(errors) / 5 == pytest.approx(m["avg_error"]) and math.sqrt(sum(sles) / 5) == pytest.approx(m["rmsle"])
    assert colours.count("green") / 5 == m["hit_rate"] and colours[1] == "red"      # the failure: a miss
    assert errors[1] == 100.0 and sles[1] == pytest.approx(math.log1p(100.0) ** 2)  # scored as a $0 guess


def test_the_same_guesses_differ_by_nothing():
    truths, guesses = [10.0, 20.0, 300.0], [11.0, 35.0, 200.0]
    d = paired_differences(truths, guesses, list(guesses), resamples=200)
    assert d["n"] == 3 and all(d[k] == (0.0, 0.0, 0.0) for k in ("rmsle", "hit_rate", "avg_error"))


def test_differences_worked_by_hand():
    # A prices every item right; B misses the last of four by $100 (a red miss: 50% off a $200 item)
    truths = [10.0, 20.0, 30.0, 200.0]
    b = [10.0, 20.0, 30.0, 100.0]
    d = paired_differences(truths, truths, b, resamples=500)
    rmsle = math.sqrt((math.log1p(100.0) - math.log1p(200.0)) ** 2 / 4)
    assert d["rmsle"][0] == pytest.approx(rmsle) and d["hit_rate"][0] == pytest.approx(-0.25)
    assert d["avg_error"][0] == pytest.approx(25.0)
    for k in ("rmsle", "hit_rate", "avg_error"):
        low, high = d[k][1], d[k][2]
        assert low <= d[k][0] <= high and low < high     # one item in four: resamples see it 0 to 4 times
    assert d["hit_rate"][1] < 0 and d["hit_rate"][2] <= 0 and d["hit_rate"][1] >= -1   # B never hits more than A


def test_a_difference_on_every_item_has_no_spread():
    truths = [50.0, 120.0, 400.0, 900.0] * 5
    a = [t * 3 for t in truths]      # all red misses (off by $100 or more, and 200%)
    d = paired_differences(truths, a, truths, resamples=300)
    assert d["hit_rate"] == (1.0, 1.0, 1.0)
    assert d["rmsle"][1] < d["rmsle"][0] < d["rmsle"][2] < 0


def test_the_interval_narrows_as_one_over_root_n_and_is_seeded():
    truths = [10.0 + 7 * i % 300 for i in range(400)]
    a = [t * (1.3 if i % 3 else 0.6) for i, t in enumerate(truths)]
    b = [t * (1.1 if i % 4 else 0.7) for i, t in enumerate(truths)]
    small = paired_differences(truths[:100], a[:100], b[:100])
    large = paired_differences(truths, a, b)
    ratio = (large["rmsle"][2] - large["rmsle"][1]) / (small["rmsle"][2] - small["rmsle"][1])
    assert 0.35 < ratio < 0.65        # 1/sqrt(4) = 0.5
    assert paired_differences(truths, a, b) == large != paired_differences(truths, a, b, seed=1)


def test_no_items_is_an_error():
    with pytest.raises(ValueError, match="no items in common"):
        paired_differences([], [], [])


def test_match_pairs_by_title_and_truth_in_any_order():
    a = [{"title": "x", "truth": 10.0, "guess": 11.0}, {"title": "y", "truth": 20.0, "guess": 21.0},
         {"title": "x", "truth": 10.0, "guess": 12.0}, {"title": "z", "truth": 5.0, "guess": 6.0},
         {"title": "y", "truth": 99.0, "guess": 1.0}]
    b = [{"title": "y", "truth": 20.0, "guess": 25.0}, {"title": "x", "truth": 10.0, "guess": 13.0},
         {"title": "x", "truth": 10.0, "guess": 14.0}, {"title": "w", "truth": 5.0, "guess": 6.0},
         {"title": "x", "truth": 10.0, "guess": 15.0}]
    truths, ga, gb = match(a, b)
    # x twice (A has two, B three: the first two of B's in order), y at $20 once; z, w and y at $99 unmatched
    assert truths == [10.0, 20.0, 10.0] and ga == [11.0, 21.0, 12.0] and gb == [13.0, 25.0, 14.0]


def _reports(tmp_path):
    truths = [10.0, 20.0, 30.0, 200.0]
    titles = ["a", "b", "c", "d"]
    write_report(tmp_path / "A", titles, truths, truths, {}, "A")
    # B's rows in another order, as another tokenizer's length order would write them
    write_report(tmp_path / "B", titles[::-1], truths[::-1], [100.0, 30.0, 20.0, 10.0], {}, "B")
    write_report(tmp_path / "other", ["p", "q"], [5.0, 6.0], [5.0, 6.0], {}, "other")
    return truths


def test_compare_prints_each_report_against_the_first(tmp_path, capsys):
    _reports(tmp_path)
    (tmp_path / "no-rows").mkdir()
    (tmp_path / "no-rows" / "report.json").write_text((tmp_path / "other" / "report.json").read_text())
    rc = ev.main(["--compare"] + [str(tmp_path / d) for d in ("A", "B", "other", "no-rows")])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("paired against A"))
    b_line, other_line, no_rows_line = lines[start + 1:start + 4]
    rmsle = math.sqrt((math.log1p(100.0) - math.log1p(200.0)) ** 2 / 4)
    assert b_line.startswith(f"  B (4 items): RMSLE +{rmsle:.3f} [") and "hit rate -25.0 [" in b_line
    assert other_line == "  other: not paired: no items in common (another split or seed?)"
    assert no_rows_line.startswith("  no-rows: not paired: ") and "cannot be read" in no_rows_line


def test_compare_with_one_report_or_a_first_without_predictions(tmp_path):
    _reports(tmp_path)
    folders = [tmp_path / "A"]
    assert compare_folders(folders, load_reports(folders)) is None
    (tmp_path / "A" / "predictions.csv").unlink()
    folders = [tmp_path / "A", tmp_path / "B"]
    text = compare_folders(folders, load_reports(folders))
    assert text.startswith("not paired against A: ") and "predictions.csv: cannot be read" in text
    assert len(text.splitlines()) == 1


def test_reports_scored_differently_are_not_paired(tmp_path):
    _reports(tmp_path)
    write_report(tmp_path / "Z", ["a"], [10.0], [None], {}, "Z", failures_as_zero=True)
    folders = [tmp_path / "A", tmp_path / "Z"]
    text = compare_folders(folders, load_reports(folders))
    assert text.splitlines()[1] == "  Z: not paired: it scores failures otherwise (--score-failures-as-zero)"


def test_paired_folders_and_the_verdict_on_each_metric(tmp_path):
    truths = _reports(tmp_path)
    d = paired_folders(tmp_path / "A", tmp_path / "B")
    # B, matched back to A's order, guesses 10, 20, 30, 100 for truths 10, 20, 30, 200: only the last is off
    assert d == paired_differences(truths, truths, [10.0, 20.0, 30.0, 100.0])
    assert verdict((-0.2, -0.3, -0.1), lower_is_better=True) == "better"
    assert verdict((-0.2, -0.3, -0.1), lower_is_better=False) == "worse"
    assert verdict((0.02, -0.01, 0.05), lower_is_better=False) == "not told apart"
    assert verdict((0.0, 0.0, 0.0), lower_is_better=True) == "not told apart"
    assert verdict((0.03, 0.01, 0.05), lower_is_better=True) == "worse"
    with pytest.raises(ValueError, match="no items in common"):
        paired_folders(tmp_path / "A", tmp_path / "other")
