"""Listings to price: rows with a text and maybe a price, as predict.py reads them.

A listing is what the model reads (title on the first line of `text`); `truth` is its price
when the row has a usable one (so predict.py can show how far off it was), else None. Rows are
read as `load_items` reads them (JSONL, CSV, parquet, gzip; text, title + text, title +
description or raw Amazon metadata), but no price column is needed and no length floor
applies: a short listing is still a listing to price. A typed or piped listing
(`listing_from_text`) is joined to its title by the same rule as a row (`data.curate`'s
docstring), so the same product reads the same from a file, --title/--text or stdin.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from data.curate import CurationConfig, SkipRow, curate, listing_text, one_line, parse_price
from data.items import DataError
from data.sources import LoadReport, read_rows

_PRICING = replace(CurationConfig(), min_chars=0, min_price=0.0, max_price=float("inf"))


@dataclass
class Listing:
    """One listing to price: title, the text the model reads, and its price when known."""

    title: str
    text: str
    truth: float | None = None


def listing_from_text(text: str, title: str | None = None, where: str = "--text") -> Listing:
    """A typed listing: `text` (its first line is the title) and maybe `title`; DataError when empty or not UTF-8."""
    for name, value in ((where, text), ("--title", title)):
        bad = next((i for i, c in enumerate(value or "") if "\udc80" <= c <= "\udcff"), None)
        if bad is not None:   # a byte that is not UTF-8, as argv and a surrogateescape stdin carry it
            raise DataError(f"{name} holds a byte that is not UTF-8 (0x{ord(value[bad]) - 0xdc00:02x} at character "
                            f"{bad + 1}); save the listing as UTF-8 and try again")
    body = listing_text(title, text)
    if not body:
        raise DataError("the listing is empty: pass --text \"...\" (and --title), a file, or text on stdin")
    return Listing(title=one_line(title or "") or body.split("\n", 1)[0].strip(), text=body)


def load_listings(source: str | Path, fmt: str | None = None, report: LoadReport | None = None) -> list[Listing]:
    """Every usable row of `source` as a Listing; unusable rows are counted in `report`; DataError when none is."""
    report = report if report is not None else LoadReport()
    listings = []
    for _, _, row in read_rows(source, fmt, need_price=False):
        report.total += 1
        try:
            if isinstance(row, SkipRow):
                raise row
            if not isinstance(row, dict):
                raise SkipRow("not an object")
            listing = _row_listing(row)
        except SkipRow as skip:
            report.reasons[skip.reason] += 1
            continue
        try:
            listing.truth = parse_price(row.get("price")) if row.get("price") not in (None, "") else None
        except SkipRow:
            listing.truth = None
        listings.append(listing)
        report.kept += 1
    if not listings:
        raise DataError(f"{source}: no listing to price ({report.summary()}); each row needs a text (or title and "
                        "description)")
    return listings


def _row_listing(row: dict) -> Listing:
    """A row's listing, its text as training cleaned it; a row with a title and nothing else is priced from its
    title, as `--title` alone is (training skips it: there is nothing to learn a price from beyond the title)."""
    try:
        item = curate({**row, "price": 1.0}, _PRICING)
    except SkipRow as skip:
        title = row.get("title")
        if skip.reason != "empty text" or not isinstance(title, str) or not one_line(title):
            raise
        return Listing(title=one_line(title), text=listing_text(title, ""))
    return Listing(item.title, item.text)
