"""Text cells of the CSV files pricer writes, safe to open in a spreadsheet (OWASP's CSV injection rule).

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage return before
one) as a formula, so a product title such as `=HYPERLINK("http://...")` in predictions.csv would be
live in Excel. Text cells starting with one of those get a leading `'`, which spreadsheets show as a
plain-text marker; numbers pricer writes as numbers (`-3.50`) are not text cells and stay numbers.
A text cell that itself starts with `'` gets one more, so that reading back (`read_text_cell`) drops
exactly one quote from every escaped cell and gives each title as it was.
"""
from __future__ import annotations

FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_LEAD = FORMULA_LEAD + ("'",)


def text_cell(text: str) -> str:
    """`text` as a CSV text cell: a leading `'` added when a spreadsheet would run it (or it starts with `'`)."""
    return "'" + text if text.startswith(_ESCAPED_LEAD) else text


def read_text_cell(cell: str) -> str:
    """The text a `text_cell` was written from (an older, unescaped cell reads as it is unless it began `'=`)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_ESCAPED_LEAD) else cell
