"""predictors/registry.py: predictors by name, and a new one offered by evaluate.py from its class and one line."""
from __future__ import annotations

import csv
import json

import pytest

import evaluate as ev
from conftest import PROMPTS, write_items
from predictors import PREDICTORS, Prediction, Predictor, get_predictor, predict_expected, predict_greedy, register


class SevenDollars(Predictor):
    """Seven dollars (plus --cents) for every item."""

    name = "seven"
    needs_model = False
    flags = ("--cents",)

    def __init__(self, cents: int = 0):
        self.cents = cents

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--cents", type=int, help="cents on top of the seven dollars")

    @classmethod
    def from_args(cls, args):
        return cls(args.cents or 0)

    def predict(self, prompts, **_):
        return [Prediction(7 + self.cents / 100)] * len(prompts)

    def record(self):
        return {"cents": self.cents}


@pytest.fixture
def seven():
    """SevenDollars registered for one test: the one line its file would hold is `@register`."""
    register(SevenDollars)
    yield SevenDollars
    del PREDICTORS[SevenDollars.name]


@pytest.fixture(scope="module")
def items_file(tmp_path_factory):
    return write_items(tmp_path_factory.mktemp("items") / "items.jsonl", 40, seed=5, noun="box", max_words=12,
                       price=lambda rng: rng.uniform(1, 300))


def test_builtin_predictors_in_help_order():
    assert list(PREDICTORS) == ["greedy", "expected", "mean", "median"]   # the first is --predictor's default
    assert [cls.needs_model for cls in PREDICTORS.values()] == [True, True, False, False]


def test_registered_predictor_runs_through_evaluate(seven, items_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert "{greedy,expected,mean,median,seven}" in help_text
    assert "--predictor seven:" in help_text and "Seven dollars (plus --cents) for every item." in help_text
    assert "--cents CENTS" in help_text

    out = tmp_path / "seven"
    assert ev.main(["--predictor", "seven", "--cents", "50", "--data", str(items_file), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["predictor"], report["name"], report["cents"], report["device"]) == \
        ("seven", "seven baseline", 50, "none")
    assert list(report).index("cents") == list(report).index("holdout_source") + 1   # beside the settings
    with (out / "predictions.csv").open() as f:
        assert {r["guess"] for r in csv.DictReader(f)} == {"7.50"}
    assert (out / "chart.png").is_file() and "failures 0 of" in capsys.readouterr().out


def test_registered_predictor_options_refused_elsewhere(seven, items_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        ev.parse_args(["--data", "d", "--out", "o", "--cents", "5"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "evaluate.py: error: --cents: only for --predictor seven, not greedy"
    # A model predictor without a model names every baseline, the new one included.
    assert ev.main(["--data", str(items_file), "--out", str(tmp_path / "none")]) == 2
    assert "(or --predictor mean|median|seven for a constant baseline)" in capsys.readouterr().err


def test_get_predictor_by_name(tiny_llama, tiny_tokenizer):
    """What train.py's validation metric does: a predictor by name, a model and tokenizer, prices back."""
    greedy = get_predictor("greedy", max_new_tokens=4).predict(PROMPTS, model=tiny_llama, tokenizer=tiny_tokenizer,
                                                              batch_size=2)
    assert [p.price for p in greedy] == predict_greedy(tiny_llama, tiny_tokenizer, PROMPTS, 2, max_new_tokens=4)
    expected = get_predictor("expected", estimate="log-mean", search_width=3).predict(
        PROMPTS, model=tiny_llama, tokenizer=tiny_tokenizer, batch_size=2)
    assert [p.price for p in expected] == predict_expected(tiny_llama, tiny_tokenizer, PROMPTS, 2, how="log-mean",
                                                           top_m=3)
    assert all(0 < p.mass <= 1 for p in expected) and all(p.mass is None for p in greedy)
    assert get_predictor("median").predict(["a", "b", "c"], train_prices=[3.0, 1.0, 2.0]) == [Prediction(2.0)] * 3


def test_registry_errors(seven):
    with pytest.raises(ValueError, match="^unknown predictor 'ridge': pick one of "
                                         "greedy, expected, mean, median, seven$"):
        get_predictor("ridge")
    with pytest.raises(ValueError, match="two predictors are named 'seven'"):
        register(SevenDollars)
    with pytest.raises(TypeError):
        get_predictor("seven", estimate="mean")   # options are the predictor's own keywords
