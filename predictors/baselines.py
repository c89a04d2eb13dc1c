"""The constant baselines any model must beat: the mean or the median of the training prices."""
from __future__ import annotations

import statistics
from typing import Any, Sequence

from predictors.base import Prediction, Predictor
from predictors.registry import register


def constant_prediction(train_prices: Sequence[float], kind: str) -> float:
    """The mean or median of the training prices: the baseline any model must beat."""
    if not train_prices:
        raise ValueError("the training split is empty: the mean/median baseline needs training prices")
    return statistics.fmean(train_prices) if kind == "mean" else statistics.median(train_prices)


class _Constant(Predictor):
    """The same price for every prompt, a statistic (`name`) of the training prices."""

    needs_model = False

    def predict(self, prompts: Sequence[str], *, model: Any = None, tokenizer: Any = None, batch_size: int = 16,
                train_prices: Sequence[float] = (), answer_width: int = 0) -> list[Prediction]:
        """`constant_prediction` of train_prices, once per prompt; the model is not used."""
        return [Prediction(constant_prediction(train_prices, self.name))] * len(prompts)


@register
class MeanBaseline(_Constant):
    """The mean of the training split's prices, for every item."""

    name = "mean"


@register
class MedianBaseline(_Constant):
    """The median of the training split's prices, for every item."""

    name = "median"
