"""The quality measuring tools: bench.shrinkage (stretching guesses), bench.results_table, bench.blend, and
the reference stack's LoRA+ (bench.reference_train) against train.py's."""
from __future__ import annotations

import csv
import json
import math
import sys

import pytest

import bench.blend as blend
import bench.results_table as table
import bench.shrinkage as shrink
from train_runs import metrics, tiny_args


def write_predictions(folder, rows):
    """An evaluate.py-style predictions.csv of (title, truth, guess) rows; a guess of None is a failure."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "truth", "guess", "error", "colour", "low", "high"])
        for title, truth, guess in rows:
            w.writerow([title, f"{truth:.2f}", "" if guess is None else f"{guess:.2f}", "", "", "", ""])
    return folder


def test_stretch_moves_guesses_k_times_as_far_from_the_centre():
    centre = math.log(10.0)
    assert shrink.stretch([100.0, 10.0, 1.0, None], centre, 2.0) == pytest.approx([1000.0, 10.0, 0.1, None])
    assert shrink.stretch([37.5], centre, 1.0) == pytest.approx([37.5])


def test_slope_of_log_guess_on_log_truth():
    truths = [1.0, 10.0, 100.0, 1000.0]
    assert shrink.slope(truths, [3 * t ** 0.5 for t in truths]) == pytest.approx(0.5)
    assert shrink.slope(truths, truths) == pytest.approx(1.0)


def test_shrinkage_cli_picks_the_smallest_k_that_meets_the_goal(tmp_path, capsys, monkeypatch):
    # Dear items guessed at a third of the truth: lean ln(1/3) = -1.10 above $300 as guessed.
    rows = [(f"cheap {i}", 5.0, 5.0) for i in range(6)] + [(f"dear {i}", 600.0, 200.0) for i in range(4)]
    fit = write_predictions(tmp_path / "val", rows)
    monkeypatch.setattr(sys, "argv", ["shrinkage", "--fit", str(fit / "predictions.csv"), "--ks", "1,1.5,2"])
    shrink.main()
    out = capsys.readouterr().out
    centre = (6 * math.log(5.0) + 4 * math.log(600.0)) / 10
    lean = {k: centre + k * (math.log(200.0) - centre) - math.log(600.0) for k in (1, 1.5, 2)}
    assert lean[1] == pytest.approx(math.log(1 / 3))
    pick = min(k for k in (1, 1.5, 2) if lean[k] >= shrink.GOAL)
    assert f"reaches {shrink.GOAL}: {pick:g}" in out
    assert f"{lean[1]:+.2f} (4)" in out


def test_information_bound_of_calibrated_normal_guesses():
    # ln truth = ln guess + noise: the guesses are E[ln truth | guess] exactly (calibrated), and the truths are
    # jointly normal with them. Sorted by the truth they still lean, -(MSE / Var) (ln y - mean), which the
    # bound computes from the error alone; and the error that brings the lean to the goal is worked out by hand.
    import random
    rng = random.Random(0)
    mean, sd_guess, sd_noise = math.log(30.0), 1.4, 0.7
    guesses = [math.exp(rng.gauss(mean, sd_guess)) for _ in range(40_000)]
    truths = [g * math.exp(rng.gauss(0.0, sd_noise)) for g in guesses]
    b = shrink.information_bound(truths, guesses)
    assert b["calibration"] == pytest.approx(1.0, abs=0.02)
    assert b["rmse"] == pytest.approx(sd_noise, rel=0.02)
    dear = [(t, g) for t, g in zip(truths, guesses) if 300 <= t < 1000]
    observed = sum(math.log(g / t) for t, g in dear) / len(dear)
    assert len(dear) > 1000 and b["lean_if_calibrated"] == pytest.approx(observed, abs=0.04)
    logs = [math.log(t) for t in truths]
    var = sum((v - sum(logs) / len(logs)) ** 2 for v in logs) / len(logs)
    gap = sum(math.log(t) for t, _ in dear) / len(dear) - sum(logs) / len(logs)   # the bucket above the mean
    assert b["lean_if_calibrated"] == pytest.approx(-b["rmse"] ** 2 / var * gap)
    assert b["rmse_for_goal"] == pytest.approx(math.sqrt(-shrink.GOAL * var / gap))
    assert var == pytest.approx(sd_guess ** 2 + sd_noise ** 2, rel=0.03)
    # Guesses pulled halfway to the middle are no longer calibrated: ln truth moves twice as fast as ln guess
    pulled = [math.exp(mean + (math.log(g) - mean) / 2) for g in guesses]
    assert shrink.information_bound(truths, pulled)["calibration"] == pytest.approx(2.0, abs=0.05)


def report(split="test", sample="pool", holdout=None, rmsle=0.5, hits=0.7, name="m"):
    return {"name": name, "split": split, "sample": sample, "holdout_source": holdout, "n": 10, "rmsle": rmsle,
            "hit_rate": hits, "log_ratio": 0.0, "by_bucket": [{"bucket": "$300-1000", "log_ratio": -0.5}]}


def test_split_labels():
    assert table.split_label(report()) == "pool"
    assert table.split_label(report(sample="balanced")) == "balanced"
    assert table.split_label(report(split="val")) == "validation"
    assert table.split_label(report(holdout="mixed", sample="loso-mixed")) == "held-out mixed"


def test_matrix_and_comparison_with_the_baseline(tmp_path):
    reports = {"a-pool": report(rmsle=0.6), "a-bal": report(sample="balanced", rmsle=0.7, hits=0.65),
               "ridge-pool": report(rmsle=0.75, hits=0.74), "ridge-bal": report(sample="balanced", rmsle=0.875)}
    for name, r in reports.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
    rows = table.parse_entries([f"A={tmp_path / 'a-pool'}", f"A={tmp_path / 'a-bal'}"])
    base = {table.split_label(r): r for _, r in table.parse_entries([str(tmp_path / "ridge-pool"),
                                                                     str(tmp_path / "ridge-bal")])}
    lines = table.matrix(rows, base).splitlines()
    assert lines[0] == "| model | pool | balanced |"
    assert lines[2] == "| A | 0.600 / 70.0% | 0.700 / 65.0% |"
    assert lines[3] == "| TF-IDF + ridge | 0.750 / 74.0% | 0.875 / 70.0% |"
    assert table.against(rows[0][1], base["pool"]) == "-20% / -4.0"    # 0.6 / 0.75 - 1, 70 - 74 points
    assert table.against(rows[1][1], base["balanced"]) == "-20% / -5.0"


def test_bucket_table_prints_hits_and_lean_per_bucket(tmp_path):
    # $5 guessed $5 (hit), $30 guessed $60 (hit: $30 off), $400 guessed $100 (miss, lean ln 1/4)
    from evaluation.report import write_report
    folder = tmp_path / "m"
    write_report(folder, ["a", "b", "c"], [5.0, 30.0, 400.0], [5.0, 60.0, 100.0], {"name": "m", "split": "test"}, "m")
    lines = table.bucket_table(table.parse_entries([f"M={folder}"]), {}).splitlines()
    assert lines[0] == "| model | split | <$10 | $10-50 | $50-100 | $100-300 | $300-1000 | >=$1000 |"
    assert lines[2] == (f"| M | pool | 100% / +0.00 (1) | 100% / {math.log(2):+.2f} (1) | - | - | "
                        f"0% / {math.log(0.25):+.2f} (1) | - |")

    assert lines[-1] == "hit rate / lean (mean ln(guess / truth)) / interval coverage (n)"   # no interval stated


def test_bucket_table_adds_the_interval_coverage_when_the_report_has_intervals(tmp_path):
    # $5 in (4, 6); $30 not in (40, 80); $400 in (90, 500)
    from evaluation.report import write_report
    folder = tmp_path / "m"
    write_report(folder, ["a", "b", "c"], [5.0, 30.0, 400.0], [5.0, 60.0, 100.0], {"name": "m", "split": "test"}, "m",
                 intervals=[(4.0, 6.0), (40.0, 80.0), (90.0, 500.0)])
    lines = table.bucket_table(table.parse_entries([f"M={folder}"]), {}).splitlines()
    assert lines[2] == (f"| M | pool | 100% / +0.00 / 100% (1) | 100% / {math.log(2):+.2f} / 0% (1) | - | - | "
                        f"0% / {math.log(0.25):+.2f} / 100% (1) | - |")
    assert "coverage of the interval as evaluated, raw when" in lines[-1]


def test_old_report_gets_its_lean_per_bucket_from_predictions(tmp_path):
    folder = write_predictions(tmp_path / "old", [("a", 400.0, 100.0), ("b", 5.0, 5.0)])
    (folder / "report.json").write_text(json.dumps({"name": "old", "split": "test", "sample": "pool", "n": 2,
                                                    "rmsle": 1.0, "hit_rate": 0.5,
                                                    "by_bucket": [{"bucket": "$300-1000", "n": 1}]}))
    assert table.dear_lean(table.read_report(folder)) == pytest.approx(math.log(100 / 400))


def test_blend_joins_on_title_and_truth_and_takes_the_geometric_mean(tmp_path):
    a = write_predictions(tmp_path / "a", [("x", 50.0, 10.0), ("y", 20.0, 20.0), ("only a", 1.0, 1.0),
                                           ("z", 3.0, 3.0)])
    b = write_predictions(tmp_path / "b", [("y", 20.0, 80.0), ("x", 50.0, 1000.0), ("z", 3.0, None)])
    truths, first, second, dropped = blend.read_pairs(a, b)
    assert truths == [50.0, 20.0] and first == [10.0, 20.0] and second == [1000.0, 80.0]   # in the first's order
    assert dropped == 3                                  # "only a", and z (no guess in b) from both files
    assert blend.blend(first, second, 0.5) == pytest.approx([100.0, 40.0])     # sqrt(10 * 1000), sqrt(20 * 80)
    assert blend.blend(first, second, 0.0) == pytest.approx([10.0, 20.0])


@pytest.mark.peft_parity
def test_reference_stack_lora_plus_matches_train_py(tiny_llama_dir, tmp_path, monkeypatch):
    """bench.reference_train gives peft's B matrices lr x loraplus_ratio, as training/optim.py does for pricer's:
    the two stacks' losses agree step for step (the same recipe, data order and initial adapter weights)."""
    pytest.importorskip("peft")
    import bench.reference_train as ref
    import train

    args = ["--train.loraplus_ratio", "4", "--train.max_steps", "4"]
    train.train(train.parse_args(tiny_args(tiny_llama_dir, tmp_path / "pricer", *args))[0])
    monkeypatch.setattr(sys, "argv", ["reference_train", *tiny_args(tiny_llama_dir, tmp_path / "peft", *args)])
    ref.main()
    ours = {m["step"]: m["loss"] for m in metrics(tmp_path / "pricer") if "loss" in m}
    theirs = {m["step"]: m["loss"] for m in metrics(tmp_path / "peft")}
    assert theirs[4] == pytest.approx(ours[4], abs=1e-4)
    # and LoRA+ changed the run: without it the fourth loss differs
    train.train(train.parse_args(tiny_args(tiny_llama_dir, tmp_path / "plain", "--train.max_steps", "4"))[0])
    plain = {m["step"]: m["loss"] for m in metrics(tmp_path / "plain") if "loss" in m}
    assert abs(plain[4] - ours[4]) > 1e-3


