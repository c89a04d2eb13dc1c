"""The predictors by name: `PREDICTORS`, filled by `@register`, and `get_predictor` to build one.

evaluate.py takes its --predictor choices and each predictor's options from here, and any
other caller (train.py's validation price metric, bench/) builds a predictor by name with
`get_predictor`. A new predictor is one file of predictors/ whose class is decorated with
`@register`, plus its import line in predictors/__init__.py.
"""
from __future__ import annotations

from typing import Any

from predictors.base import Predictor

PREDICTORS: dict[str, type[Predictor]] = {}


def register(cls: type[Predictor]) -> type[Predictor]:
    """Offer `cls` under `cls.name` (a class decorator); a second predictor of the same name is a ValueError."""
    if cls.name in PREDICTORS:
        raise ValueError(f"two predictors are named {cls.name!r}: rename one")
    PREDICTORS[cls.name] = cls
    return cls


def get_predictor(name: str, **options: Any) -> Predictor:
    """The predictor registered as `name`, built with `options` (its constructor's keywords)."""
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}: pick one of {', '.join(PREDICTORS)}")
    return PREDICTORS[name](**options)


def baseline_names() -> list[str]:
    """The predictors that need no model (the constant baselines)."""
    return [name for name, cls in PREDICTORS.items() if not cls.needs_model]
