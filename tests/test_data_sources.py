"""Readers: real bundled rows round-tripped through every format, raw rows, HF datasets, bad input."""
import csv
import gzip
import json

import pytest

from data import DataError, Item, LoadReport, load_items

BUNDLED_FILES = ["appliances-lite.jsonl.gz", "fragments.jsonl.gz", "mixed.jsonl.gz",
                 "musical-appliances.jsonl.gz", "software.jsonl.gz"]
COLUMNS = ["title", "text", "price", "category"]


def _real_rows(bundled_data_dir, n=4):
    rows = []
    for name in BUNDLED_FILES:
        with gzip.open(bundled_data_dir / name, "rt", encoding="utf-8") as f:
            rows += [{k: json.loads(line)[k] for k in COLUMNS} for line, _ in zip(f, range(n))]
    return rows


def _expected(rows, source):
    return [Item(r["title"], r["text"], r["price"], r["category"], source) for r in rows]


def _write_jsonl(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def test_bundled_file_rows_become_items(bundled_data_dir):
    rows = _real_rows(bundled_data_dir, n=3)[:3]
    items = load_items(bundled_data_dir / "appliances-lite.jsonl.gz", limit=3, verbose=False)
    assert items == _expected(rows, "appliances-lite.jsonl.gz")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".csv", ".parquet"])
def test_real_rows_round_trip_through_each_format(bundled_data_dir, tmp_path, suffix):
    rows = _real_rows(bundled_data_dir)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows({**r, "category": r["category"] or ""} for r in rows)
    elif suffix == ".parquet":
        pq = pytest.importorskip("pyarrow.parquet")
        import pyarrow as pa
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        _write_jsonl(path, rows)
    report = LoadReport()
    assert load_items(path, report=report, verbose=False) == _expected(rows, path.name)
    assert (report.kept, report.total, sum(report.reasons.values())) == (len(rows), len(rows), 0)


def test_folder_reads_every_data_file_sorted(tmp_path, bundled_data_dir):
    rows = _real_rows(bundled_data_dir, n=2)
    _write_jsonl(tmp_path / "b.jsonl", rows[:4])
    _write_jsonl(tmp_path / "a.jsonl.gz", rows[4:])
    (tmp_path / "SOURCES.md").write_text("not data")
    report = LoadReport()
    items = load_items(tmp_path, report=report, verbose=False)
    assert items == _expected(rows[4:], "a.jsonl.gz") + _expected(rows[:4], "b.jsonl")
    assert report.per_source == {"a.jsonl.gz": 6, "b.jsonl": 4}


def test_limit_counts_kept_items(tmp_path, bundled_data_dir):
    rows = _real_rows(bundled_data_dir, n=2)
    path = _write_jsonl(tmp_path / "r.jsonl", [{"title": "x", "text": "", "price": 1}] + rows)
    report = LoadReport()
    assert load_items(path, limit=3, report=report, verbose=False) == _expected(rows[:3], "r.jsonl")
    assert (report.kept, report.total) == (3, 4)


RAW_ROWS = [
    {"main_category": "Appliances", "title": "Whirlpool W10295370A Refrigerator Water Filter",
     "features": ["Reduces chlorine taste and odor", "Replace every six months"],
     "description": ["Genuine filter. " * 20], "price": "$49.99",
     "details": json.dumps({"Brand": "Whirlpool", "Batteries Included?": "No", "Item Weight": "1 pound"}),
     "average_rating": 4.7, "rating_number": 1200, "images": [], "videos": [], "store": "Whirlpool"},
    {"main_category": "Musical Instruments", "title": "Guitar strings, light gauge", "features": [],
     "description": ["Bright tone and long life for acoustic guitars. " * 8],
     "details": {"Gauge": "Light", "Best Sellers Rank": {"Musical Instruments": 12}}, "price": 7},
    {"main_category": "Tools", "title": "No price here", "description": ["x" * 400], "price": None},
    {"main_category": "Tools", "title": "Too short", "description": ["tiny"], "price": 5.0},
]


