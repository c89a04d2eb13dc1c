"""evaluation/report.py: the three files of a report, written whole; summaries; reading reports back."""
from __future__ import annotations

import json

import pytest

from evaluation.report import ReportError, format_compare, format_summary, load_reports, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_write_report_files(tmp_path):
    truths = [10.0, 100.0, 500.0, 40.0, 900.0]
    guesses = [12.0, None, 100.0, 45.0, 1200.0]
    report = write_report(tmp_path, ["a", "b", "c", "d", "e"], truths, guesses, {"name": "t"}, "t")
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_SIGNATURE)
    assert report["failures"] == 1 and report["n"] == 5 and report["complete"] is True
    assert json.loads((tmp_path / "report.json").read_text()) == report
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "title,truth,guess,error,colour,low,high,mass,uncertain"
    assert lines[2] == "b,100.00,,100.00,red,,,," and lines[1] == "a,10.00,12.00,2.00,green,,,,"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failure_on_a_cheap_item_is_a_red_row_unless_scored_as_zero(tmp_path):
    write_report(tmp_path / "miss", ["a"], [30.0], [None], {}, "t")
    assert (tmp_path / "miss" / "predictions.csv").read_text().splitlines()[1] == "a,30.00,,30.00,red,,,,"
    report = write_report(tmp_path / "zero", ["a"], [30.0], [None], {}, "t", failures_as_zero=True)
    assert (tmp_path / "zero" / "predictions.csv").read_text().splitlines()[1] == "a,30.00,,30.00,green,,,,"
    assert report["score_failures_as_zero"] is True and report["hit_rate"] == 1.0


def test_scores_the_guesses_predictions_csv_holds(tmp_path):
    """The report is a function of predictions.csv: guesses are scored to the cent, as written."""
    report = write_report(tmp_path, ["a"], [10.0], [12.344999], {}, "t")
    assert report["avg_error"] == pytest.approx(2.34, abs=1e-12)
    assert (tmp_path / "predictions.csv").read_text().splitlines()[1] == "a,10.00,12.34,2.34,green,,,,"


def test_summary_reports_failures_on_their_own_line(tmp_path):
    report = write_report(tmp_path, ["a", "b", "c"], [30.0, 100.0, 5.0], [None, 100.0, None], {}, "t")
    lines = format_summary(report).splitlines()
    assert lines[-2] == "green 33.3%  orange 0.0%  red 66.7%"
    assert lines[-1] == ("failures 2 of 3 (no price in the reply): counted as misses; "
                         "avg error and RMSLE score them as a $0 guess")
    zero = write_report(tmp_path, ["a", "b", "c"], [30.0, 100.0, 5.0], [None, 100.0, None], {}, "t",
                        failures_as_zero=True)
    assert format_summary(zero).splitlines()[-1] == ("failures 2 of 3 (no price in the reply): scored as a $0 guess, "
                                                      "colours included (--score-failures-as-zero)")
    clean = write_report(tmp_path, ["a"], [30.0], [31.0], {}, "t")
    assert format_summary(clean).splitlines()[-1] == "failures 0 of 1"


def test_compare_marks_partial_reports(tmp_path):
    full = write_report(tmp_path / "full", ["a", "b"], [30.0, 100.0], [30.0, 90.0], {}, "t")
    partial = {**full, "complete": False, "n": 2, "total": 10}
    text = format_compare([("full", full), ("part", partial)])
    assert text.splitlines()[1].split()[0] == "full"
    assert text.splitlines()[2].startswith("part (partial: 2 of 10)")


def test_compare_names_folders_that_share_a_name_by_their_parent(tmp_path):
    for parent in ("smol", "gemma", "."):
        write_report(tmp_path / parent / "eval-pool", ["a"], [30.0], [30.0], {}, "t")
    write_report(tmp_path / "ridge", ["a"], [30.0], [30.0], {}, "t")
    names = [name for name, _ in load_reports([tmp_path / "smol" / "eval-pool", tmp_path / "gemma" / "eval-pool",
                                                tmp_path / "eval-pool", tmp_path / "ridge"])]
    assert names == ["smol/eval-pool", "gemma/eval-pool", f"{tmp_path.name}/eval-pool", "ridge"]


def _folder(tmp_path, content: bytes):
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_bytes(content)
    return folder


@pytest.mark.parametrize("content, message", [
    (b"{", "not valid JSON"),
    (b"[]", "holds a list, not a report"),
    (b'"x"', "holds a str, not a report"),
    (b"\xff\xfe\x00", "not UTF-8 text"),
    (b'{"n": 3}', "lacks avg_error"),
    (b'{"n": 3, "avg_error": "big", "rmsle": 1, "hit_rate": 0.5, "failures": 0}', "avg_error is 'big', not a number"),
    (b'{"n": true, "avg_error": 1, "rmsle": 1, "hit_rate": 0.5, "failures": 0}', "n is True, not a count"),
    (b'{"n": 0, "complete": false}', "scored no items yet"),
])
def test_load_reports_refuses_what_is_not_a_report(tmp_path, content, message):
    folder = _folder(tmp_path, content)
    with pytest.raises(ReportError) as e:
        load_reports([str(folder)])
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{folder / 'report.json'}: ") and message in text


