"""predictors/baselines.py: the mean and median of the training prices, by hand."""
from __future__ import annotations

import pytest

from predictors.base import Prediction
from predictors.baselines import MeanBaseline, MedianBaseline, constant_prediction


def test_constant_prediction():
    assert constant_prediction([1.0, 2.0, 10.0], "mean") == pytest.approx(13 / 3)
    assert constant_prediction([1.0, 2.0, 10.0, 20.0], "median") == 6.0


def test_baseline_predictors_need_no_model():
    prices = [1.0, 2.0, 10.0, 20.0]
    assert not MeanBaseline.needs_model and not MedianBaseline.needs_model
    assert MedianBaseline().predict(["a", "b"], train_prices=prices) == [Prediction(6.0)] * 2
    assert MeanBaseline().predict(["a"], train_prices=prices) == [Prediction(pytest.approx(33 / 4))]
    with pytest.raises(ValueError, match="the training split is empty"):
        MeanBaseline().predict(["a"], train_prices=[])
