"""evaluate.py: price extraction, the course's metrics, the predictors on hand-set logits, outputs, CLI."""
from __future__ import annotations

import math

import pytest
import torch

import evaluate as ev

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- extract_price

@pytest.mark.parametrize("reply, price", [
    ("Price is $1,299.99", 1299.99),
    ("$12", 12.0),
    ("12.00", 12.0),
    ("Price is $ 45.5 dollars", 45.5),
    ("abc", None),
    ("", None),
    ("Price is $", None),
    ("Price is $.5", 0.5),
    ("42.", 42.0),
    ("7 or 9", 7.0),
    ("Costs 3 now. Price is $88.00", 88.0),
])
def test_extract_price(reply, price):
    assert ev.extract_price(reply) == price


# ---------------------------------------------------------------- metrics

@pytest.mark.parametrize("error, truth, colour", [
    (39.99, 100, "green"),
    (40, 100, "orange"),    # 40 is not < 40 and 40/100 = 0.4 is not < 0.2
    (60, 300, "orange"),    # 60/300 = 0.2 exactly: not < 0.2
    (59.99, 300, "green"),
    (199, 1000, "green"),   # ratio 0.199
    (79.99, 200, "orange"),
    (80, 200, "red"),       # 80 is not < 80 and 80/200 = 0.4 is not < 0.4
    (80, 201, "orange"),    # ratio just under 0.4
    (400, 1000, "red"),     # ratio 0.4 exactly, error far above 80
    (399, 1000, "orange"),
    (0, 0, "green"),
    (50, 0, "orange"),      # a truth of 0 has no ratio; the absolute edges still apply
])
def test_colour_edges(error, truth, colour):
    assert ev.colour_for(error, truth) == colour


def test_compute_metrics_by_hand():
    truths = [100.0, 200.0, 300.0, 5.0]
    guesses = [140.0, None, 360.0, 6.0]   # errors 40 (orange), 200 (red, failure), 60 (orange), 1 (green)
    m = ev.compute_metrics(truths, guesses)
    assert m["n"] == 4 and m["failures"] == 1
    assert m["avg_error"] == pytest.approx((40 + 200 + 60 + 1) / 4)
    sle = [math.log(141 / 101) ** 2, math.log(201) ** 2, math.log(361 / 301) ** 2, math.log(7 / 6) ** 2]
    assert m["rmsle"] == pytest.approx(math.sqrt(sum(sle) / 4))
    assert (m["hit_rate"], m["orange"], m["red"]) == (0.25, 0.5, 0.25)
    buckets = {b["bucket"]: b for b in m["by_bucket"]}
    assert buckets["<$10"]["n"] == 1 and buckets["<$10"]["avg_error"] == pytest.approx(1.0)
    assert buckets["<$10"]["hit_rate"] == 1.0
    assert buckets["$100-300"]["n"] == 2                      # 100 and 200 (300 belongs to the next)
    assert buckets["$100-300"]["avg_error"] == pytest.approx(120.0)
    assert buckets["$100-300"]["rmsle"] == pytest.approx(math.sqrt((sle[0] + sle[1]) / 2))
    assert buckets["$300-1000"]["n"] == 1 and buckets["$300-1000"]["hit_rate"] == 0.0
    assert buckets["$10-50"]["n"] == 0 and buckets["$10-50"]["avg_error"] is None
    assert sum(b["n"] for b in m["by_bucket"]) == 4


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="no items"):
        ev.compute_metrics([], [])
    with pytest.raises(ValueError, match="2 truths but 1 guesses"):
        ev.compute_metrics([1.0, 2.0], [1.0])


def test_constant_prediction():
    assert ev.constant_prediction([1.0, 2.0, 10.0], "mean") == pytest.approx(13 / 3)
    assert ev.constant_prediction([1.0, 2.0, 10.0, 20.0], "median") == 6.0


# ---------------------------------------------------------------- point estimates of a distribution

LOG_MEAN_9_99_999 = 10 ** 1.75 - 1   # exp(.5 ln 10 + .25 ln 100 + .25 ln 1000) - 1 = 55.234...


@pytest.mark.parametrize("scale", [1.0, 0.4])   # 0.4: a search that covered 40% of the mass, renormalised
def test_point_estimates_by_hand(scale):
    dist = {9: 0.5 * scale, 99: 0.25 * scale, 999: 0.25 * scale}
    assert ev.point_estimate(dist, "mean") == pytest.approx(9 * 0.5 + 99 * 0.25 + 999 * 0.25)   # 279
    assert ev.point_estimate(dist, "log-mean") == pytest.approx(LOG_MEAN_9_99_999)
    assert LOG_MEAN_9_99_999 == pytest.approx(55.2341325)
    assert ev.point_estimate(dist, "median") == 9.0   # a tie: exactly half the mass at 9 takes the lower price
    assert ev.expected_price(dist) == ev.point_estimate(dist, "mean")


