"""Predictors behind one registry (greedy, expected, the mean and median baselines), their metrics,
reports and charts, and the batching the model predictors share.

    from predictors import get_predictor
    predictor = get_predictor("expected", estimate="median")         # or "greedy", "mean", ...
    prices = [p.price for p in predictor.predict(prompts, model=model, tokenizer=tokenizer)]

A predictor is a `Predictor` subclass in a file of its own, decorated with `@register`;
importing its file below is what registers it, and the order of these imports is the order
evaluate.py lists them in (greedy first: the default).
"""
from predictors.base import OptionError, Prediction, Predictor, positive_int
from predictors.registry import PREDICTORS, get_predictor, register

from predictors.greedy import GreedyPredictor, extract_price, greedy_tokens, predict_greedy, predict_one_at_a_time
from predictors.expected import (ESTIMATES, SEARCH_DIGITS, SEARCH_WIDTH, ExpectedPredictor, number_tokens,
                                 point_estimate, predict_expected, price_distributions, search_record)
from predictors.baselines import MeanBaseline, MedianBaseline, constant_prediction

from predictors.chart import chart_title, plot_chart
from predictors.cli import (RUN_DEFAULTS, add_answer_width_option, add_model_options, add_predictor_options,
                            predictor_from_args, with_run_defaults)
from predictors.metrics import BUCKETS, colour_for, colours_for, compute_metrics
from predictors.report import (ReportError, append_to_model_card, format_compare, format_summary, load_reports,
                               write_report)
from predictors.outputs import OutDirError, OutputWriteError, ReportFolder, check_out_dir
from predictors.paired import compare_folders, paired_differences
from predictors.run import (device_name, in_length_order, load_model, model_name, pick_items, predict_in_batches,
                            provenance, resolve_base, run_settings)

__all__ = [
    "add_answer_width_option", "add_model_options", "add_predictor_options", "append_to_model_card", "BUCKETS",
    "chart_title", "check_out_dir",
    "colour_for", "colours_for", "compare_folders", "compute_metrics", "constant_prediction", "device_name",
    "ESTIMATES", "ExpectedPredictor", "extract_price", "format_compare", "format_summary", "get_predictor",
    "greedy_tokens", "GreedyPredictor", "in_length_order", "load_model", "load_reports", "MeanBaseline",
    "MedianBaseline", "model_name", "number_tokens", "OptionError", "OutDirError", "OutputWriteError",
    "paired_differences",
    "pick_items", "plot_chart", "positive_int", "point_estimate", "predict_expected", "predict_greedy", "predict_in_batches",
    "predict_one_at_a_time", "Prediction", "Predictor", "predictor_from_args", "PREDICTORS", "price_distributions",
    "provenance", "register", "ReportError", "ReportFolder", "resolve_base", "RUN_DEFAULTS", "run_settings",
    "SEARCH_DIGITS", "search_record", "SEARCH_WIDTH", "with_run_defaults", "write_report",
]
