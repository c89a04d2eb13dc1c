"""One listing, one prompt: the bundled prompts pinned, and every shape of a listing read the same way."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from data import CurationConfig, load_items
from data import test_prompt as make_prompt  # not collected as a test
from data.listings import listing_from_text, load_listings

# Pinned before titles and text shapes were unified (2026-12): the shipped adapters were trained on these
# strings, so the readers must give the bundled rows byte for byte the prompts they gave then.
BUNDLED_PROMPTS_SHA256 = "cd749d3c3654525254ba3fa33beab0830624d73ca06faa3f4acf29df9ef95fea"
BUNDLED_IDS_SHA256 = "b7a56be302d3817efd8545599298aac231c467543b2ad045d14f757045a261e8"   # SmolLM2, every 250th
FIRST_PROMPT_HEAD = ("How much does this cost to the nearest dollar?\n\nSetpower Insulated Protective Cover for AJ30 "
                     "Portable Refrigerator Freezer, suitable for AJ30 Only\nInsulation & Waterproof well-made")


def _sha(prompts) -> str:
    return hashlib.sha256("\0".join(prompts).encode()).hexdigest()


def test_bundled_prompts_are_pinned(bundled_data_dir):
    items = load_items(bundled_data_dir, verbose=False)
    prompts = [make_prompt(item, None) for item in items]
    assert len(prompts) == 13_238 and prompts[0].startswith(FIRST_PROMPT_HEAD)
    assert _sha(prompts) == BUNDLED_PROMPTS_SHA256
    listings = load_listings(bundled_data_dir)   # predict.py's reader gives the same texts
    assert [x.text for x in listings] == [item.text for item in items]


def test_bundled_token_ids_are_pinned(bundled_data_dir, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    items = load_items(bundled_data_dir, verbose=False)[::250]
    ids = [tokenizer.encode(make_prompt(item, tokenizer), add_special_tokens=True) for item in items]
    assert ids[0][:10] == [2020, 1083, 1072, 451, 1708, 288, 260, 15673, 12796, 47]
    assert hashlib.sha256(repr(ids).encode()).hexdigest() == BUNDLED_IDS_SHA256


# A listing with part numbers (words of 7+ characters holding a digit), which the course's cleaning drops,
# a "Title:"-free body, and a second line: every shape must give the model this text whole.
TITLE = "Fender Frontman 10G Guitar Amplifier, 2311000000"
BODY = "10-watt practice amp, model 2311000000-US\nOverdrive switch, headphone jack; 6\" speaker"
WHOLE = f"{TITLE}\n{BODY}"


def write_shape(path: Path, rows: list[dict]) -> Path:
    """`rows` as a CSV, JSONL or parquet file (by the suffix), the way a user's tools write them."""
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


SHAPES = {   # name: (file suffix, the row) for the listing TITLE + BODY
    "csv title+description": (".csv", {"title": TITLE, "description": BODY}),
    "csv title+text": (".csv", {"title": TITLE, "text": BODY}),
    "csv title+text holding its title": (".csv", {"title": TITLE, "text": WHOLE}),
    "jsonl text": (".jsonl", {"text": WHOLE}),
    "jsonl title+description": (".jsonl", {"title": TITLE, "description": BODY}),
    "parquet title+text": (".parquet", {"title": TITLE, "text": BODY}),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_of_a_listing_reads_as_the_whole_listing(shape, tmp_path):
    suffix, row = SHAPES[shape]
    path = write_shape(tmp_path / f"listing{suffix}", [{**row, "price": "$1,299.00"}])
    [listing] = load_listings(path)
    [item] = load_items(path, verbose=False, config=CurationConfig(min_chars=0, max_price=1e6))   # training reads it
    assert listing.text == item.text == WHOLE and listing.title == item.title == TITLE
    assert listing.truth == item.price == 1299.0
    assert listing_from_text(BODY, TITLE).text == listing_from_text(WHOLE, where="stdin").text == WHOLE


def test_a_curated_row_split_into_title_and_text_reads_as_curated(bundled_data_dir, tmp_path):
    """A user who keeps the curated title line in a `title` column and the rest in `text` gets the curated prompt."""
    items = load_items(bundled_data_dir, verbose=False)[:50]
    split = [dict(zip(("title", "text"), item.text.split("\n", 1)), price=item.price) for item in items]
    assert all("text" in row for row in split)   # each holds a title line and a body
    path = write_shape(tmp_path / "split.csv", split)
    assert [x.text for x in load_items(path, verbose=False)] == [item.text for item in items]



@pytest.mark.parametrize("case, data, price", [
    ("byte order mark", b"\xef\xbb\xbftitle,text,price\n" + f'"{TITLE}","{BODY}",5\n'.encode().replace(b'6"', b'6""'),
     5.0),
    ("CRLF line ends, quoted cell with CRLF inside",
     f'title,text,price\r\n"{TITLE}","{BODY.replace(chr(10), chr(13) + chr(10))}",5\r\n'.encode().replace(b'6"', b'6""'),
     5.0),
    ("title+description, cell with CR inside",
     f'title,description,price\r\n"{TITLE}","{BODY.replace(chr(10), chr(13))}",5\r\n'.encode().replace(b'6"', b'6""'),
     5.0),
    ("price $1,299.00", f'title,text,price\r\n"{TITLE}","{BODY}","$1,299.00"\r\n'.encode().replace(b'6"', b'6""'),
     1299.0),
    ("price 1,299", f'title,text,price\r\n"{TITLE}","{BODY}","1,299"\r\n'.encode().replace(b'6"', b'6""'), 1299.0),
    ("price with spaces", f'title,text,price\r\n"{TITLE}","{BODY}", $12 \r\n'.encode().replace(b'6"', b'6""'), 12.0),
])
def test_spreadsheet_exports_read_as_the_typed_listing(case, data, price, tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    [listing] = load_listings(path)
    [item] = load_items(path, verbose=False, config=CurationConfig(min_chars=0, max_price=1e6), strict=True)
    assert listing.text == item.text == listing_from_text(BODY, TITLE).text == WHOLE, case
    assert listing.truth == item.price == price