@pytest.mark.parametrize("dist, median", [
    ({9: 0.3, 99: 0.3, 999: 0.4}, 99.0),
    ({7: 0.6, 2: 0.3, 5: 0.1}, 7.0),          # unsorted keys: cumulative .3, .4, 1.0 over 2, 5, 7
    ({1: 0.1, 2: 0.7, 3: 0.2, 4: 0.6}, 2.0),  # a tie, though .1 + .7 is 0.7999999999999999 < 1.6 / 2 in floats
    ({3: 0.1, 4: 0.3, 5: 0.2}, 4.0),          # mass .6, half .3: .1 + .3 passes it at 4
    ({42: 1e-6}, 42.0),
])
def test_weighted_median(dist, median):
    assert ev.point_estimate(dist, "median") == median


def test_point_estimates_of_zero_and_empty():
    assert ev.point_estimate({0: 0.3, 3: 0.3}, "log-mean") == pytest.approx(1.0)   # exp(.5 ln 1 + .5 ln 4) - 1
    for how in ev.ESTIMATES:
        assert ev.point_estimate({}, how) is None
        assert ev.point_estimate({5: 0.0}, how) is None
    assert ev.expected_price({}) is None
    with pytest.raises(ValueError, match="unknown estimate 'mode'"):
        ev.point_estimate({1: 1.0}, "mode")


def test_log_mean_at_most_mean_and_median_in_support():
    """Jensen: the log-space mean never exceeds the mean; the median is always a price of the distribution."""
    dist = {3: 0.05, 12: 0.2, 19: 0.3, 25: 0.1, 150: 0.15, 800: 0.05}
    assert ev.point_estimate(dist, "log-mean") < ev.point_estimate(dist, "mean")
    assert ev.point_estimate(dist, "median") == 19.0   # cumulative .05, .25, .55 of .85: half is .425


# ---------------------------------------------------------------- hand-set next-token distributions

def token_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def make_bigram(model, table: dict[int, dict[int, float]]):
    """Make the model a bigram: P(next | sequence) = table[last token][next], set in the weights.

    Zeroing o_proj and down_proj leaves the residual stream equal to the current token's
    embedding; a context's embedding is 1000 * e_k, which the final RMSNorm maps to
    sqrt(hidden) * e_k, so lm_head column k (divided by sqrt(hidden)) is that context's logits.
    Tokens missing from a row get logit -40 (probability ~1e-18).
    """
    hidden = model.config.hidden_size
    vocab = model.config.vocab_size
    assert len(table) <= hidden
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for k, (context, dist) in enumerate(table.items()):
            assert sum(dist.values()) == pytest.approx(1.0)
            model.model.embed_tokens.weight[context, k] = 1000.0
            logits = torch.full((vocab,), -40.0)
            for tok, p in dist.items():
                logits[tok] = math.log(p)
            model.lm_head.weight[:, k] = logits / math.sqrt(hidden)
    return model.eval()


PROMPTS = ["How much does this cost?\n\nA drill.\n\nPrice is $",
           "How much does this cost?\n\nAcoustic guitar strings, phosphor bronze, light gauge.\n\nPrice is $",
           "Price is $"]


def digit_table(tok):
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    dollar = tok.encode(ev.PRICE_MARKER, add_special_tokens=False)[-1]
    eos, dot = tok.eos_token_id, token_id(tok, ".")
    return {
        dollar: {d["1"]: 0.5, d["2"]: 0.3, d["0"]: 0.2},
        d["1"]: {d["5"]: 0.4, eos: 0.6},
        d["5"]: {eos: 1.0},
        d["2"]: {dot: 0.9, d["3"]: 0.1},
        d["3"]: {d["3"]: 0.5, eos: 0.5},   # 3, 33, 333, ... : the 4-digit bound cuts the tail
        d["0"]: {eos: 0.5, d["7"]: 0.5},   # "07" is not a price: only "0" counts
    }


# P(price) by hand from digit_table: P(1)=.5*.6, P(15)=.5*.4, P(2)=.3*.9, P(23)=.3*.1*.5, ...
DIGIT_DIST = {1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 233: 0.0075, 2333: 0.00375, 0: 0.1}


def test_number_tokens_probe(tiny_tokenizer, tiny_tokenizer3):
    kind, values = ev.number_tokens(tiny_tokenizer)
    assert kind == "digits" and sorted(values.values()) == list(range(10))
    assert values[token_id(tiny_tokenizer, "7")] == 7
    kind, values = ev.number_tokens(tiny_tokenizer3)
    assert kind == "triples" and sorted(values.values()) == list(range(1000))
    assert values[token_id(tiny_tokenizer3, "417")] == 417


