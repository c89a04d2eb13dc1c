"""predict.py: price a typed listing, stdin or an unlabeled file, with an interval; one-line errors."""
from __future__ import annotations

import csv
import io
import json

import pytest

import predict
from data.listings import listing_from_text, load_listings
from lora import LoRAConfig, inject_lora, save_adapter
from predictors.base import Prediction
from evaluation.pricing import describe, trust_note


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    inject_lora(model, LoRAConfig(r=2))
    return save_adapter(model, tmp_path_factory.mktemp("run") / "adapter", base_model_name_or_path=str(tiny_llama_dir))


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


COMMON = ("--bits", "16", "--batch-size", "4", "--search-width", "3", "--search-digits", "2")


def test_one_typed_listing_gets_a_price_and_its_interval(adapter, capsys):
    code, out, _ = run(["--adapter", adapter, "--text", "Cordless drill with two batteries", *COMMON], capsys)
    assert code == 0
    line = out.strip().splitlines()[0]
    assert line.startswith("$") and "80% interval $" in line and "10% to 90% quantiles" in line
    assert "the search covered" in line


def test_title_and_text_and_stdin_are_the_same_listing(adapter, capsys, monkeypatch):
    assert listing_from_text("two batteries", "Drill").text == "Drill\ntwo batteries"
    typed = run(["--adapter", adapter, "--title", "Drill", "--text", "two batteries", *COMMON], capsys)[1]
    piped = run(["--adapter", adapter, *COMMON], capsys, stdin="Drill\ntwo batteries\n", monkeypatch=monkeypatch)[1]
    assert typed == piped and typed.startswith("$")


def test_a_file_of_listings_keeps_known_prices_as_truth(adapter, tmp_path, capsys):
    rows = [{"title": "Drill", "text": "Drill\ncordless, two batteries"},
            {"title": "Strings", "description": "Guitar strings, light gauge", "price": "$7.99"},
            {"title": "Hammer, 16 oz", "description": "", "price": 12},            # a title alone: priced from it
            {"text": ""}]                                                       # no text: skipped, counted
    source = tmp_path / "listings.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    listings = load_listings(source)
    assert [(x.title, x.truth) for x in listings] == [("Drill", None), ("Strings", 7.99), ("Hammer, 16 oz", 12.0)]
    assert listings[2].text == listing_from_text("", "Hammer, 16 oz").text == "Hammer, 16 oz"
    for suffix in (".csv", ".jsonl"):
        out = tmp_path / f"priced{suffix}"
        code, stdout, stderr = run(["--adapter", adapter, source, "--out", out, *COMMON], capsys)
        assert code == 0 and f"priced 3 listings" in stdout
        assert "kept 3 of 4: 1 empty text (skipped rows are not in the output)" in stderr
        text = out.read_text()
        got = list(csv.DictReader(io.StringIO(text))) if suffix == ".csv" else [json.loads(x) for x in text.splitlines()]
        assert [g["title"] for g in got] == ["Drill", "Strings", "Hammer, 16 oz"]
        assert str(got[1]["truth"]) in ("7.99", "7.99") and float(got[0]["low"]) <= float(got[0]["high"])


def test_an_adapter_trained_on_padded_answers_is_searched_as_such(adapter, tmp_path, capsys, monkeypatch):
    """The width the adapter was trained with (its training-config.yaml) reaches the digit search."""
    import shutil

    from predictors import ExpectedPredictor

    padded = tmp_path / "padded"
    shutil.copytree(adapter, padded)
    (padded / "training-config.yaml").write_text("data:\n  answer_width: 4\n")
    widths = []
    real = ExpectedPredictor.predict
    monkeypatch.setattr(ExpectedPredictor, "predict",
                        lambda self, prompts, **kw: widths.append(kw["answer_width"]) or real(self, prompts, **kw))
    assert run(["--adapter", padded, "--text", "Cordless drill", *COMMON], capsys)[0] == 0
    assert run(["--adapter", adapter, "--text", "Cordless drill", *COMMON], capsys)[0] == 0
    assert widths == [4, 0]


def test_describe_says_when_to_distrust_a_price():
    sure = describe(Prediction(120.0, mass=0.9, low=80.0, high=150.0))
    assert sure == ("$120.00 (80% interval $80.00 to $150.00: the 10% to 90% quantiles of the model's price "
                    "distribution; the search covered 90% of its probability)")
    shaky = Prediction(120.0, mass=0.3, low=80.0, high=150.0)
    assert trust_note(shaky).startswith("uncertain: the search covered only 30%") and "uncertain" in describe(shaky)
    assert describe(Prediction(None)).startswith("no price: the model wrote no number")
    assert describe(Prediction(9.5)) == "$9.50"


