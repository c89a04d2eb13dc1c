"""The margin an adapter's 80% intervals are widened by: reading it from interval_calibration.json beside the
adapter, and widening an interval by it.

The expected predictor states the 10th-90th percentiles of the model's price distribution, which are too
narrow for a fine-tuned pricer. `python -m evaluation.calibration` fits a log margin q on validation
(split-conformal) and stores it beside the adapter; `load_margin` reads it back, range-checked, and `widen`
turns (low, high) into (low * e^-q, high * e^q). Fitting is the harness's (evaluation/calibration.py); what the
predictor needs to use a fitted margin is here, so that predictors/ imports nothing from evaluation/.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from predictors.digit_search import ACCOUNTING

FILE = "interval_calibration.json"


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or read; the message is one line for the user."""


def widen(low: float, high: float, margin: float) -> tuple[float, float]:
    """(low * e^-margin, high * e^margin); a negative margin narrows, never past the interval's geometric middle."""
    middle = math.sqrt(low * high)
    return min(low * math.exp(-margin), middle), max(high * math.exp(margin), middle)


# A margin below -1 moves each end inward by more than a factor e: a 10%-90% interval narrower than e^2 (7.4x)
# collapses to its middle, which need not hold the point estimate. Above 10 (x22,000 outward) it says nothing.
MARGIN_RANGE = (-1.0, 10.0)
# The other fields a fitted file holds, checked when present: (low, high, whether the ends are allowed).
FIELD_RANGES = {"coverage": (0.0, 1.0, False), "raw_coverage": (0.0, 1.0, True),
                "calibrated_coverage": (0.0, 1.0, True)}
REFIT = "refit it with python -m evaluation.calibration or delete it"


def _checked(path: Path, record: dict) -> float:
    """The margin of a calibration record, every numeric field range-checked; CalibrationError naming the field."""
    for key, (low, high, ends) in FIELD_RANGES.items():
        value = record.get(key)
        if key in record and (not _is_number(value) or not (low <= value <= high if ends else low < value < high)):
            raise CalibrationError(f"{path}: {key} is {value!r:.40}, not a share between {low:g} and {high:g}; {REFIT}")
    n = record.get("n")
    if "n" in record and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise CalibrationError(f"{path}: n is {n!r:.40}, not a positive count of items; {REFIT}")
    for key in ("search_width", "search_digits"):
        value = record.get(key)
        if key in record and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise CalibrationError(f"{path}: {key} is {value!r:.40}, not a positive whole number; {REFIT}")
    if "search_accounting" in record and record["search_accounting"] not in ACCOUNTING:
        raise CalibrationError(f"{path}: search_accounting is {record['search_accounting']!r:.40}, not one of "
                               f"{', '.join(ACCOUNTING)}; {REFIT}")
    margin = record["margin"]
    if not _is_number(margin):
        raise CalibrationError(f"{path}: margin is {margin!r:.40}, not a finite log margin; {REFIT}")
    if not MARGIN_RANGE[0] <= margin <= MARGIN_RANGE[1]:
        raise CalibrationError(f"{path}: margin {margin:g} is outside [{MARGIN_RANGE[0]:g}, {MARGIN_RANGE[1]:g}] "
                               "(below -1 an interval shrinks to a point that may exclude its own estimate); "
                               f"{REFIT}")
    return float(margin)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_calibration(adapter: str | Path | None) -> dict | None:
    """The fit stored beside `adapter` (its margin and fields range-checked), or None when there is none;
    CalibrationError (one line naming the file and the field) for a file that is damaged or out of range."""
    if not adapter:
        return None
    path = Path(adapter) / FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{path}: not a calibration file ({type(e).__name__}); {REFIT}") from None
    if not isinstance(record, dict) or "margin" not in record:
        raise CalibrationError(f"{path}: not a calibration file (no margin field); {REFIT}")
    _checked(path, record)
    return record


# The search settings that shape the raw interval; a fit records those of the evaluation it was fitted on.
SEARCH_KEYS = ("search_width", "search_digits", "search_accounting")


def search_mismatch(record: dict | None, settings: dict) -> str | None:
    """How this run's search differs from the one the stored margin was fitted on ("search width 30, now 100"),
    or None when they agree or the file records none (files written before the fields were)."""
    differ = [f"{key.replace('_', ' ')} {record[key]}, now {settings[key]}" for key in SEARCH_KEYS
              if record and key in record and key in settings and record[key] != settings[key]]
    return "; ".join(differ) or None


def load_margin(adapter: str | Path | None) -> float | None:
    """The fitted margin stored beside `adapter` (load_calibration's), or None when there is none."""
    record = load_calibration(adapter)
    return None if record is None else float(record["margin"])