def test_expected_digits_by_hand(tiny_llama, tiny_tokenizer):
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    dists = ev.price_distributions(model, tiny_tokenizer, PROMPTS, batch_size=2)
    for dist in dists:
        assert dist.keys() == DIGIT_DIST.keys()
        for value, p in DIGIT_DIST.items():
            assert dist[value] == pytest.approx(p, rel=1e-5, abs=1e-9)
    mass = 0.89625   # 1 - .0037 (5+ digits) - .1 ("07"): what the search covers
    expected = (0.3 * 1 + 0.2 * 15 + 0.27 * 2 + 0.015 * 23 + 0.0075 * 233 + 0.00375 * 2333) / mass
    guesses = ev.predict_expected(model, tiny_tokenizer, PROMPTS, batch_size=2)
    assert guesses == pytest.approx([expected] * 3, rel=1e-5)
    assert expected == pytest.approx(16.38075, rel=1e-5)
    log_mean = math.expm1(sum(p * math.log1p(v) for v, p in DIGIT_DIST.items()) / mass)
    assert ev.predict_expected(model, tiny_tokenizer, PROMPTS[:2], how="log-mean") == pytest.approx(
        [log_mean] * 2, rel=1e-5)
    # Sorted: 0 (.1), 1 (.3, cumulative .4), 2 (.27, cumulative .67 >= half of .89625).
    assert ev.predict_expected(model, tiny_tokenizer, PROMPTS[:2], how="median") == [2.0, 2.0]


def test_expected_digits_bounds(tiny_llama, tiny_tokenizer):
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    # min_prob drops the prefix "2333" (path .0075); top_m=2 keeps "1" and "2" at the first digit, not "0".
    (dist,) = ev.price_distributions(model, tiny_tokenizer, PROMPTS[:1], min_prob=0.01, top_m=2)
    assert dist == pytest.approx({1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 233: 0.0075})
    (dist,) = ev.price_distributions(model, tiny_tokenizer, PROMPTS[:1], max_digits=2)
    assert dist == pytest.approx({1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 0: 0.1})


def test_expected_triples_by_hand(tiny_llama3, tiny_tokenizer3):
    tok = tiny_tokenizer3
    dollar = tok.encode(ev.PRICE_MARKER, add_special_tokens=False)[-1]
    table = {dollar: {token_id(tok, "120"): 0.5, token_id(tok, "80"): 0.3, token_id(tok, "7"): 0.1,
                      tok.eos_token_id: 0.1}}
    model = make_bigram(tiny_llama3, table)
    guesses = ev.predict_expected(model, tok, PROMPTS, batch_size=2)
    assert guesses == pytest.approx([(120 * 0.5 + 80 * 0.3 + 7 * 0.1) / 0.9] * 3, rel=1e-5)
    guesses = ev.predict_expected(model, tok, PROMPTS[:1], top_k=2)
    assert guesses == pytest.approx([(120 * 0.5 + 80 * 0.3) / 0.8], rel=1e-5)


def test_expected_none_when_no_price(tiny_llama, tiny_tokenizer):
    dollar = tiny_tokenizer.encode(ev.PRICE_MARKER, add_special_tokens=False)[-1]
    model = make_bigram(tiny_llama, {dollar: {tiny_tokenizer.eos_token_id: 1.0}})
    assert ev.predict_expected(model, tiny_tokenizer, PROMPTS[:2]) == [None, None]


def _brute_force_price_prob(model, tokenizer, prompt: str, price: int) -> float:
    """P(price) from full forward passes over the unpadded prompt + digits, no cache."""
    digit_ids = [token_id(tokenizer, str(d)) for d in range(10)]
    ids = tokenizer(prompt)["input_ids"]
    p = 1.0
    with torch.no_grad():
        for c in str(price) + "$":
            probs = model(torch.tensor([ids])).logits[0, -1].double().softmax(-1)
            if c == "$":
                return p * (1 - float(probs[digit_ids].sum()))
            p *= float(probs[digit_ids[int(c)]])
            ids = ids + [digit_ids[int(c)]]


def test_expected_digits_matches_uncached_forward(tiny_llama, tiny_tokenizer):
    """On the random model, with padding and the cache copied per prefix, every P(price) is exact."""
    dists = ev.price_distributions(tiny_llama, tiny_tokenizer, PROMPTS, batch_size=2,
                                   max_digits=3, top_m=3, min_prob=0.0)
    for prompt, dist in zip(PROMPTS, dists):
        assert len(dist) == 3 + 3 + 3   # top_m prefixes of 1, 2 and 3 digits
        for value, p in dist.items():
            assert p == pytest.approx(_brute_force_price_prob(tiny_llama, tiny_tokenizer, prompt, value),
                                      rel=1e-4)


