"""predictors/digit_search.py: the tokenizer probe, the price distributions on hand-set logits (digits, padded
answers, number tokens) and against uncached forward passes, and the pruned mass given back."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import DIGIT_DIST, DIGIT_MASS, PROMPTS, digit_table, dollar_id, make_bigram, token_id
from predictors.digit_search import (PaddedAnswersWarning, account_by_prefix, account_pruned, by_length,
                                     number_tokens, price_distributions)
from predictors.expected import ExpectedPredictor, point_estimate, predict_expected

# ---------------------------------------------------------------- hand-set next-token distributions

def test_number_tokens_probe(tiny_tokenizer, tiny_tokenizer3, tiny_gemma_tokenizer):
    kind, values = number_tokens(tiny_tokenizer)
    assert kind == "digits" and sorted(values.values()) == list(range(10))
    assert values[token_id(tiny_tokenizer, "7")] == 7
    kind, values = number_tokens(tiny_tokenizer3)
    assert kind == "triples" and sorted(values.values()) == list(range(1000))
    assert values[token_id(tiny_tokenizer3, "417")] == 417
    kind, values = number_tokens(tiny_gemma_tokenizer)   # Gemma: "\u2581$" is one token, then one per digit
    assert kind == "digits" and sorted(values.values()) == list(range(10))
    assert tiny_gemma_tokenizer.convert_ids_to_tokens([dollar_id(tiny_gemma_tokenizer)]) == ["\u2581$"]


def model_and_tokenizer(request, family: str):
    """A fresh tiny model and its tokenizer: "llama" (byte-level digits, like SmolLM2) or "gemma"
    (Gemma 3 with "\u2581$", one token per digit, <bos> and a pad token of its own)."""
    names = {"llama": ("tiny_llama", "tiny_tokenizer"), "gemma": ("tiny_gemma", "tiny_gemma_tokenizer")}[family]
    return tuple(request.getfixturevalue(name) for name in names)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_expected_digits_by_hand(request, family):
    tiny_llama, tiny_tokenizer = model_and_tokenizer(request, family)
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    dists = price_distributions(model, tiny_tokenizer, PROMPTS, batch_size=2)
    for dist in dists:
        assert dist.keys() == DIGIT_DIST.keys()
        for value, p in DIGIT_DIST.items():
            assert dist[value] == pytest.approx(p, rel=1e-5, abs=1e-9)
    expected = (0.3 * 1 + 0.2 * 15 + 0.27 * 2 + 0.015 * 23 + 0.0075 * 233 + 0.00375 * 2333) / DIGIT_MASS
    guesses = predict_expected(model, tiny_tokenizer, PROMPTS, batch_size=2, how="mean")
    assert guesses == pytest.approx([expected] * 3, rel=1e-5)
    assert expected == pytest.approx(16.38075, rel=1e-5)
    log_mean = math.expm1(sum(p * math.log1p(v) for v, p in DIGIT_DIST.items()) / DIGIT_MASS)
    assert predict_expected(model, tiny_tokenizer, PROMPTS[:2], how="log-mean") == pytest.approx(
        [log_mean] * 2, rel=1e-5)
    # Sorted: 0 (.1), 1 (.3, cumulative .4), 2 (.27, cumulative .67 >= half of .89625).
    assert predict_expected(model, tiny_tokenizer, PROMPTS[:2], how="median") == [2.0, 2.0]


def test_expected_digits_bounds(tiny_llama, tiny_tokenizer):
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    # min_prob drops the prefix "2333" (path .0075); top_m=2 keeps "1" and "2" at the first digit, not "0".
    (dist,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], min_prob=0.01, top_m=2)
    assert dist == pytest.approx({1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 233: 0.0075})
    (dist,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], max_digits=2)
    assert dist == pytest.approx({1: 0.3, 15: 0.2, 2: 0.27, 23: 0.015, 0: 0.1})


def padded_table(tok):
    """A model that writes zero-padded answers: after "$" always "0", then zeros or the digits of 1, 15, 2."""
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    eos, dot = tok.eos_token_id, token_id(tok, ".")
    return {
        dollar_id(tok): {d["0"]: 1.0},
        d["0"]: {d["0"]: 0.5, d["1"]: 0.3, d["2"]: 0.2},   # never stops: "0000" is no price
        d["1"]: {d["5"]: 0.6, eos: 0.4},
        d["5"]: {eos: 1.0},
        d["2"]: {dot: 1.0},
    }


# By hand, with 4 digits searched: "01" .3 x .4 + "001" .15 x .4 + "0001" .075 x .4 = .21 for 1;
# "02" .2 + "002" .1 + "0002" .05 = .35 for 2; "015" .18 + "0015" .09 = .27 for 15. Left out: "0000..." (.125,
# it never stops) and "00015" (.045, five digits).
PADDED_DIST = {1: 0.21, 2: 0.35, 15: 0.27}


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_padded_answers_by_hand(request, family):
    """With answer_width the search continues after a leading "0" and reads "0015" as 15."""
    tiny_llama, tiny_tokenizer = model_and_tokenizer(request, family)
    model = make_bigram(tiny_llama, padded_table(tiny_tokenizer))
    (dist,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], answer_width=4)
    assert dist == pytest.approx(PADDED_DIST, rel=1e-5)
    # max_digits below the width still searches the width: the model always writes that many digits
    (short,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], answer_width=4, max_digits=2)
    assert short == pytest.approx(dist, rel=1e-9)
    # Unpadded, a leading "0" is the price 0, which this model never stops at: nothing is found, and the
    # search says why (the model went on after "0" with probability 1).
    with pytest.warns(PaddedAnswersWarning, match=r"after a leading 0 \(probability 1.00"):
        (plain,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1])
    assert plain == {}
    predictions = ExpectedPredictor("mean").predict(PROMPTS[:2], model=model, tokenizer=tiny_tokenizer, answer_width=4)
    assert [p.price for p in predictions] == pytest.approx([(0.21 + 2 * 0.35 + 15 * 0.27) / 0.83] * 2, rel=1e-5)
    assert [p.mass for p in predictions] == pytest.approx([0.83] * 2, rel=1e-5)


def test_pruned_prefixes_of_padded_answers_by_hand():
    """by-prefix: a pruned padded prefix stands for a known range of prices; its mass goes to the range's middle."""
    found = {7: 0.2, 123: 0.3}
    pruned = {"0124": 0.05, "012": 0.1, "04": 0.2, "1": 0.05, "12345": 0.01}
    # "0124" is 124; "012" is 120-129 (middle 124); "04" is 400-499 (449); "1" is 1000-1999 (1499); five digits
    # are past the width and stay out.
    assert account_by_prefix(found, pruned, 4) == pytest.approx({7: 0.2, 123: 0.3, 124: 0.15, 449: 0.2, 1499: 0.05})
    assert by_length(pruned) == pytest.approx({4: 0.05, 3: 0.1, 2: 0.2, 1: 0.05, 5: 0.01})


