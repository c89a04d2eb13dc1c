"""The evaluation harness: running a registered predictor (predictors/) over items, and what comes of it:
the course's metrics, report.json, predictions.csv and chart.png, summaries, paired comparisons, and the
command-line options evaluate.py and bench/ share. It stands above predictors/, which imports nothing
from here.

    from evaluation import compute_metrics, write_report
    report = write_report(out, titles, truths, guesses, provenance, name)   # the three files; metrics + provenance

Two modules run as commands and are not imported here, so that `python -m` runs them fresh:
`python -m evaluation.calibration` (fit the interval margin beside an adapter) and
`python -m evaluation.redraw` (draw a report folder's chart.png again).
"""
from evaluation.chart import chart_title, plot_chart
from evaluation.metrics import BUCKETS, colour_for, colours_for, compute_metrics
from evaluation.options import (RUN_DEFAULTS, add_answer_width_option, add_model_options, add_predictor_options,
                                predictor_from_args, with_run_defaults)
from evaluation.outputs import OutDirError, OutputWriteError, ReportFolder, check_out_dir
from evaluation.paired import compare_folders, paired_differences
from evaluation.report import (ReportError, append_to_model_card, format_compare, format_summary, load_reports,
                               write_report)
from evaluation.run import (device_name, in_length_order, load_model, model_name, pick_items, predict_in_batches,
                            provenance, resolve_base, run_settings)

__all__ = [
    "add_answer_width_option", "add_model_options", "add_predictor_options", "append_to_model_card", "BUCKETS",
    "chart_title", "check_out_dir", "colour_for", "colours_for", "compare_folders", "compute_metrics",
    "device_name", "format_compare", "format_summary", "in_length_order", "load_model", "load_reports",
    "model_name", "OutDirError", "OutputWriteError", "paired_differences", "pick_items", "plot_chart",
    "predict_in_batches", "predictor_from_args", "provenance", "ReportError", "ReportFolder", "resolve_base",
    "RUN_DEFAULTS", "run_settings", "with_run_defaults", "write_report",
]