def test_raw_rows_from_jsonl_curated(tmp_path):
    path = _write_jsonl(tmp_path / "meta.jsonl", RAW_ROWS)
    report = LoadReport()
    items = load_items(path, report=report, verbose=False)
    assert [(it.title, it.price, it.category) for it in items] == [
        (RAW_ROWS[0]["title"], 49.99, "Appliances"), (RAW_ROWS[1]["title"], 7.0, "Musical Instruments")]
    assert items[0].text.startswith("Whirlpool Refrigerator Water Filter\nGenuine filter. Genuine")
    assert "Batteries" not in items[0].text and items[0].text.endswith("Brand Whirlpool, Weight 1 pound")
    assert items[1].text.endswith("Gauge Light, Rank Musical Instruments 12")  # "Best Sellers" removed
    assert report.reasons == {"missing price": 1, "too short": 1}


def test_hf_saved_dataset_in_course_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    prompts = ["How much does this cost to the nearest dollar?\n\nAcme Filter\nFits most fridges\n\nPrice is $12.00",
               "How much does this cost to the nearest dollar?\n\nGuitar Strings\nLight gauge\n\nPrice is $8.00"]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": prompts[:1], "price": [12.34]}),
        "test": datasets.Dataset.from_dict({"text": prompts[1:], "price": [7.99]}),
    })
    dd.save_to_disk(str(tmp_path / "pricer-data"))
    items = load_items(tmp_path / "pricer-data", verbose=False)
    assert items == [Item("Acme Filter", "Acme Filter\nFits most fridges", 12.34, None, "pricer-data:train"),
                     Item("Guitar Strings", "Guitar Strings\nLight gauge", 7.99, None, "pricer-data:test")]
    only_test = load_items(tmp_path / "pricer-data", split="test", verbose=False)
    assert [it.price for it in only_test] == [7.99]


def test_hf_load_dataset_on_local_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "hub-like"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"text": "Acme Filter\nbody", "price": 3.5}, {"text": "", "price": 2}])
    report = LoadReport()
    items = load_items(folder, fmt="hf", report=report, verbose=False)
    assert [(it.title, it.price, it.source) for it in items] == [("Acme Filter", 3.5, "hub-like:train")]
    assert report.reasons == {"empty text": 1}


# Each bad input once, with the reason it must be counted under.
BAD_LINES = [
    (b'{"title": "a", "text": "a\\nb", ', "malformed JSON"),
    (b'{"title": "a", "text": "a\\nb"}', "missing price"),
    (b'{"title": "a", "text": "a\\nb", "price": "10 - 20"}', "non-numeric price"),
    (b'{"title": "a", "text": "", "price": 5}', "empty text"),
    (b'{"title": "caf\xe9", "text": "a\\nb", "price": 5}', "undecodable bytes"),
    (b'{"title": "a", "text": "a\\nb", "price": 5000}', "price out of range"),
    (b'{"title": "a", "description": ["short"], "price": 5}', "too short"),
    (b'[1, 2]', "not an object"),
]
GOOD_LINE = b'{"title": "Good", "text": "Good\\nitem", "price": "$1,299.99"}'


def _bad_file(tmp_path, lines):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_rows_skipped_and_counted(tmp_path, capsys):
    path = _bad_file(tmp_path, [GOOD_LINE.replace(b"1,299.99", b"299.99"), b""] + [line for line, _ in BAD_LINES])
    items = load_items(path)
    assert [it.title for it in items] == ["Good"]
    summary = capsys.readouterr().err
    assert f"kept 1 of {1 + len(BAD_LINES)}: " in summary
    for _, reason in BAD_LINES:
        assert f"1 {reason}" in summary


