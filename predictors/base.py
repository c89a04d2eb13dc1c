"""What every predictor is: a `Predictor` turns prompts into one `Prediction` per prompt."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence


@dataclass(frozen=True)
class Prediction:
    """One item's price as a predictor gives it, and what the predictor knows of its spread.

    `price` is None when the model wrote no number (scored as $0 and counted in `failures`).
    `mass` is the probability mass the predictor's price distribution covered, None for a
    predictor without a distribution. `low` and `high` bound an interval around the price, for
    predictors that give one (None otherwise).
    """

    price: float | None
    mass: float | None = None
    low: float | None = None
    high: float | None = None


class OptionError(ValueError):
    """A predictor option out of range, or given to another predictor than the one chosen."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number 1 or more (argparse turns the error into one usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


class Predictor:
    """A way to price prompts that end in "Price is $". Subclass it in a file of predictors/ and `@register` it.

    The first line of a subclass's docstring is its description in `evaluate.py --help`.
    """

    name: ClassVar[str]                     # what --predictor and report.json call it
    needs_model: ClassVar[bool] = True      # False: predict() reads only train_prices (a baseline)
    # Options refused when another predictor is chosen; each defaults to None, which means unset.
    flags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def add_options(cls, parser: Any) -> None:
        """Add this predictor's command-line options to `parser` (an ArgumentParser or an argument group)."""

    @classmethod
    def given_flags(cls, args: argparse.Namespace) -> list[str]:
        """Which of this predictor's `flags` the command line set."""
        return [flag for flag in cls.flags if getattr(args, flag[2:].replace("-", "_"), None) is not None]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Predictor:
        """The predictor that parsed command-line options describe; OptionError for one out of range."""
        return cls()

    def predict(self, prompts: Sequence[str], *, model: Any = None, tokenizer: Any = None, batch_size: int = 16,
                train_prices: Sequence[float] = (), answer_width: int = 0) -> list[Prediction]:
        """One Prediction per prompt, in order.

        The keywords describe the model: the model and its tokenizer, the training split's prices
        (for baselines) and answer_width, the digits the model pads its answers to (data.answer_width,
        0: unpadded), which a predictor that enumerates digit strings must know.
        """
        raise NotImplementedError

    def record(self) -> dict:
        """What report.json says about this predictor: its settings, and what the last predict() measured."""
        return {}

    def check_model(self, model: Any, tokenizer: Any) -> None:
        """Refuse a missing model or tokenizer with a one-line ValueError."""
        if model is None or tokenizer is None:
            raise ValueError(f"--predictor {self.name} needs a model and its tokenizer")
