"""Fuzzing the data readers: any bytes as a .jsonl, .csv or .jsonl.gz file give items, counted skips, or one line.

`load_items` must return well-formed items (the rest counted in the LoadReport by reason), or
raise DataError / FileNotFoundError with a one-line message: never another exception.
"""
from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from data import DataError, LoadReport, load_items
from data.curate import CurationConfig

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
GOOD_JSONL = b'{"title": "Acme kettle", "text": "Acme kettle\\nboils water fast", "price": 24.5}\n'
GOOD_CSV = b'title,text,price\n"Acme kettle","Acme kettle\nboils water fast",24.50\n'

# JSON values of every kind, nested; and rows that look like real ones with any value in any field.
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)
FIELDS = ("title", "text", "price", "description", "features", "details", "category", "main_category")
ROWS = st.dictionaries(st.sampled_from(FIELDS), JSON | st.text(min_size=290, max_size=400), max_size=6)


def mutated(good: bytes) -> st.SearchStrategy[bytes]:
    """`good` with bytes flipped, cut short or spliced with random bytes: near misses find more than noise."""
    def splice(args):
        data, at, junk, cut = args
        at, cut = at % (len(data) + 1), cut % (len(data) + 1)
        return (data[:at] + junk + data[at:])[:max(cut, at)]
    return st.tuples(st.just(good * 2), st.integers(0, 10_000), st.binary(max_size=12),
                     st.integers(0, 10_000)).map(splice)


def check(path) -> None:
    """The property: items, counted skips, or a one-line DataError / FileNotFoundError."""
    report = LoadReport()
    try:
        items = load_items(path, report=report, verbose=False)
    except (DataError, FileNotFoundError) as e:
        event("refused")
        assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))
        return
    event("items kept" if items else "read, nothing kept")
    assert report.kept == len(items) and report.kept + sum(report.reasons.values()) == report.total
    limits = CurationConfig()
    for it in items:
        assert isinstance(it.title, str) and it.title.strip() and isinstance(it.text, str) and it.text.strip()
        assert limits.min_price <= it.price <= limits.max_price
        (it.title + it.text + (it.category or "")).encode("utf-8")   # writable to predictions.csv


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=400) | mutated(GOOD_JSONL))
@example(data=b"[" * 50_000)
@example(data=b'{"title": "a", "text": "b", "price": 1' + b"0" * 5000 + b"}")
def test_any_bytes_as_jsonl(folder, data):
    path = folder / "f.jsonl"
    path.write_bytes(data)
    check(path)


@FUZZ
@given(rows=st.lists(ROWS | JSON, max_size=4))
@example(rows=[{"title": "a", "text": "a b", "price": 10 ** 400}, {"text": "\ud800 b", "price": 5}])
def test_any_json_rows(folder, rows):
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    check(path)


@FUZZ
@given(data=st.binary(max_size=400) | mutated(GOOD_CSV))
@example(data=b"\xef\xbb\xbf" + GOOD_CSV)
@example(data=b'title,text,price\n"' + b"x" * 200_000 + b'",a,1\n')
def test_any_bytes_as_csv(folder, data):
    path = folder / "f.csv"
    path.write_bytes(data)
    check(path)


@FUZZ
@given(data=st.binary(max_size=300) | mutated(gzip.compress(GOOD_JSONL * 3, mtime=0))
       | st.binary(max_size=300).map(lambda b: gzip.compress(b, mtime=0)))
def test_any_bytes_as_jsonl_gz(folder, data):
    path = folder / "f.jsonl.gz"
    path.write_bytes(data)
    check(path)


# Listing text as people type it: any printable character, tabs and both kinds of line end (no other controls).
CHARS = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\r\n ,\"'")


def _letters(s: str) -> str:
    return "".join(c for c in s.casefold() if c.isalnum())


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(title=st.text(CHARS, min_size=1, max_size=30), body=st.text(CHARS, min_size=1, max_size=80))
@example(title="Fender Frontman 10G, 2311000000", body="10-watt amp\r\nmodel 2311000000-US, 6\" speaker")
@example(title="Drill", body="\r\n  cordless\rtwo batteries  ")
def test_any_listing_reads_back_the_same_in_every_shape(folder, title, body):
    """Title + body written as CSV (title+text, title+description), JSONL (text, title+text, title+description),
    parquet, --title/--text or stdin: one text, the title's line then the body with "\\n" line ends."""
    from data.curate import scrub
    from data.listings import listing_from_text, load_listings
    from tests.test_data_shapes import write_shape

    title = " ".join(title.replace("\r", "\n").split("\n")).strip()   # a title is one line
    whole = f"{title}\n{body}".replace("\r\n", "\n").replace("\r", "\n").strip()
    first = body.replace("\r", "\n").strip().split("\n")[0]
    # The documented exceptions: a title the course's cleaning erases whole, a body whose first line is the title.
    assume(title and body.strip() and _letters(scrub(title)))
    assume(_letters(first) not in (_letters(title), _letters(scrub(title))))
    assume(not first.casefold().lstrip().startswith("title"))
    typed = [listing_from_text(body, title).text, listing_from_text(f"{title}\n{body}", where="stdin").text]
    files = {"a.csv": {"title": title, "text": body}, "b.csv": {"title": title, "description": body},
             "c.jsonl": {"text": f"{title}\n{body}"}, "d.jsonl": {"title": title, "text": body},
             "e.jsonl": {"title": title, "description": body}, "f.parquet": {"title": title, "text": body}}
    read = [load_listings(write_shape(folder / name, [row]))[0].text for name, row in files.items()]
    assert set(typed + read) == {whole}, (typed, read)