def test_load_reports_reads_a_report(tmp_path):
    write_report(tmp_path / "run", ["a"], [30.0], [31.0], {"name": "x"}, "x")
    ((name, report),) = load_reports([str(tmp_path / "run")])
    assert name == "run" and report["n"] == 1


def test_interval_coverage_and_lean_by_hand(tmp_path):
    """Coverage: the share of truths inside [low, high]; lean: mean ln(guess / truth), per bucket too."""
    import math

    truths = [5.0, 8.0, 400.0, 600.0]
    guesses = [10.0, 8.0, 200.0, None]
    intervals = [(4.0, 12.0), (9.0, 20.0), (150.0, 450.0), None]    # 5 in, 8 out, 400 in, none stated
    report = write_report(tmp_path, list("abcd"), truths, guesses, {"interval_quantiles": [0.1, 0.9]}, "t",
                          intervals=intervals)
    assert report["interval"] == {"n": 3, "coverage": pytest.approx(2 / 3), "median_width": 11.0}
    assert report["log_ratio"] == pytest.approx((math.log(2) + 0 + math.log(0.5)) / 3)   # the failure has none
    buckets = {b["bucket"]: b for b in report["by_bucket"]}
    assert buckets["<$10"]["log_ratio"] == pytest.approx(math.log(2) / 2) and buckets["<$10"]["coverage"] == 0.5
    assert buckets["$300-1000"]["log_ratio"] == pytest.approx(math.log(0.5))
    assert buckets["$300-1000"]["coverage"] == 1.0
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[1] == "a,5.00,10.00,5.00,green,4.00,12.00,," and rows[4].endswith(",,,,")
    summary = format_summary(report)
    assert "covered" in summary and "66.7%" in summary and "80% interval (median width $11.00)" in summary
    assert "-0.69" in summary   # the $300-1000 bucket leans to half the truth


def test_log_axes_chart_and_the_linear_one(tmp_path):
    from evaluation.chart import plot_chart

    fig = plot_chart([1.0, 10.0, 900.0], [2.0, None, 800.0], "t")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_xlim()[0] > 0
    linear = plot_chart([1.0, 10.0, 900.0], [2.0, None, 800.0], "t", log_axes=False).axes[0]
    assert linear.get_xscale() == "linear" and linear.get_xlim()[0] == 0


def test_read_predictions_gives_floats_and_none_and_names_a_bad_row(tmp_path):
    from evaluation.report import read_predictions

    (tmp_path / "predictions.csv").write_text("title,truth,guess,error,colour,low,high\n"
                                              "Drill,129.00,110.50,18.50,green,60.00,200.00\n"
                                              "Strings,7.99,,7.99,red,,\n")
    rows = read_predictions(tmp_path)
    assert rows == read_predictions(tmp_path / "predictions.csv")          # the folder or the file
    assert rows == [{"title": "Drill", "truth": 129.0, "guess": 110.5, "low": 60.0, "high": 200.0, "mass": None,
                     "uncertain": None},    # a file from before rows held their mass still reads
                    {"title": "Strings", "truth": 7.99, "guess": None, "low": None, "high": None, "mass": None,
                     "uncertain": None}]
    (tmp_path / "predictions.csv").write_text("title,truth,guess\nDrill,129.00,lots\n")
    with pytest.raises(ReportError, match="row 1 has 'lots' where a price goes"):
        read_predictions(tmp_path)
    (tmp_path / "predictions.csv").write_text("name,price\nDrill,129.00\n")
    with pytest.raises(ReportError, match="lacks the title, truth and guess columns"):
        read_predictions(tmp_path)


def test_each_row_says_how_much_the_search_reached_and_whether_that_is_uncertain(tmp_path):
    """predictions.csv's mass (4 places) and uncertain (predict.py's rule: mass below LOW_MASS as written), read
    back by read_predictions; a row without a mass (a point predictor) leaves both empty."""
    from evaluation.pricing import LOW_MASS
    from evaluation.report import read_predictions

    masses = [0.91234, 0.49996, 0.49994, None]    # 0.49996 is written 0.5000: not uncertain, as the row says
    write_report(tmp_path, list("abcd"), [10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0], {}, "t",
                 masses=masses)
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert [line.split(",")[-2:] for line in lines[1:]] == [["0.9123", "0"], ["0.5000", "0"], ["0.4999", "1"],
                                                            ["", ""]]
    rows = read_predictions(tmp_path)
    assert [(r["mass"], r["uncertain"]) for r in rows] == [(0.9123, False), (0.5, False), (0.4999, True),
                                                          (None, None)]
    assert LOW_MASS == 0.5
    (tmp_path / "predictions.csv").write_text(lines[0] + "\na,10.00,10.00,0.00,green,,,0.3,maybe\n")
    with pytest.raises(ReportError, match="row 1 has 'maybe' where 1 or 0"):
        read_predictions(tmp_path)


def test_formula_titles_are_escaped_and_numbers_stay_numbers():
    """OWASP's CSV injection rule on text cells only: a negative guess written as a number stays a number."""
    import csv
    import io

    from evaluation.report import prediction_rows

    text = prediction_rows(["=1+1", "-5 off", "\tTab", "plain"], [10.0, 20.0, 30.0, 40.0], [-3.5, None, 30.0, 1.0])
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in rows] == ["'=1+1", "'-5 off", "'\tTab", "plain"]
    assert rows[0][2:4] == ["-3.50", "13.50"]