def test_the_padded_search_gives_what_it_prunes_to_the_prefixes_ranges(tiny_llama, tiny_tokenizer):
    """With top_m 1 the padded bigram keeps only "0000", which never stops; every other prefix is pruned and
    its mass lands in its range: "01" (.3) at 149, "02" (.2) at 249, "001" (.15) at 14, "002" (.1) at 24,
    "0001" (.075) at 1 and "0002" (.05) at 2. Unpadded, by-prefix is refused."""
    model = make_bigram(tiny_llama, padded_table(tiny_tokenizer))
    (plain,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], top_m=1, answer_width=4)
    (accounted,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], top_m=1, answer_width=4,
                                       accounting="by-prefix")
    assert sum(plain.values()) < 1e-6
    kept = {v: p for v, p in accounted.items() if p > 1e-6}
    assert kept == pytest.approx({149: 0.3, 249: 0.2, 14: 0.15, 24: 0.1, 1: 0.075, 2: 0.05}, rel=1e-5)
    with pytest.raises(ValueError, match="by-prefix accounting needs answers padded"):
        price_distributions(model, tiny_tokenizer, PROMPTS[:1], accounting="by-prefix")


def test_padded_answers_need_a_digit_tokenizer(tiny_llama3, tiny_tokenizer3):
    with pytest.raises(ValueError, match="one token per digit"):
        price_distributions(tiny_llama3, tiny_tokenizer3, PROMPTS[:1], answer_width=4)


