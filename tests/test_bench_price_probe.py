"""bench.price_probe: the hidden state it reads, the ridge head's fit, and the report folders it writes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import bench.price_probe as probe
from conftest import write_items
from evaluation import compute_metrics
from evaluation.report import read_predictions


def test_ridge_head_recovers_a_linear_log_price():
    """With a negligible penalty the head recovers ln(1 + price) = x . w + b exactly, and predicts its prices."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 2, 3, 4, 5] + 7
    w, b = np.array([0.3, -0.2, 0.1, 0.05, -0.04]), 3.0
    prices = np.expm1(x @ w + b)
    head = probe.RidgeHead(x, prices, alpha=1e-9)
    assert head.predict(x) == pytest.approx(list(prices), rel=1e-6)
    # on the standardised scale the weights are w times each feature's spread
    assert head.weights == pytest.approx(w * x.std(axis=0), rel=1e-6)
    # a large penalty shrinks towards the mean log price
    flat = probe.RidgeHead(x, prices, alpha=1e9).predict(x)
    assert flat == pytest.approx([math.expm1(np.log1p(prices).mean())] * 200, rel=1e-3)


def test_choose_picks_the_penalty_with_the_lowest_validation_rmsle():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 40))
    y = np.expm1(2 + 0.5 * x[:, 0] + rng.normal(scale=0.3, size=120))   # one feature matters, 39 are noise
    train, val = (x[:60], list(y[:60])), (x[60:], list(y[60:]))
    head, scored = probe.choose(train, val, [1e-6, 10.0, 1e6])
    assert head.alpha == min(scored, key=scored.get)
    assert scored[head.alpha] == pytest.approx(compute_metrics(val[1], head.predict(val[0]))["rmsle"])
    assert scored[1e-6] > scored[10.0]    # 40 features on 60 items: no penalty overfits


def test_last_hidden_states_are_the_final_normed_state_at_the_last_prompt_token(tiny_llama_dir):
    """Left padding puts each prompt's last token last; the state there matches the unpadded prompt's own."""
    import torch

    from evaluation import load_model

    model, tokenizer = load_model(str(tiny_llama_dir), None, 16, compute_dtype="float32")
    prompts = ["Short listing\n\nPrice is $", "A much longer listing with many more words in it\n\nPrice is $"]
    got = probe.last_hidden_states(model, tokenizer, prompts, batch_size=2)
    for row, prompt in zip(got, prompts):
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.inference_mode():
            want = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert row == pytest.approx(want.numpy().astype(np.float64), abs=1e-4)


def test_run_writes_report_folders_evaluate_compare_reads(tiny_llama_dir, tmp_path):
    data = write_items(tmp_path / "items.jsonl", 80, seed=3, noun="kit", max_words=12,
                       price=lambda rng: 10 ** rng.uniform(0, 3))
    out = tmp_path / "probe"
    rc = probe.main([str(a) for a in ["--base", tiny_llama_dir, "--data", data, "--bits", 16, "--splits", "val", "pool",
                                      "--train-items", 30, "--alphas", 1, 100, "--batch-size", 8, "--out", out]])
    assert rc == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["train_items"] == 30 and record["alpha"] in (1.0, 100.0) and set(record["reports"]) == {"val", "pool"}
    for split, folder in record["reports"].items():
        report = json.loads((Path(folder) / "report.json").read_text())
        rows = read_predictions(folder)
        assert report["predictor"] == "probe" and report["n"] == len(rows) > 0
        assert all(r["guess"] and r["guess"] > 0 for r in rows)
    assert record["val_rmsle_by_alpha"][str(record["alpha"])] == min(record["val_rmsle_by_alpha"].values())


def test_bad_options_are_one_line_errors(capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--base", "b", "--data", "d", "--train-items", "0", "--out", "o"])
    assert "--train-items must be positive" in capsys.readouterr().err