def test_interval_by_price_bands_and_coverage():
    import bench.interval_by_price as ibp

    # 30 items: guesses 1..30; truths inside their interval except every third one, twice the interval's top
    items = [(2.0 * g * 1.5 if g % 3 == 0 else g, float(g), g / 1.5, g * 1.5) for g in range(1, 31)]
    edges, margins = ibp.band_margins(items)
    assert len(edges) == len(margins) == 3 and edges[-1] == float("inf")
    assert all(m == pytest.approx(math.log(2)) for m in margins)      # each band's 80% needs its misses covered
    raw = ibp.coverage_by_bucket(items, lambda g: 0.0)
    assert raw["all"] == pytest.approx(20 / 30)
    assert ibp.coverage_by_bucket(items, lambda g: math.log(2))["all"] == 1.0


def test_unpicked_val_scores_the_items_keep_best_did_not_price(bundled_data_dir, tmp_path, capsys):
    import bench.unpicked_val as unpicked
    from data import load_items, split_items
    val = split_items(load_items(bundled_data_dir, verbose=False), seed=42).val
    keys = unpicked.picked_keys(str(bundled_data_dir), 10)
    assert keys == {(it.title, round(it.price, 2)) for it in val[:10]}
    # the picked-on items priced exactly, the rest at twice the truth; rows in another order than the split's
    rows = [(it.title, it.price, it.price if i < 10 else 2 * it.price) for i, it in enumerate(val[:40])][::-1]
    write_predictions(tmp_path / "eval-val", rows)
    scores = unpicked.split_scores(str(tmp_path / "eval-val"), keys)
    assert scores["picked on"]["n"] == 10 and scores["picked on"]["rmsle"] == 0.0
    rest = val[10:40]
    expected = math.sqrt(sum((math.log1p(round(2 * it.price, 2)) - math.log1p(round(it.price, 2))) ** 2
                             for it in rest) / 30)
    assert scores["not picked on"]["n"] == 30 and scores["not picked on"]["rmsle"] == pytest.approx(expected, abs=1e-9)
    assert unpicked.main(["--picked", "10", "--data", str(bundled_data_dir), str(tmp_path / "eval-val")]) == 0
    assert "not picked on     30" in capsys.readouterr().out


