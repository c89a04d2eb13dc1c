"""bench.interval_transfer: margins fitted per split, how each carries to the others, the worst-case margin over
the held-out sources, and the by-bucket lean / coverage / hit rate, on hand-made report folders."""
from __future__ import annotations

import csv
import json
import math

import pytest

import bench.interval_transfer as it
from evaluation.calibration import EDGE


def write_folder(folder, rows, **report):
    """A report folder of raw intervals: rows of (truth, guess, low, high)."""
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"split": "test", "interval_margin": 0.0, **report}))
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "truth", "guess", "error", "colour", "low", "high"])
        w.writerows([[f"item {i}", t, g, "", "", lo, hi] for i, (t, g, lo, hi) in enumerate(rows)])
    return folder


def scoring(scores, truth=100.0):
    """Rows whose conformity scores are `scores`: an interval above the truth for a positive score, around it
    for a negative one; the guess is the truth."""
    return [(truth, truth, truth * math.exp(s), truth * math.exp(s) * 2) if s > 0 else
            (truth, truth, truth * math.exp(s), truth * math.exp(-s)) for s in scores]


@pytest.fixture
def root(tmp_path):
    write_folder(tmp_path / "r-val", scoring([-0.1, -0.1, -0.1, 0.05, 0.1]), split="val")   # its fit: 0.1
    write_folder(tmp_path / "r-loso-a", scoring([0.1, 0.2, 0.3, 0.4, 0.5]), holdout_source="a")
    write_folder(tmp_path / "r-loso-b", scoring([-0.5, -0.4, -0.3, -0.2, 0.35]), holdout_source="b")
    # $5 inside; $20 under (25, 30): score ln(25/20) = 0.223; $400 over (150, 300), guessed $200: ln(4/3) = 0.288;
    # $1500 inside, guessed right.
    write_folder(tmp_path / "r-pool", [(5.0, 5.0, 4.0, 6.0), (20.0, 25.0, 25.0, 30.0), (400.0, 200.0, 150.0, 300.0),
                                       (1500.0, 1500.0, 1000.0, 2000.0)])
    (tmp_path / "r-balanced").mkdir()    # a report without predictions is left out
    (tmp_path / "r-balanced" / "report.json").write_text("{}")
    return tmp_path


def test_fits_transfer_and_the_worst_case_margin(root):
    folders = it.recipe_folders(root, "r", [])
    assert list(folders) == ["val", "pool", "loso-a", "loso-b"]
    splits = {s.label: s for s in (it.load_split(name, f) for name, f in folders.items())}
    assert list(splits) == ["val", "pool", "held-out a", "held-out b"]
    a, b = splits["held-out a"], splits["held-out b"]
    # Each split's own fit is its largest score (5 items: rank ceil(6 * 0.8) = 5)
    assert [it.fitted(s, 0.8) for s in (splits["val"], a, b)] == pytest.approx([0.1, 0.5, 0.35])
    assert it.fitted(splits["pool"], 0.8) == pytest.approx(math.log(4 / 3))   # 4 items: rank 4, the $400's
    assert it.fitted(splits["pool"], 0.9) is None                     # rank ceil(5 * 0.9) = 5 > 4: cannot
    assert (b.coverage(0.5), a.coverage(0.35), a.coverage(0.1), b.coverage(0.1)) == (1.0, 0.6, 0.2, 0.8)
    # Worst case: 0.3 puts a at 3/5 and b at 4/5 (0.2 off), and nothing does better; no margin is within 5 points,
    # and every margin from 0.3 to 0.5 is within 20.
    assert it.within([a, b], 0.8, 0.05) is None
    assert it.within([a, b], 0.8, 0.2) == pytest.approx((0.3, 0.5))


def test_buckets_lean_coverage_and_hits_by_hand(root):
    pool = it.load_split("pool", root / "r-pool")
    rows = {name: rest for name, *rest in it.bucket_rows(pool, [0.1, 0.3 + EDGE])}
    assert list(rows) == ["<$10", "$10-50", "$300+"]                  # $400 and $1500 in one bucket
    assert rows["<$10"] == [1, 0.0, [1.0, 1.0], 1.0]
    n, lean, covered, hits = rows["$10-50"]
    assert (n, covered, hits) == (1, [0.0, 1.0], 1.0) and lean == pytest.approx(math.log(25 / 20))
    n, lean, covered, hits = rows["$300+"]
    assert (n, covered, hits) == (2, [0.5, 1.0], 0.5) and lean == pytest.approx(math.log(0.5) / 2)


def test_cli_prints_every_table(root, capsys):
    assert it.main(["--recipe", "r", "--root", str(root), "--folder"]) == 0
    out = capsys.readouterr().out
    assert "| margin fitted on | margin | val | pool | held-out a | held-out b |" in out
    assert "| held-out a | +0.500 (x1.65) | 100.0% | 100.0% | 100.0% | 100.0% |" in out
    assert "| held-out b | +0.350 (x1.42) | 100.0% | 100.0% | 60.0% | 100.0% |" in out
    assert "| worst held-out source (minimax) | +0.300 (x1.35) | 100.0% | 100.0% | 60.0% | 80.0% |" in out
    assert "leaves the worst held-out source 20.0 points from 80% (held-out a 60.0%)" in out
    assert "within 5 points: none." in out
    assert "| pool | $300+ | 2 | -0.35 | 50% | 100% | 50% |" in out
    assert "| held-out a | $100-300 | 5 | +0.00 | 20% | 60% | 100% |" in out   # val margin 0.1: 1 of 5


def test_a_widened_report_is_refused(root):
    write_folder(root / "w-loso-a", scoring([0.1]), holdout_source="a", interval_margin=0.4)
    with pytest.raises(SystemExit, match="widened"):
        it.main(["--recipe", "w", "--root", str(root)])
