"""The expected predictor's point estimate and search bounds: evaluate.py's flags and bench/estimators.py."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

import bench.estimators as est
import evaluate as ev
from conftest import write_items
from evaluation import compute_metrics, load_model, pick_items, predictor_from_args
from evaluation.report import cents, cents_interval, read_predictions
from predictors import ESTIMATES, SEARCH_DIGITS, SEARCH_WIDTH, point_estimate, price_distributions
from predictors.expected import interval


@pytest.fixture(scope="module")
def items_file(tmp_path_factory):
    """80 curated items (title/text/price): a test split of 8 at the default fractions."""
    return write_items(tmp_path_factory.mktemp("items") / "items.jsonl", 80, seed=3, noun="kit", max_words=20,
                       price=lambda rng: 10 ** rng.uniform(0, 3))


def report_of(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def guesses_of(folder: Path) -> list[float | None]:
    with (folder / "predictions.csv").open() as f:
        return [float(r["guess"]) if r["guess"] else None for r in csv.DictReader(f)]


# ---------------------------------------------------------------- evaluate.py flags

def test_expected_flags_land_in_report(tiny_llama_dir, items_file, tmp_path, capsys):
    out = tmp_path / "median"
    rc = ev.main([str(a) for a in ["--base", tiny_llama_dir, "--data", items_file, "--limit", 4, "--bits", 16,
                                   "--predictor", "expected", "--estimate", "median", "--search-width", 3,
                                   "--search-digits", 2, "--batch-size", 4, "--out", out]])
    assert rc == 0, capsys.readouterr().err
    report = report_of(out)
    assert (report["estimate"], report["search_width"], report["search_digits"]) == ("median", 3, 2)
    # The guesses are the medians of the distributions the same search gives, loaded as evaluate.py loads.
    args = ev.parse_args(["--base", str(tiny_llama_dir), "--data", str(items_file), "--limit", "4", "--out", "o"])
    items, _ = pick_items(args)
    model, tokenizer = load_model(str(tiny_llama_dir), None, 16, compute_dtype=args.compute_dtype)
    from data import test_prompt

    prompts = [test_prompt(it, tokenizer, args.max_text_tokens) for it in items]
    dists = price_distributions(model, tokenizer, prompts, 4, max_digits=2, top_m=3)
    assert all(0 < len(d) <= 3 * 2 for d in dists)
    assert guesses_of(out) == pytest.approx([round(point_estimate(d, "median"), 2) for d in dists])
    assert report["search_mass"] == pytest.approx(sum(sum(d.values()) for d in dists) / len(dists))


def test_expected_flags_default(items_file):
    args = ev.parse_args(["--base", "b", "--data", str(items_file), "--predictor", "expected", "--out", "o"])
    assert predictor_from_args(args).record() == {"estimate": "mean", "search_width": SEARCH_WIDTH,
                                                  "search_digits": SEARCH_DIGITS, "search_accounting": "none",
                                                  "interval_quantiles": [0.1, 0.9], "interval_margin": 0.0}
    assert (SEARCH_WIDTH, SEARCH_DIGITS) == (100, 4)  # README and RESULTS.md quote these


@pytest.mark.parametrize("argv, message", [
    (["--estimate", "median"], "--estimate: only for --predictor expected, not greedy"),
    (["--predictor", "median", "--search-width", "5", "--search-digits", "3"],
     "--search-width, --search-digits: only for --predictor expected, not median"),
    (["--predictor", "expected", "--search-width", "0"], "--search-width must be positive"),
    (["--predictor", "expected", "--estimate", "mode"], "invalid choice: 'mode'"),
])
def test_expected_flags_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ev.parse_args(["--base", "b", "--data", "d", "--out", "o", *argv])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("evaluate.py: error: ") and message in last


# ---------------------------------------------------------------- bench/estimators.py

def run_bench(argv, capsys) -> tuple[int, str, str]:
    """(exit code, the table printed last, stderr)."""
    rc = est.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    print(err, file=sys.stderr)
    return rc, out[out.find("width"):], err


def test_bench_smoke_matches_evaluate(tiny_llama_dir, items_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "est"
    common = ["--base", tiny_llama_dir, "--data", items_file, "--bits", 16, "--batch-size", 4,
              "--search-digits", 2]
    rc, stdout, _ = run_bench(common + ["--widths", 3, 2, "--limit", 5, "--balanced-limit", 4, "--out", out], capsys)
    assert rc == 0
    name = tiny_llama_dir.name
    table = stdout.strip().splitlines()
    assert (out / "table.txt").read_text().strip().splitlines() == table
    assert table[0].split() == ["width", "estimate", "split", "n", "RMSLE", "hit", "rate", "avg", "error", "mass",
                                "seconds", "s/item"]
    assert len(table) == 1 + 2 * len(ESTIMATES) * 2
    rows = {}
    for line in table[1:]:
        width, how, split, n, rmsle, hit, _, mass, seconds, _ = line.split()
        rows[int(width), how, split] = (int(n), float(rmsle), float(hit.rstrip("%")), float(mass), float(seconds))
    assert set(rows) == {(w, h, s) for w in (2, 3) for h in ESTIMATES for s in ("pool", "balanced")}

    for (width, how, split), (n, rmsle, hit, mass, seconds) in rows.items():
        folder = out / f"{name}-w{width}-{how}-{split}"
        report = report_of(folder)
        assert (folder / "chart.png").is_file()
        assert (report["estimate"], report["search_width"], report["search_digits"]) == (how, width, 2)
        assert (report["split"], report["sample"], report["predictor"]) == ("test", split, "expected")
        assert report["n"] == n == (5 if split == "pool" else 4)
        assert (rmsle, hit, mass) == (round(report["rmsle"], 3), round(report["hit_rate"] * 100, 1),
                                      round(report["search_mass"], 3))
        assert seconds == round(report["seconds"], 1) and report["seconds"] > 0
        # The report is write_report/compute_metrics over the point estimates of the saved distributions,
        # scored to the cent as predictions.csv holds them.
        saved = est.load_distributions(out / f"{name}-w{width}-{split}.dists.json.gz")
        assert all(0 < len(d) <= width * 2 and all(isinstance(v, int) for v in d) for d in saved["dists"])
        guesses = [point_estimate(d, how) for d in saved["dists"]]
        metrics = compute_metrics(saved["truths"], [cents(g) for g in guesses],
                                  intervals=[cents_interval(interval(d)) for d in saved["dists"]])
        assert {k: report[k] for k in metrics} == metrics   # JSON keeps floats exactly
        assert guesses_of(folder) == pytest.approx([round(g, 2) for g in guesses])
        assert report["search_mass"] == pytest.approx(sum(sum(d.values()) for d in saved["dists"]) / n)
        # Each row carries the raw interval and the mass, as evaluate.py's rows do (calibration reads them)
        rows_csv = read_predictions(folder)
        assert [(r["low"], r["high"]) for r in rows_csv] == [interval(d) for d in saved["dists"]]
        assert [r["mass"] for r in rows_csv] == pytest.approx([sum(d.values()) for d in saved["dists"]], abs=5e-5)
    # The three moments really differ on these distributions (else the table would compare nothing); hit
    # may equal one of them: it is the log-mean wherever that is one of the likeliest hits.
    assert len({rows[3, h, "pool"][1] for h in ("mean", "log-mean", "median")}) == 3

    # Each split is the one evaluate.py draws with the same flags, scored the same.
    for split, limit in (("pool", 5), ("balanced", 4)):
        eval_out = tmp_path / f"eval-{split}"
        assert ev.main([str(a) for a in common + ["--split", "test", "--sample", split, "--limit", limit,
                                                  "--predictor", "expected", "--estimate", "log-mean",
                                                  "--search-width", 3, "--out", eval_out]]) == 0
        mine, theirs = report_of(out / f"{name}-w3-log-mean-{split}"), report_of(eval_out)
        for key in ("n", "avg_error", "rmsle", "hit_rate", "search_mass"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key
        # evaluate.py writes its rows in prompt-length order, the bench in item order: the same guesses.
        assert sorted(guesses_of(out / f"{name}-w3-log-mean-{split}")) == sorted(guesses_of(eval_out))
    capsys.readouterr()

    # --reuse: no model is loaded, the reports come out the same.
    def no_model(*_a, **_k):
        raise AssertionError("--reuse loaded the model")

    monkeypatch.setattr(est, "load_model", no_model)
    before = report_of(out / f"{name}-w2-median-balanced")
    (out / f"{name}-w2-median-balanced" / "report.json").unlink()
    rc, stdout, _ = run_bench(common + ["--widths", 2, "--estimates", "median", "--limit", 5, "--balanced-limit", 4,
                                        "--reuse", "--out", out], capsys)
    assert rc == 0 and len(stdout.strip().splitlines()) == 1 + 2
    after = report_of(out / f"{name}-w2-median-balanced")
    assert {k: v for k, v in after.items() if k != "by_bucket"} == {k: v for k, v in before.items() if k != "by_bucket"}

    # --reuse refuses what was not saved, or was saved with other options.
    rc, _, err = run_bench(common + ["--widths", 7, "--limit", 5, "--balanced-limit", 4, "--reuse", "--out", out],
                           capsys)
    assert rc == 2 and err.strip().splitlines()[-1].startswith("error: no ") and "w7-pool" in err
    rc, _, err = run_bench(common + ["--widths", 2, "--limit", 6, "--balanced-limit", 4, "--reuse", "--out", out],
                           capsys)
    assert rc == 2 and "limit 5 (now 6)" in err.strip().splitlines()[-1]
    rc, _, err = run_bench(common + ["--widths", 2, "--limit", 5, "--balanced-limit", 4, "--search-accounting",
                                     "by-length", "--reuse", "--out", out], capsys)
    assert rc == 2 and "search_accounting 'none' (now 'by-length')" in err.strip().splitlines()[-1]


def test_bench_val_split_matches_evaluate(tiny_llama_dir, items_file, tmp_path, capsys):
    out = tmp_path / "est"
    common = ["--base", tiny_llama_dir, "--data", items_file, "--bits", 16, "--batch-size", 4, "--search-digits", 2]
    rc, stdout, _ = run_bench(common + ["--widths", 3, "--splits", "val", "--out", out], capsys)
    assert rc == 0
    assert [line.split()[:3] for line in stdout.strip().splitlines()[1:]] == [["3", h, "val"] for h in ESTIMATES]
    # The whole validation split, as evaluate.py --split val draws and scores it.
    name, eval_out = tiny_llama_dir.name, tmp_path / "eval-val"
    assert ev.main([str(a) for a in common + ["--split", "val", "--predictor", "expected", "--estimate", "hit",
                                              "--search-width", 3, "--out", eval_out]]) == 0
    mine, theirs = report_of(out / f"{name}-w3-hit-val"), report_of(eval_out)
    assert (mine["split"], mine["sample"], mine["limit"]) == ("val", "pool", None) and mine["n"] > 0
    for key in ("n", "avg_error", "rmsle", "hit_rate", "search_mass"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key
    assert sorted(guesses_of(out / f"{name}-w3-hit-val")) == sorted(guesses_of(eval_out))
    capsys.readouterr()
    # --reuse refuses distributions made for another split (the val ones, saved under the pool's name).
    (out / f"{name}-w3-val.dists.json.gz").rename(out / f"{name}-w3-pool.dists.json.gz")
    rc, _, err = run_bench(common + ["--widths", 3, "--reuse", "--out", out], capsys)
    assert rc == 2 and "split 'val' (now 'test')" in err.strip().splitlines()[-1]


def test_bench_split_limits():
    args = est.parse_args(["--base", "b", "--data", "d", "--out", "o"])
    assert (args.widths, args.estimates, args.search_digits) == ([SEARCH_WIDTH], list(ESTIMATES), 4)
    assert args.splits == ["pool", "balanced"]                         # the default: the test splits, as before
    assert est.split_args(args, "pool").limit is None                  # the whole test split
    assert est.split_args(args, "balanced").limit == 400
    args = est.parse_args(["--base", "b", "--data", "d", "--out", "o", "--limit", "50", "--widths", "30", "10", "30"])
    assert args.widths == [10, 30]
    pool, balanced = est.split_args(args, "pool"), est.split_args(args, "balanced")
    assert (pool.split, pool.sample, pool.limit, pool.predictor) == ("test", "pool", 50, "expected")
    assert (balanced.split, balanced.sample, balanced.limit) == ("test", "balanced", 50)
    assert est.split_args(est.parse_args(["--base", "b", "--data", "d", "--out", "o", "--limit", "900"]),
                          "balanced").limit == 400
    val = est.split_args(args, "val")                                   # evaluate.py --split val [--limit N]
    assert (val.split, val.sample, val.limit, val.predictor) == ("val", "pool", 50, "expected")
    assert est.split_args(est.parse_args(["--base", "b", "--data", "d", "--out", "o"]), "val").limit is None
    args = est.parse_args(["--base", "b", "--data", "d", "--out", "o", "--splits", "val", "pool", "val"])
    assert args.splits == ["val", "pool"]
    assert {"split", "holdout_source", "val_fraction", "test_fraction"} <= set(est.REUSE_KEYS)