def test_curve_agreement_by_hand(tmp_path, capsys):
    """bench.curve_agreement on two hand-written curves: common steps only, median and largest gap, spikes."""
    from bench.curve_agreement import agreement, main

    a = {10: 1.0, 20: 0.8, 30: 0.7, 40: 0.65}
    b = {10: 1.02, 20: 0.79, 30: 1.2, 50: 0.6}   # a spike at 30; 40 and 50 are not shared
    r = agreement(a, b)
    assert (r["steps"], r["last"], r["max_at"], r["spikes"]) == (3, 30, 30, 1)
    assert r["median_abs_diff"] == pytest.approx(0.02) and r["max_abs_diff"] == pytest.approx(0.5)
    assert r["mean_a"] == pytest.approx(2.5 / 3) and r["mean_b"] == pytest.approx(3.01 / 3)
    for name, curve in (("a", a), ("b", b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n"
                                                        for s, v in curve.items()))
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 0
    assert "3 steps to 30; |diff| median 0.0200, max 0.500 at step 30; 1 over 0.1" in capsys.readouterr().out
    (tmp_path / "c.jsonl").write_text(json.dumps({"step": 60, "loss": 0.5}) + "\n")
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == "error: the two runs logged no step in common"


def test_search_mass_by_true_price(tmp_path, capsys):
    """bench.search_mass: the mean covered mass per truth bucket, from a file as bench.estimators saves it."""
    from bench.estimators import save_distributions
    from bench.search_mass import main, mass_by_bucket

    truths = [5.0, 8.0, 40.0, 500.0]
    dists = [{5: 0.9}, {7: 0.5, 9: 0.3}, {40: 0.6}, {450: 0.2, 520: 0.1}]
    rows = {name: (n, m) for name, n, m in mass_by_bucket(truths, dists)}
    assert rows["<$10"] == (2, pytest.approx(0.85)) and rows["$10-50"] == (1, pytest.approx(0.6))
    assert rows["$300-1000"] == (1, pytest.approx(0.3)) and rows["$50-100"] == (0, None)
    path = tmp_path / "m-w30-val.dists.json.gz"
    save_distributions(path, {"record": {"name": "m", "split": "val", "search_width": 30}, "titles": list("abcd"),
                              "truths": truths, "dists": dists})
    assert main([str(path)]) == 0
    # masses 0.9, 0.8, 0.6, 0.3: median (0.8 + 0.6) / 2; one of four under LOW_MASS 0.5
    assert capsys.readouterr().out.strip() == ("m val, width 30: 4 items, mass 0.650 (median 0.700, under 0.5: 25.0%); "
                                               "<$10 0.85 (2)  $10-50 0.60 (1)  $300-1000 0.30 (1)")
    assert main([str(tmp_path / "none.gz")]) == 2
    assert capsys.readouterr().err.startswith("error: no ")
