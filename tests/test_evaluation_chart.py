"""evaluation/chart.py: the course's chart (points, axes) and its title; evaluation/redraw.py drawing it again."""
from __future__ import annotations

from evaluation.chart import chart_title, plot_chart


def test_chart_points():
    truths = [10.0, 100.0, 500.0, 40.0, 900.0]
    guesses = [12.0, None, 100.0, 45.0, 1200.0]
    fig = plot_chart(truths, guesses, "t", log_axes=False)   # the course's linear chart
    (points,) = fig.axes[0].collections
    assert len(points.get_offsets()) == 5
    assert points.get_offsets()[1].tolist() == [100.0, 0.0]   # a failure is drawn at $0
    assert fig.axes[0].get_xlim() == (0, 1200.0) and fig.axes[0].get_ylim() == (0, 1200.0)
    # Log axes (the default): from a third below the cheapest to a half above the dearest price;
    # a failure sits on the bottom edge.
    (points,) = plot_chart(truths, guesses, "t").axes[0].collections
    assert points.get_offsets()[1].tolist() == [100.0, 10.0 / 1.5]
    assert plot_chart(truths, guesses, "t").axes[0].get_xlim() == (10.0 / 1.5, 1800.0)


def test_chart_title_format():
    m = {"avg_error": 1234.5, "rmsle": 0.876, "hit_rate": 0.4567}
    assert chart_title("Llama", m) == "Llama: Error=$1,234.50 RMSLE=0.88 Hits=45.7%"


def test_a_failure_is_drawn_red_unless_scored_as_zero():
    from matplotlib.colors import to_rgba

    truths, guesses = [30.0, 100.0], [None, 101.0]
    (points,) = plot_chart(truths, guesses, "t").axes[0].collections
    assert [tuple(c) for c in points.get_facecolors()] == [to_rgba("red"), to_rgba("green")]
    (points,) = plot_chart(truths, guesses, "t", failures_as_zero=True).axes[0].collections
    assert [tuple(c) for c in points.get_facecolors()] == [to_rgba("green"), to_rgba("green")]


def test_a_report_without_its_chart_gets_the_same_chart_back(tmp_path, capsys):
    """python -m evaluation.redraw redraws chart.png from report.json and predictions.csv, pixel for pixel
    (prices in whole cents draw where the report drew them); a folder that is no report is one line."""
    from evaluation.redraw import main
    from evaluation.report import write_report

    truths, guesses = [10.0, 100.0, 500.0, 40.0], [12.25, None, 100.5, 45.0]
    write_report(tmp_path, ["a", "b", "c", "d"], truths, guesses, {"name": "tiny", "split": "test"}, "tiny")
    drawn = (tmp_path / "chart.png").read_bytes()
    (tmp_path / "chart.png").unlink()
    assert main([str(tmp_path)]) == 0 and (tmp_path / "chart.png").read_bytes() == drawn
    assert main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "report.json" in err[0]


def test_the_chart_has_a_colour_key_and_dollar_log_axes():
    """Every colour drawn is explained in the legend; log axes are labelled in dollars."""
    fig = plot_chart([10.0, 100.0, 500.0], [12.0, None, 100.0], "t")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:4] == ["hit: within $40 or 20%", "within $80 or 40%", "miss (or no price)", "estimate = truth"]
    assert "no price" in texts[4] and ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "$100" in labels and all(label.startswith("$") for label in labels)
