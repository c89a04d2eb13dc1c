"""predictors/interval_margin.py: widening an interval by a margin, and reading the margin stored beside an
adapter (a damaged or out-of-range file is one line naming the field)."""
from __future__ import annotations

import json
import math

import pytest

from predictors.interval_margin import FILE, CalibrationError, load_margin, widen


def test_widen_and_narrow_never_cross():
    assert widen(10.0, 20.0, math.log(2)) == pytest.approx((5.0, 40.0))
    assert widen(10.0, 40.0, -math.log(1.5)) == pytest.approx((15.0, 40 / 1.5))
    assert widen(10.0, 40.0, -5.0) == pytest.approx((20.0, 20.0))         # stops at the geometric middle
    assert widen(0.0, 40.0, 1.0) == pytest.approx((0.0, 40 * math.e))


def test_a_damaged_calibration_file_is_one_clear_error(tmp_path):
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(CalibrationError, match="not a calibration file"):
        load_margin(tmp_path)
    (tmp_path / FILE).write_text(json.dumps({"margin": float("inf")}))
    with pytest.raises(CalibrationError, match="not a finite log margin"):
        load_margin(tmp_path)
    assert load_margin(tmp_path / "elsewhere") is None and load_margin(None) is None


@pytest.mark.parametrize("record, field", [
    ({"margin": -3}, "margin -3 is outside [-1, 10]"),   # would shrink intervals past their own estimates
    ({"margin": 0.2, "coverage": 2}, "coverage is 2, not a share between 0 and 1"),
    ({"margin": 0.2, "raw_coverage": float("nan")}, "raw_coverage is nan, not a share between 0 and 1"),
    ({"margin": 0.2, "n": -1}, "n is -1, not a positive count of items"),
    ({"margin": True}, "margin is True, not a finite log margin"),
])
def test_a_calibration_out_of_range_is_refused_naming_the_field(record, field, tmp_path):
    (tmp_path / FILE).write_text(json.dumps(record))
    with pytest.raises(CalibrationError) as e:
        load_margin(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / FILE}: {field}") and "\n" not in str(e.value)
