"""predictors/greedy.py: price extraction, the greedy loop against generate, the predictor on hand-set logits."""
from __future__ import annotations

import pytest
import torch

from conftest import PROMPTS, dollar_id, make_bigram, token_id
from predictors.base import Prediction
from predictors.batching import left_padded_batches
from predictors.greedy import GreedyPredictor, extract_price, greedy_tokens, predict_greedy, predict_one_at_a_time


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
    assert extract_price(reply) == price


def test_greedy_recovers_hand_set_answer(tiny_llama, tiny_tokenizer):
    tok = tiny_tokenizer
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    dot = token_id(tok, ".")
    model = make_bigram(tiny_llama, {dollar_id(tok): {d["4"]: 0.9, d["5"]: 0.1}, d["4"]: {d["2"]: 1.0},
                                     d["2"]: {dot: 1.0}, dot: {d["0"]: 1.0}, d["0"]: {d["0"]: 1.0}})
    assert predict_greedy(model, tok, PROMPTS, batch_size=2) == [42.0, 42.0, 42.0]
    assert predict_one_at_a_time(model, tok, PROMPTS[:2]) == [42.0, 42.0]
    predictions = GreedyPredictor().predict(PROMPTS, model=model, tokenizer=tok, batch_size=2)
    assert predictions == [Prediction(42.0)] * 3   # no distribution: mass None
    assert GreedyPredictor(max_new_tokens=1).predict(PROMPTS[:1], model=model, tokenizer=tok) == [Prediction(4.0)]


def test_greedy_triples_and_failure(tiny_llama3, tiny_tokenizer3):
    tok = tiny_tokenizer3
    dollar = dollar_id(tok)
    dot = token_id(tok, ".")
    model = make_bigram(tiny_llama3, {dollar: {token_id(tok, "199"): 1.0}, token_id(tok, "199"): {dot: 1.0},
                                      dot: {tok.eos_token_id: 1.0}})
    assert predict_greedy(model, tok, PROMPTS, batch_size=2) == [199.0] * 3
    model = make_bigram(model, {dollar: {tok.eos_token_id: 1.0}})
    assert predict_greedy(model, tok, PROMPTS[:2]) == [None, None]


def test_predictors_restore_training_mode(tiny_llama, tiny_tokenizer):
    tiny_llama.train()
    predict_greedy(tiny_llama, tiny_tokenizer, PROMPTS[:1], max_new_tokens=2)
    assert tiny_llama.training


def test_greedy_needs_a_model():
    with pytest.raises(ValueError, match="--predictor greedy needs a model and its tokenizer"):
        GreedyPredictor().predict(PROMPTS)


def test_greedy_loop_matches_generate(tiny_llama, tiny_tokenizer):
    """pricer's greedy loop writes exactly the tokens transformers' generate writes, padding included."""
    prompts = ["How much does this cost?\n\nA drill with two batteries\n\nPrice is $",
               "Price is $", "Strings, light gauge\n\nPrice is $"]
    batches = list(left_padded_batches(tiny_tokenizer, prompts, 3, torch.device("cpu")))
    _, ids, mask = batches[0]
    with torch.inference_mode():
        mine = greedy_tokens(tiny_llama, ids, mask, 6, tiny_tokenizer.eos_token_id, tiny_tokenizer.eos_token_id)
        theirs = tiny_llama.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                     num_beams=1, pad_token_id=tiny_tokenizer.eos_token_id)[:, ids.shape[1]:]
    assert mine.shape == theirs.shape
    assert torch.equal(mine, theirs)


def test_greedy_with_gemma_numbers(tiny_gemma, tiny_gemma_tokenizer):
    """Gemma 3: "\u2581$" then one token per digit, <bos> prepended, a pad token that is not EOS, sliding layers."""
    tok = tiny_gemma_tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    batches = list(left_padded_batches(tok, PROMPTS, 3, torch.device("cpu")))
    _, ids, mask = batches[0]
    with torch.inference_mode():
        mine = greedy_tokens(tiny_gemma, ids, mask, 6, tok.eos_token_id, tok.pad_token_id)
        theirs = tiny_gemma.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                     num_beams=1, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    assert torch.equal(mine, theirs)
    d = {str(i): token_id(tok, str(i)) for i in range(10)}
    dot = token_id(tok, ".")
    model = make_bigram(tiny_gemma, {dollar_id(tok): {d["1"]: 0.8, d["5"]: 0.2}, d["1"]: {d["7"]: 1.0},
                                     d["7"]: {dot: 1.0}, dot: {d["0"]: 1.0}, d["0"]: {tok.eos_token_id: 1.0}})
    assert predict_greedy(model, tok, PROMPTS, batch_size=2) == [17.0, 17.0, 17.0]
    assert predict_one_at_a_time(model, tok, PROMPTS[:2]) == [17.0, 17.0]