def test_expected_triples_matches_uncached_forward(tiny_llama3, tiny_tokenizer3):
    _, values = ev.number_tokens(tiny_tokenizer3)
    dists = ev.price_distributions(tiny_llama3, tiny_tokenizer3, PROMPTS, batch_size=2, top_k=5)
    for prompt, dist in zip(PROMPTS, dists):
        with torch.no_grad():
            probs = tiny_llama3(tiny_tokenizer3(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].softmax(-1)
        number_probs = {v: float(probs[t]) for t, v in values.items()}
        top = sorted(number_probs, key=number_probs.get, reverse=True)[:5]
        assert dist == pytest.approx({v: number_probs[v] for v in top}, rel=1e-4)


# ---------------------------------------------------------------- greedy

def test_greedy_recovers_hand_set_answer(tiny_llama, tiny_tokenizer):
    tok = tiny_tokenizer
    dollar = tok.encode(ev.PRICE_MARKER, add_special_tokens=False)[-1]
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    dot = token_id(tok, ".")
    model = make_bigram(tiny_llama, {dollar: {d["4"]: 0.9, d["5"]: 0.1}, d["4"]: {d["2"]: 1.0},
                                     d["2"]: {dot: 1.0}, dot: {d["0"]: 1.0}, d["0"]: {d["0"]: 1.0}})
    assert ev.predict_greedy(model, tok, PROMPTS, batch_size=2) == [42.0, 42.0, 42.0]
    assert ev.predict_one_at_a_time(model, tok, PROMPTS[:2]) == [42.0, 42.0]


def test_greedy_triples_and_failure(tiny_llama3, tiny_tokenizer3):
    tok = tiny_tokenizer3
    dollar = tok.encode(ev.PRICE_MARKER, add_special_tokens=False)[-1]
    dot = token_id(tok, ".")
    model = make_bigram(tiny_llama3, {dollar: {token_id(tok, "199"): 1.0}, token_id(tok, "199"): {dot: 1.0},
                                      dot: {tok.eos_token_id: 1.0}})
    assert ev.predict_greedy(model, tok, PROMPTS, batch_size=2) == [199.0] * 3
    model = make_bigram(model, {dollar: {tok.eos_token_id: 1.0}})
    assert ev.predict_greedy(model, tok, PROMPTS[:2]) == [None, None]


def test_predictors_restore_training_mode(tiny_llama, tiny_tokenizer):
    tiny_llama.train()
    ev.predict_greedy(tiny_llama, tiny_tokenizer, PROMPTS[:1], max_new_tokens=2)
    assert tiny_llama.training


# ---------------------------------------------------------------- chart and report files

def test_chart_points_and_png(tmp_path):
    truths = [10.0, 100.0, 500.0, 40.0, 900.0]
    guesses = [12.0, None, 100.0, 45.0, 1200.0]
    fig = ev.plot_chart(truths, guesses, "t")
    (points,) = fig.axes[0].collections
    assert len(points.get_offsets()) == 5
    assert points.get_offsets()[1].tolist() == [100.0, 0.0]   # a failure is drawn at $0
    assert fig.axes[0].get_xlim() == (0, 1200.0) and fig.axes[0].get_ylim() == (0, 1200.0)
    report = ev.write_report(tmp_path, ["a", "b", "c", "d", "e"], truths, guesses, {"name": "t"}, "t")
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_SIGNATURE)
    assert report["failures"] == 1 and report["n"] == 5
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "title,truth,guess,error,colour"
    assert lines[2] == "b,100.00,,100.00,red" and lines[1] == "a,10.00,12.00,2.00,green"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_chart_title_format():
    m = {"avg_error": 1234.5, "rmsle": 0.876, "hit_rate": 0.4567}
    assert ev.chart_title("Llama", m) == "Llama: Error=$1,234.50 RMSLE=0.88 Hits=45.7%"


def test_greedy_loop_matches_generate(tiny_llama, tiny_tokenizer):
    """pricer's greedy loop writes exactly the tokens transformers' generate writes, padding included."""
    prompts = ["How much does this cost?\n\nA drill with two batteries\n\nPrice is $",
               "Price is $", "Strings, light gauge\n\nPrice is $"]
    batches = list(ev._left_padded_batches(tiny_tokenizer, prompts, 3, torch.device("cpu")))
    _, ids, mask = batches[0]
    with torch.inference_mode():
        mine = ev.greedy_tokens(tiny_llama, ids, mask, 6, tiny_tokenizer.eos_token_id, tiny_tokenizer.eos_token_id)
        theirs = tiny_llama.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                     num_beams=1, pad_token_id=tiny_tokenizer.eos_token_id)[:, ids.shape[1]:]
    assert mine.shape == theirs.shape
    assert torch.equal(mine, theirs)