def test_expected_triples_by_hand(tiny_llama3, tiny_tokenizer3):
    tok = tiny_tokenizer3
    table = {dollar_id(tok): {token_id(tok, "120"): 0.5, token_id(tok, "80"): 0.3, token_id(tok, "7"): 0.1,
                              tok.eos_token_id: 0.1}}
    model = make_bigram(tiny_llama3, table)
    guesses = predict_expected(model, tok, PROMPTS, batch_size=2, how="mean")
    assert guesses == pytest.approx([(120 * 0.5 + 80 * 0.3 + 7 * 0.1) / 0.9] * 3, rel=1e-5)
    guesses = predict_expected(model, tok, PROMPTS[:1], top_k=2, how="mean")
    assert guesses == pytest.approx([(120 * 0.5 + 80 * 0.3) / 0.8], rel=1e-5)


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


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_expected_digits_matches_uncached_forward(request, family):
    """On the random model, with padding and the cache copied per prefix, every P(price) is exact."""
    tiny_llama, tiny_tokenizer = model_and_tokenizer(request, family)
    dists = price_distributions(tiny_llama, tiny_tokenizer, PROMPTS, batch_size=2, max_digits=3, top_m=3,
                                min_prob=0.0)
    for prompt, dist in zip(PROMPTS, dists):
        assert len(dist) == 3 + 3 + 3   # top_m prefixes of 1, 2 and 3 digits
        for value, p in dist.items():
            assert p == pytest.approx(_brute_force_price_prob(tiny_llama, tiny_tokenizer, prompt, value),
                                      rel=1e-4)


def test_expected_triples_matches_uncached_forward(tiny_llama3, tiny_tokenizer3):
    _, values = number_tokens(tiny_tokenizer3)
    dists = price_distributions(tiny_llama3, tiny_tokenizer3, PROMPTS, batch_size=2, top_k=5)
    for prompt, dist in zip(PROMPTS, dists):
        with torch.no_grad():
            probs = tiny_llama3(tiny_tokenizer3(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].softmax(-1)
        number_probs = {v: float(probs[t]) for t, v in values.items()}
        top = sorted(number_probs, key=number_probs.get, reverse=True)[:5]
        assert dist == pytest.approx({v: number_probs[v] for v in top}, rel=1e-4)


# ---------------------------------------------------------------- the pruned mass given back

def test_pruned_mass_goes_to_prices_of_its_length_by_hand():
    found = {5: 0.4, 50: 0.2, 500: 0.1}
    # .2 pruned among 2-digit prefixes goes to 50 and 500 (2:1); .1 among 3-digit ones to 500 alone;
    # .05 among 4-digit ones has no found price of 4 digits and stays out.
    got = account_pruned(found, {2: 0.2, 3: 0.1, 4: 0.05})
    assert got == pytest.approx({5: 0.4, 50: 0.2 + 0.2 * 2 / 3, 500: 0.1 + 0.2 / 3 + 0.1})
    assert point_estimate(found) == pytest.approx((2 + 10 + 50) / 0.7)
    assert point_estimate(got) == pytest.approx(5 * 0.4 + 50 * (0.2 + 0.4 / 3) + 500 * (0.2 + 0.2 / 3))
    assert found == {5: 0.4, 50: 0.2, 500: 0.1}           # not changed in place
    # Answers padded to 4 digits: every found price is 4 digits long as written, so mass pruned at
    # 2 and at 4 digits goes to all three, in proportion.
    padded = account_pruned(found, {2: 0.2, 4: 0.05}, width=4)
    assert padded == pytest.approx({v: p * (1 + 0.25 / 0.7) for v, p in found.items()})


def test_the_search_reports_what_it_prunes_and_accounting_uses_it(tiny_llama, tiny_tokenizer):
    model = make_bigram(tiny_llama, digit_table(tiny_tokenizer))
    # min_prob .01 drops "2333" (.0075): mass pruned at 4 digits, which no found price has.
    (plain,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], min_prob=0.01, top_m=2)
    (accounted,) = price_distributions(model, tiny_tokenizer, PROMPTS[:1], min_prob=0.01, top_m=2,
                                       accounting="by-length")
    # top_m=2 at the first digit prunes "0" (.2): a 1-digit prefix, so it goes to every found price.
    assert accounted == pytest.approx({v: p * (1 + 0.2 / sum(plain.values())) for v, p in plain.items()})
    predictor = ExpectedPredictor(search_width=2, accounting="by-length")
    assert predictor.record()["search_accounting"] == "by-length"
    with pytest.raises(ValueError, match="unknown search accounting"):
        ExpectedPredictor(accounting="guess")