@pytest.mark.parametrize("line, reason", BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_strict_stops_at_first_bad_row_with_file_and_line(tmp_path, line, reason):
    path = _bad_file(tmp_path, [GOOD_LINE.replace(b"1,299.99", b"299.99"), line, line])
    with pytest.raises(DataError) as e:
        load_items(path, strict=True, verbose=False)
    assert str(e.value) == f"{path}:2: {reason}"


def test_csv_bad_rows_with_line_numbers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'title,text,price\n"A","A\nmultiline body",4.5\n"B","B\xff",5\n"C","C body","10 - 20"\n')
    report = LoadReport()
    assert [it.title for it in load_items(path, report=report, verbose=False)] == ["A"]
    assert report.reasons == {"undecodable bytes": 1, "non-numeric price": 1}
    with pytest.raises(DataError, match=rf"^{path}:4: undecodable bytes$"):
        load_items(path, strict=True, verbose=False)


def test_summary_wording():
    report = LoadReport(kept=12904, total=13055)
    report.reasons.update({"price out of range": 120, "too short": 31})
    assert report.summary() == "kept 12,904 of 13,055: 120 price out of range, 31 too short"


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_items(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="no data files"):
        load_items(tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown file type"):
        load_items(tmp_path / "x.txt")
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="damaged gzip"):
        load_items(tmp_path / "broken.jsonl.gz", verbose=False)


def test_full_bundled_folder(bundled_data_dir, capsys):
    from data import split_items

    report = LoadReport()
    items = load_items(bundled_data_dir, report=report)
    assert report.total == 13238 and 13000 <= report.kept <= report.total
    assert set(report.per_source) == set(BUNDLED_FILES)
    splits = split_items(items, seed=42)
    assert 12500 <= len(items) - splits.duplicates <= 13000
    with capsys.disabled():
        print(f"\nbundled: {report.summary()}; after dedup: {splits.summary()}")


@pytest.mark.parametrize("header, missing", [
    ("name,cost", "price"),
    ("title,cost,description", "price"),
    ("title,price", "text"),
    ("price,description", "title"),
])
def test_csv_with_other_columns_says_which_it_found(tmp_path, header, missing):
    path = tmp_path / "x.csv"
    path.write_text(header + "\n" + ",".join(["3"] * len(header.split(","))) + "\n")
    found = ", ".join(header.split(","))
    with pytest.raises(DataError) as e:
        load_items(path, verbose=False)
    assert str(e.value) == (f"{path}: no {missing} column; found columns: {found}; "
                            "need title, text (or description) and price")


def test_csv_column_names_are_shown_on_one_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'"na\nme",c\xffost\n1,2\n')
    with pytest.raises(DataError) as e:
        load_items(path, verbose=False)
    assert "\n" not in str(e.value) and "found columns: 'na\\nme', 'c\\udcffost'" in str(e.value)


def test_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftitle,text,price\nA,A body,4.5\n")
    assert [(it.title, it.price) for it in load_items(path, verbose=False)] == [("A", 4.5)]


def test_parquet_with_other_columns_says_which_it_found(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"name": "a", "cost": 3.0}]), path)
    with pytest.raises(DataError, match=r"x\.parquet: no price column; found columns: name, cost; need"):
        load_items(path, verbose=False)


@pytest.mark.parametrize("line, reason", [
    (b'{"title": "a", "text": "a\\nb", "price": 1' + b"0" * 5000 + b"}", "malformed JSON"),   # int too long to read
    (b"[" * 100000, "malformed JSON"),                                                          # nested too deep
    (b'{"title": "a", "text": "a\\nb", "price": 1' + b"0" * 400 + b"}", "price out of range"),  # overflows a float
    (b'{"title": "a\\ud800", "text": "a\\nb", "price": 5}', "invalid unicode"),                # a lone surrogate
])
def test_hostile_json_lines_are_skipped_and_counted(tmp_path, line, reason):
    path = _bad_file(tmp_path, [GOOD_LINE.replace(b"1,299.99", b"299.99"), line])
    report = LoadReport()
    assert [it.title for it in load_items(path, report=report, verbose=False)] == ["Good"]
    assert report.reasons == {reason: 1}


def test_damaged_deflate_data_is_a_data_error(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    good = gzip.compress(GOOD_LINE * 50)
    path.write_bytes(good[:20] + bytes(b ^ 0x55 for b in good[20:40]) + good[40:])
    with pytest.raises(DataError, match="damaged gzip file"):
        load_items(path, verbose=False)
