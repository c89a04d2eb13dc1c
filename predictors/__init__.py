"""Predictors behind one registry (greedy, expected, the mean and median baselines) and the batching the
model predictors share. Running them over items and scoring them is evaluation/'s, which stands above
this package: nothing here imports it.

    from predictors import get_predictor
    predictor = get_predictor("expected", estimate="median")         # or "greedy", "mean", ...
    prices = [p.price for p in predictor.predict(prompts, model=model, tokenizer=tokenizer)]

A predictor is a `Predictor` subclass in a file of its own, decorated with `@register`;
importing its file below is what registers it, and the order of these imports is the order
evaluate.py lists them in (greedy first: the default).
"""
from predictors.base import OptionError, Prediction, Predictor, positive_int
from predictors.registry import PREDICTORS, get_predictor, register

from predictors.greedy import GreedyPredictor, extract_price, greedy_tokens, predict_greedy, predict_one_at_a_time
from predictors.expected import ESTIMATES, ExpectedPredictor, point_estimate, predict_expected
from predictors.baselines import MeanBaseline, MedianBaseline, constant_prediction

from predictors.digit_search import SEARCH_DIGITS, SEARCH_WIDTH, number_tokens, price_distributions, search_record

__all__ = [
    "constant_prediction", "ESTIMATES", "ExpectedPredictor", "extract_price", "get_predictor", "greedy_tokens",
    "GreedyPredictor", "MeanBaseline", "MedianBaseline", "number_tokens", "OptionError", "point_estimate",
    "positive_int", "predict_expected", "predict_greedy", "predict_one_at_a_time", "Prediction", "Predictor",
    "PREDICTORS", "price_distributions", "register", "search_record", "SEARCH_DIGITS", "SEARCH_WIDTH",
]
