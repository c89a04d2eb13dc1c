"""Read items from files, folders or Hugging Face datasets, counting every row that is skipped.

Sources: a .jsonl / .jsonl.gz / .csv / .csv.gz / .parquet file; a folder of such files (the
bundled `data/amazon-prices` loads as one source); a dataset saved with `save_to_disk`; or,
with fmt="hf", anything `datasets.load_dataset` accepts (a hub name, a local data folder).
Each row is either a listing (text, title + text or title + description, and a price) or raw
Amazon-Reviews-2023 metadata, told apart per row by `data.curate.is_raw_row`; every shape of
a listing gives the same text (`data.curate`'s docstring).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from data.curate import RAW_TEXT_FIELDS, CurationConfig, SkipRow, curate
from data.items import DataError, Item

FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}
_Row = tuple[str, str, dict | SkipRow]  # (source name, "path:line", row or the reason it is unreadable)


@dataclass
class LoadReport:
    """What a load kept and skipped: `reasons` counts skipped rows by reason."""

    kept: int = 0
    total: int = 0
    reasons: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """One line, e.g. "kept 12,904 of 13,055: 120 price out of range, 31 too short"."""
        line = f"kept {self.kept:,} of {self.total:,}"
        if self.reasons:
            line += ": " + ", ".join(f"{n:,} {reason}" for reason, n in self.reasons.most_common())
        return line


def load_items(source: str | Path, *, strict: bool = False, fmt: str | None = None, limit: int | None = None,
               report: LoadReport | None = None, config: CurationConfig | None = None, verbose: bool = True,
               name: str | None = None, split: str | None = None) -> list[Item]:
    """Items from `source`; bad rows are skipped and counted (strict=True: DataError at the first).

    fmt forces a file format ("jsonl", "csv", "parquet") or "hf" for `datasets.load_dataset`
    (then `name` is the dataset config, e.g. "raw_meta_Appliances", and `split` the split).
    limit stops after that many kept items. The summary goes to stderr unless verbose=False.
    """
    if fmt is not None and fmt not in {"jsonl", "csv", "parquet", "hf"}:
        raise DataError(f"unknown fmt {fmt!r}: use jsonl, csv, parquet or hf")
    report = report if report is not None else LoadReport()
    items: list[Item] = []
    for origin, where, row in _rows(Path(source) if fmt != "hf" else source, fmt, name, split):
        if limit is not None and len(items) >= limit:
            break
        report.total += 1
        try:
            if isinstance(row, SkipRow):
                raise row
            item = curate(row, config, source=origin)
        except SkipRow as skip:
            if strict:
                raise DataError(f"{where}: {skip.reason}") from None
            report.reasons[skip.reason] += 1
            continue
        items.append(item)
        report.kept += 1
        report.per_source[origin] += 1
    if verbose:
        print(f"{source}: {report.summary()}", file=sys.stderr)
    return items


def data_files(folder: Path, fmt: str | None = None) -> list[Path]:
    """The data files directly inside `folder`, sorted by name (optionally of one format)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and _format_of(p) is not None and (fmt is None or _format_of(p) == fmt))


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    return next((f for suffix, f in FORMATS.items() if name.endswith(suffix)), None)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def read_rows(source: str | Path, fmt: str | None = None, need_price: bool = True) -> Iterator[_Row]:
    """(source name, "path:line", row dict or the SkipRow it is) for every row of a file or folder, uncurated.

    need_price=False accepts tables without a price column (listings to be priced).
    """
    token = _NEED_PRICE.set(need_price)
    try:
        yield from _rows(Path(source) if fmt != "hf" else source, fmt, None, None)
    finally:
        _NEED_PRICE.reset(token)


def _rows(source: str | Path, fmt: str | None, name: str | None, split: str | None) -> Iterator[_Row]:
    if fmt == "hf" or (isinstance(source, Path) and _is_saved_dataset(source)):
        yield from _hf_rows(str(source), name, split)
        return
    if source.is_dir():
        files = data_files(source, fmt)
        if not files:
            raise FileNotFoundError(f"{source}: no data files ({', '.join(FORMATS)}) in this folder")
        for path in files:
            yield from _file_rows(path, fmt)
    elif source.is_file():
        yield from _file_rows(source, fmt)
    else:
        raise FileNotFoundError(f"{source}: no such file or folder "
                                "(for a Hugging Face dataset name pass fmt='hf')")


