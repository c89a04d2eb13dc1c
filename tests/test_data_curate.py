"""The course's cleaning rules, one by one, and price parsing."""
import json

import pytest

from data.curate import CurationConfig, SkipRow, curate, is_raw_row, parse_price, scrub, scrub_details


@pytest.mark.parametrize("value, price", [
    (12, 12.0), (12.5, 12.5), ("12.5", 12.5), ("$1,299.99", 1299.99), (" $7 ", 7.0), ("1299", 1299.0),
    ("$0.99", 0.99), (".5", 0.5), ("-3", -3.0),
])
def test_parse_price_accepts_numbers_and_dollar_strings(value, price):
    assert parse_price(value) == price


@pytest.mark.parametrize("value, reason", [
    (None, "missing price"), ("", "missing price"), ("None", "missing price"), (float("nan"), "missing price"),
    ("10 - 20", "non-numeric price"), ("$12.99 - $15.99", "non-numeric price"), ("abc", "non-numeric price"),
    ("1,29", "non-numeric price"), (True, "non-numeric price"), ([12], "non-numeric price"),
])
def test_parse_price_rejects_with_reason(value, reason):
    with pytest.raises(SkipRow) as e:
        parse_price(value)
    assert e.value.reason == reason


def test_scrub_collapses_punctuation_and_whitespace():
    assert scrub('a: [b]  "c"\n{d}【e】\t\tf') == "a b c d e f"


def test_scrub_drops_long_words_with_digits_only():
    # 7+ characters with a digit go; shorter ones and long words without digits stay.
    assert scrub("model WR60X10185 fits 12-inch ABC1234 AB12345 size 2-Pack extraordinary") == \
        "model fits size 2-Pack extraordinary"
    assert scrub("12-inch") == ""
    assert scrub("AB1234") == "AB1234"


def test_scrub_fixes_comma_runs():
    assert scrub("a , b,, c,,, d") == "a, b, c, d"


def test_scrub_details_removes_course_phrases():
    details = json.dumps({"Batteries Included?": "No", "Batteries Required?": "Yes", "Item Weight": "2 pounds",
                          "Best Sellers Rank": {"Tools": 5}, "Date First Available": "May 1", "Brand": "Acme"})
    assert scrub_details(details) == '{, , " Weight" "2 pounds", " Rank" {"Tools" 5}, " Available" "May 1", "Brand" "Acme"}'


RAW = {"main_category": "Appliances", "title": "Acme AB12345C Water Filter [2-Pack]",
       "description": ["Fresh water."], "features": ["Fits: most fridges", "Lasts 6 months"],
       "details": {"Brand": "Acme", "Batteries Included?": "No", "Item Weight": "1 pound"},
       "price": 12.5, "average_rating": 4.4, "parent_asin": "B000TEST"}


def test_raw_row_curated_by_hand():
    item = curate(RAW, CurationConfig(min_chars=20), source="raw.jsonl")
    # title scrubbed (part number gone); contents: description, features, details minus removals, collapsed.
    assert item.text == ("Acme Water Filter 2-Pack\n"
                         "Fresh water. Fits most fridges Lasts 6 months Brand Acme, Weight 1 pound")
    assert (item.title, item.price, item.category, item.source) == (RAW["title"], 12.5, "Appliances", "raw.jsonl")


def test_raw_details_as_json_string_equals_dict():
    as_string = dict(RAW, details=json.dumps(RAW["details"]))
    config = CurationConfig(min_chars=20)
    assert curate(as_string, config) == curate(RAW, config)


def test_raw_min_chars_counts_description_features_details():
    contents_len = len('Fresh water.\nFits: most fridges\nLasts 6 months\n{"Brand" "Acme", , " Weight" "1 pound"}\n')
    with pytest.raises(SkipRow, match="too short"):
        curate(RAW, CurationConfig(min_chars=contents_len))
    assert curate(RAW, CurationConfig(min_chars=contents_len - 1)).price == 12.5
    with pytest.raises(SkipRow, match="too short"):
        curate(RAW)  # the course's 300 characters


def test_raw_contents_cut_at_ceiling_before_scrub():
    row = dict(RAW, description=["word " * 400], features=[], details=None)
    item = curate(row, CurationConfig(ceiling_chars=50))
    assert item.text == "Acme Water Filter 2-Pack\n" + " ".join(["word"] * 10)


def test_raw_price_string_and_missing():
    assert curate(dict(RAW, description=["x" * 400], price="$1,299.99"),
                  CurationConfig(max_price=2000)).price == 1299.99
    for price, reason in [(None, "missing price"), ("None", "missing price"), ("10 - 20", "non-numeric price")]:
        with pytest.raises(SkipRow, match=reason):
            curate(dict(RAW, price=price))


@pytest.mark.parametrize("price, kept", [(0.49, False), (0.5, True), (999.49, True), (999.5, False)])
def test_price_limits_inclusive(price, kept):
    row = {"title": "t", "text": "t\nsome text", "price": price}
    if kept:
        assert curate(row).price == price
    else:
        with pytest.raises(SkipRow, match="price out of range"):
            curate(row)


def test_curated_rows_are_not_rescrubbed():
    row = {"title": "Acme WR60X10185 Filter", "text": 'Acme WR60X10185 Filter\n"quoted": [kept]', "price": 9.0}
    assert curate(row).text == row["text"]


def test_curated_row_checks_and_defaults():
    with pytest.raises(SkipRow, match="empty text"):
        curate({"title": "t", "text": "  \n ", "price": 3})
    item = curate({"text": "First line title\nbody", "price": "3", "category": "None"})
    assert (item.title, item.category) == ("First line title", None)


def test_course_prompt_text_is_unwrapped():
    row = {"text": "How much does this cost to the nearest dollar?\n\nAcme Filter\nbody text\n\nPrice is $12.00",
           "price": 12.3}
    item = curate(row)
    assert (item.text, item.title) == ("Acme Filter\nbody text", "Acme Filter")


def test_row_kind_detection():
    assert is_raw_row(RAW)
    assert not is_raw_row({"title": "t", "text": "x", "price": 1, "details": {}})  # bundled rows carry details