@pytest.mark.parametrize("case, message", [
    ("empty", "the listing is empty"),
    ("no text column", "no text column; found columns: name, cost"),
    ("missing adapter", "no adapter_config.json in"),
    ("baseline", "is a baseline from training prices"),
    ("bad out", "name a .csv or .jsonl file"),
])
def test_bad_input_is_one_line(case, message, adapter, tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("name,cost\nwidget,3\n")
    argv = {"empty": ["--adapter", adapter, "--text", "   "],
            "no text column": ["--adapter", adapter, table],
            "missing adapter": ["--adapter", tmp_path / "nope", "--text", "drill"],
            "baseline": ["--adapter", adapter, "--text", "drill", "--predictor", "median"],
            "bad out": ["--adapter", adapter, table, "--out", tmp_path / "x.txt"]}[case]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_every_shape_of_a_listing_gets_the_same_prompt_ids_and_price(adapter, tiny_llama_dir, tmp_path, capsys,
                                                                      monkeypatch):
    """CSV title+description, CSV title+text, JSONL text, JSONL title+description, parquet, --title/--text, stdin."""
    from transformers import AutoTokenizer

    from predictors import ExpectedPredictor
    from tests.test_data_shapes import BODY, SHAPES, TITLE, WHOLE, write_shape

    prompts = []
    real = ExpectedPredictor.predict
    monkeypatch.setattr(ExpectedPredictor, "predict", lambda self, p, **kw: prompts.extend(p) or real(self, p, **kw))
    prices = []
    for name, (suffix, row) in SHAPES.items():
        out = tmp_path / f"priced-{len(prices)}.jsonl"
        source = write_shape(tmp_path / f"{len(prices)}{suffix}", [row])
        assert run(["--adapter", adapter, source, "--out", out, *COMMON], capsys)[0] == 0, name
        prices.append(json.loads(out.read_text())["price"])
    for argv, stdin in ((["--title", TITLE, "--text", BODY], None), (["--text", "-"], WHOLE + "\n"), ([], WHOLE)):
        code, out, _ = run(["--adapter", adapter, *argv, *COMMON], capsys, stdin=stdin, monkeypatch=monkeypatch)
        assert code == 0 and out.startswith("$")
        prices.append(float(out.split()[0].strip("$").replace(",", "")))
    assert len(prompts) == len(SHAPES) + 3 and len(set(prompts)) == 1 and f"\n\n{WHOLE}\n\n" in prompts[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert len({tuple(tokenizer.encode(p)) for p in prompts}) == 1
    assert len(set(prices)) == 1 and prices[0] > 0, prices


@pytest.mark.parametrize("stdin_errors", ["surrogateescape", "strict"])   # a C.UTF-8 locale's stdin; a strict one
def test_a_byte_that_is_not_utf8_on_stdin_is_one_line(stdin_errors, adapter, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"Drill \xff two batteries\n"), encoding="utf-8", errors=stdin_errors)
    monkeypatch.setattr("sys.stdin", stdin)
    code, _, err = run(["--adapter", adapter, "--text", "-", *COMMON], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: stdin holds a byte that is not UTF-8 (0xff at ") and "save the listing as UTF-8" in err


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
def test_out_that_is_the_input_is_refused(how, adapter, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Drill\ncordless"}) + "\n")
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same path": source, "relative path": "./sub/../in.jsonl", "symlink": tmp_path / "link.jsonl",
           "hard link": tmp_path / "hard.jsonl"}[how]
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        out.symlink_to(source)
    elif how == "hard link":
        out.hardlink_to(source)
    code, _, err = run(["--adapter", adapter, "in.jsonl" if how == "relative path" else source, "--out", out, *COMMON],
                       capsys)
    assert code == 2 and err.startswith("error: --out ") and "is the input file" in err, err
    assert len(err.strip().splitlines()) == 1 and source.read_bytes() == before


def test_an_out_file_held_by_another_writer_is_refused_before_the_model_loads(tmp_path, capsys):
    import fcntl
    import os

    listings = tmp_path / "in.jsonl"
    listings.write_text('{"text": "Cordless drill"}\n')
    fd = os.open(tmp_path / ".out.csv.lock", os.O_RDWR | os.O_CREAT)  # the lock predict.py takes for --out out.csv
    fcntl.flock(fd, fcntl.LOCK_EX)   # a second open file: refused as another process would be
    try:
        assert predict.main([str(listings), "--base", "smollm2-135m", "--out", str(tmp_path / "out.csv")]) == 2
    finally:
        os.close(fd)
    assert f"error: {tmp_path} is in use by another process; wait for it" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_a_bad_calibration_beside_the_adapter_is_one_line(adapter, tmp_path, capsys):
    import shutil

    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    (copy / "interval_calibration.json").write_text('{"margin": -3}')
    with pytest.raises(SystemExit) as e:
        predict.main(["--adapter", str(copy), "--text", "Cordless drill"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{copy / 'interval_calibration.json'}: margin -3 is outside [-1, 10]" in err.strip().splitlines()[-1]