def _file_rows(path: Path, fmt: str | None) -> Iterator[_Row]:
    kind = fmt or _format_of(path)
    if kind is None:
        raise DataError(f"{path}: unknown file type; use {', '.join(FORMATS)} or pass fmt=")
    try:
        yield from {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind](path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: damaged gzip file ({e}); re-download or re-compress it") from None
    except csv.Error as e:   # e.g. a field longer than the csv module's limit: the rows after it cannot be found
        raise DataError(f"{path}: not a readable CSV file ({e}); check its quoting") from None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    with _open_bytes(path) as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield path.name, where, SkipRow("undecodable bytes")
                continue
            if not line.strip():
                continue
            try:
                yield path.name, where, json.loads(line)
            except (ValueError, RecursionError):   # bad JSON, an integer too long to convert, nesting too deep
                yield path.name, where, SkipRow("malformed JSON")


def _csv_rows(path: Path) -> Iterator[_Row]:
    with _open_bytes(path) as f:
        # surrogateescape keeps bad bytes visible per row instead of failing the whole file.
        # utf-8-sig drops the byte order mark Excel writes, which would otherwise rename the first column.
        text = f.read().decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:   # an empty file: no rows
        return
    check_columns(path, reader.fieldnames)
    start = reader.line_num + 2  # the header is line 1
    for row in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        values = [v for v in row.values() if isinstance(v, str)]
        if None in row or None in row.values():
            yield path.name, where, SkipRow("malformed CSV row")
        elif any(_has_surrogates(v) for v in values):
            yield path.name, where, SkipRow("undecodable bytes")
        else:
            yield path.name, where, dict(row)


NEEDED_COLUMNS = "need title, text (or description) and price"
# Whether the table being read must have a price column: listings to price (read_rows) need not.
_NEED_PRICE: ContextVar[bool] = ContextVar("pricer_need_price", default=True)


def check_columns(path: Path, names: Sequence[str]) -> None:
    """DataError naming the columns found when a table lacks those items are made from (curated or raw rows)."""
    have = set(names) | (set() if _NEED_PRICE.get() else {"price"})
    has_text = "text" in have or bool(have & set(RAW_TEXT_FIELDS))
    # A text holds its title on its first line when no title column gives it; a description needs one.
    missing = ("price" if "price" not in have else "text" if not has_text
               else "title" if "text" not in have and "title" not in have else None)
    if missing is None:
        return
    shown = [n if n.isprintable() else repr(n) for n in names[:12]] + (["..."] if len(names) > 12 else [])
    need = NEEDED_COLUMNS if _NEED_PRICE.get() else NEEDED_COLUMNS.replace(" and price", "")
    raise DataError(f"{path}: no {missing} column; found columns: {', '.join(shown) or '(none)'}; {need}")


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parquet_rows(path: Path) -> Iterator[_Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading parquet needs pyarrow: pip install pyarrow") from None
    n = 0
    try:
        table = pq.ParquetFile(path)
    except Exception as e:   # pyarrow raises ArrowInvalid, OSError and others for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}); re-export it") from None
    check_columns(path, table.schema_arrow.names)
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield path.name, f"{path}:{n}", row


def _hf_rows(source: str, name: str | None, split: str | None) -> Iterator[_Row]:
    try:
        import datasets
    except ImportError:
        raise DataError("loading Hugging Face datasets needs `datasets`: pip install datasets") from None
    try:
        if _is_saved_dataset(Path(source)):
            loaded = datasets.load_from_disk(source)
            if split is not None and isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(source, name, split=split)
    except (FileNotFoundError, ConnectionError, KeyError, ValueError, OSError) as e:
        raise DataError(f"{source}: could not load this dataset ({type(e).__name__}: {e}); "
                        "pass a local file or folder instead") from None
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(split or "data", loaded)]
    label = Path(source).name if Path(source).exists() else source
    for part, ds in parts:
        for n, row in enumerate(ds, 1):
            yield f"{label}:{part}", f"{source}:{part}:{n}", row
