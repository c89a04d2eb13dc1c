"""training.curves: every panel says what it draws and in which unit, the hit rate is a percentage on 0-100,
steps are whole numbers, and runs that log the same values stay told apart."""
import json

from training.curves import plot_curves, read_metrics, run_labels, run_style


def rows(hit=0.7):
    out = []
    for step in range(1, 8):
        row = {"step": step, "loss": 2.0 / step, "lr": 1e-4, "grad_norm": 1.0}
        if step % 3 == 0:
            row.update(val_loss=1.0 / step, val_rmsle=0.9, val_hit_rate=hit, val_avg_error=50.0 + step)
        out.append(row)
    return out


def test_axes_are_labelled_with_units_and_hit_rate_is_percent():
    fig = plot_curves([("a", rows(hit=0.7))], "a")
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert all(ax.get_ylabel() and ax.get_xlabel() == "optimizer step" for ax in axes.values())
    hit = axes["validation hit rate"]
    assert hit.get_ylabel() == "hit rate (%)" and hit.get_ylim() == (0, 100)
    assert list(hit.lines[0].get_ydata()) == [70.0, 70.0]
    assert axes["validation average error"].get_yscale() == "log" and "$" in axes["validation average error"].get_ylabel()
    fig.canvas.draw()
    steps = [t.get_text() for t in axes["learning rate"].get_xticklabels() if t.get_text()]
    assert steps and all(s.lstrip("−-").isdigit() for s in steps)   # no 2.5 steps


def test_runs_with_equal_values_stay_apart():
    fig = plot_curves([("a", rows()), ("b", rows())], "a vs b")
    rmsle = next(ax for ax in fig.axes if ax.get_title() == "validation RMSLE")
    first, second = rmsle.lines
    assert list(first.get_ydata()) == list(second.get_ydata())
    assert first.get_linewidth() > second.get_linewidth() and first.get_linestyle() != second.get_linestyle()
    assert second.get_markerfacecolor() == "none" and first.get_marker() != second.get_marker()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    assert run_style(0)["color"] != run_style(1)["color"]


def test_a_crash_cut_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n{\"step\": 2, \"lo")
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]


def test_a_narrow_dollar_axis_repeats_no_label():
    """Average errors within a dollar of each other get cent labels, none repeated."""
    fig = plot_curves([("a", [{"step": 4, "val_avg_error": 89.1}, {"step": 8, "val_avg_error": 90.4}])], "a")
    ax = next(ax for ax in fig.axes if ax.get_title() == "validation average error")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert labels and len(labels) == len(set(labels)) and all("." in label for label in labels)


def test_runs_are_named_as_train_py_named_them(tmp_path):
    """The key names a run by its log.run_name (make demo's runs/demo/run is "smollm2-demo"), else its folder;
    two runs that would read alike keep their folders."""
    named, bare, twin = tmp_path / "demo" / "run", tmp_path / "tiny", tmp_path / "other" / "run"
    for folder in (named, bare, twin):
        folder.mkdir(parents=True)
    (named / "config.yaml").write_text("log:\n  run_name: smollm2-demo\n")
    (twin / "config.yaml").write_text("log:\n  run_name: smollm2-demo\n")
    assert run_labels([str(named), str(bare)]) == ["smollm2-demo", "tiny"]
    assert run_labels([str(named), str(twin)]) == [f"smollm2-demo ({named})", f"smollm2-demo ({twin})"]


def test_validation_losses_stand_out_from_the_training_line():
    """The loss panel's validation markers sit above the training line, edged in black: drawn in the run's colour
    on its own noisy line they were invisible."""
    fig = plot_curves([("a", rows())], "a")
    loss = next(ax for ax in fig.axes if ax.get_title().startswith("training loss"))
    train, val = loss.lines
    assert list(val.get_xdata()) == [3, 6] and val.get_linewidth() == 0
    assert val.get_markeredgecolor() == "black" and val.get_zorder() > train.get_zorder()
