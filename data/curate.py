r"""Rows to items, cleaned the way the course cleaned Amazon-Reviews-2023 metadata.

Follows ed-donner/llm_engineering week 6 (`items.py`, `loaders.py`): keep
0.5 <= price <= 999.49; text = title + description + features + details, with boilerplate
phrases removed from the details, the characters `:[]"{}【】` and whitespace runs collapsed
to one space, and words of 7+ characters that contain a digit (part numbers) dropped;
reject listings whose description + features + details hold 300 characters or fewer.
The course then cut the text to 160 tokens of Llama 3.1's tokenizer; pricer does that
cut in `data.prompts`, with the tokenizer of the model being trained. The course's second
length floor (more than 150 tokens) is tokenizer-specific and is not applied here.

That cleaning is for raw Amazon metadata only: rows with `features` or `details`, or a
`description` list, as the hub's files have them. Every other row is a listing as written, in
one of three shapes, and all three give the model the same text for the same product:

    text                       "Fender Frontman 10G\n10 watt practice amp"   (title on its first line)
    title + text               "Fender Frontman 10G", "10 watt practice amp"
    title + description        "Fender Frontman 10G", "10 watt practice amp"

The text is the title on the first line, then the body, with nothing dropped: line ends become
"\n", the ends are stripped, a title's own line breaks become spaces, and a text holding a whole
course prompt is unwrapped to its item text. A separate title goes before the body unless the
body's first line already is that title (compared on letters and digits, as given or as the course
cleaned it, after a "Title:" label), so the bundled rows, which carry their cleaned title inside
`text`, read exactly as they were trained on, and a listing split into title and text reads as
the whole. A title the course's cleaning erases whole (only part numbers, like "ExZeus2") counts
as held too, as the course's rows then have no title line; put such a title on the text's first
line instead. No cleaning is applied to these rows because the bundled curated text cannot be
cleaned again without changing the prompts the shipped adapters learnt.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from data.items import DataError, Item
from data.prompts import PREFIX, QUESTION

REMOVALS: tuple[str, ...] = (
    '"Batteries Included?": "No"', '"Batteries Included?": "Yes"',
    '"Batteries Required?": "No"', '"Batteries Required?": "Yes"',
    "By Manufacturer", "Item", "Date First", "Package", ":", "Number of",
    "Best Sellers", "Number", "Product ",
)
RAW_TEXT_FIELDS = ("description", "features", "details")
RAW_FIELDS = ("features", "details")   # only the hub's metadata has these; a description alone is a listing
_COLLAPSE = re.compile(r'[:\[\]"{}【】\s]+')
_PRICE = re.compile(r"-?\$?\s*(\d{1,3}(,\d{3})+|\d+)(\.\d+)?|-?\$?\s*\.\d+")
_MISSING = {"", "none", "null", "nan", "n/a"}
_TITLE_LABEL = re.compile(r"\s*title\s*:", re.IGNORECASE)   # fragments' rows begin "Title: <title>"


@dataclass(frozen=True)
class CurationConfig:
    """Limits and cleaning rules; the defaults are the course's."""

    min_price: float = 0.5
    max_price: float = 999.49
    min_chars: int = 300
    ceiling_chars: int = 1120  # the course's MAX_TOKENS * 7: enough text for 160 tokens
    part_number_len: int = 7
    removals: tuple[str, ...] = field(default=REMOVALS)


class SkipRow(DataError):
    """A row rejected for `reason` (a short phrase used as the skip counter's key)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_price(value: object) -> float:
    """A price from a number or a string like "$1,299.99"; SkipRow when missing or not a number."""
    if value is None or isinstance(value, bool):
        raise SkipRow("missing price" if value is None else "non-numeric price")
    if isinstance(value, (int, float)):
        try:
            price = float(value)
        except OverflowError:   # an integer beyond any float: JSON allows it
            raise SkipRow("price out of range") from None
        if math.isnan(price):
            raise SkipRow("missing price")
        return price
    if not isinstance(value, str):
        raise SkipRow("non-numeric price")
    s = value.strip()
    if s.lower() in _MISSING:
        raise SkipRow("missing price")
    if not _PRICE.fullmatch(s):
        raise SkipRow("non-numeric price")
    return float(s.replace("$", "").replace(",", "").replace(" ", ""))


def check_price(price: float, config: CurationConfig) -> float:
    """The price itself when inside the configured range, else SkipRow."""
    if not config.min_price <= price <= config.max_price:
        raise SkipRow("price out of range")
    return price


def scrub(text: str, part_number_len: int = 7) -> str:
    """Collapse punctuation/whitespace runs to a space and drop long words holding a digit."""
    text = _COLLAPSE.sub(" ", text).strip()
    text = text.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
    words = text.split(" ")
    return " ".join(w for w in words if len(w) < part_number_len or not any(c.isdigit() for c in w))


def scrub_details(details: str, removals: tuple[str, ...] = REMOVALS) -> str:
    """Remove the course's boilerplate phrases from a details string."""
    for phrase in removals:
        details = details.replace(phrase, "")
    return details


def is_raw_row(row: dict) -> bool:
    """True for Amazon-Reviews-2023 metadata rows (no `text`; features, details or a description list)."""
    return "text" not in row and (any(k in row for k in RAW_FIELDS) or isinstance(row.get("description"), list))


def curate(row: dict, config: CurationConfig | None = None, *, source: str | None = None) -> Item:
    """One row (raw Amazon metadata or curated title/text/price) as an Item; SkipRow if rejected."""
    config = config or CurationConfig()
    if not isinstance(row, dict):
        raise SkipRow("not an object")
    price = check_price(parse_price(row.get("price")), config)
    item = _curate_raw(row, price, config, source) if is_raw_row(row) else _curate_listing(row, price, source)
    try:
        (item.title + item.text + (item.category or "")).encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate from a JSON \ud800 escape: no UTF-8 file could hold it
        raise SkipRow("invalid unicode") from None
    return item


def _category(row: dict) -> str | None:
    value = row.get("category") or row.get("main_category")
    return value if isinstance(value, str) and value.strip() and value != "None" else None


def _lines(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)]


def _curate_raw(row: dict, price: float, config: CurationConfig, source: str | None) -> Item:
    title = row.get("title")
    if not isinstance(title, str) or not title.strip():
        raise SkipRow("missing title")
    contents = "\n".join(_lines(row.get("description")))
    if contents:
        contents += "\n"
    features = "\n".join(_lines(row.get("features")))
    if features:
        contents += features + "\n"
    details = row.get("details")
    if isinstance(details, dict):
        # The hub's metadata holds details as a JSON string; the removals are written for that form.
        details = json.dumps(details, ensure_ascii=False)
    if details:
        contents += scrub_details(str(details), config.removals) + "\n"
    if len(contents) <= config.min_chars:
        raise SkipRow("too short")
    contents = contents[: config.ceiling_chars]
    n = config.part_number_len
    text = f"{scrub(title, n)}\n{scrub(contents, n)}"
    return Item(title=title.strip(), text=text, price=price, category=_category(row), source=source)


def _unwrap_prompt(text: str) -> str:
    """The item text inside a full course prompt (the course's HF datasets store prompts as `text`)."""
    head = QUESTION + "\n\n"
    if text.startswith(head):
        text = text[len(head):]
        cut = text.rfind("\n\n" + PREFIX)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


def _letters(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def holds_title(text: str, title: str) -> bool:
    """Whether `text`'s first line already is `title` (as given or course-cleaned; see the module docstring)."""
    first = text.split("\n", 1)[0]
    label = _TITLE_LABEL.match(first)
    first = _letters(first[label.end():] if label else first)
    cleaned = _letters(scrub(title))
    return not cleaned or first in (_letters(title), cleaned)


def listing_text(title: object, body: object) -> str:
    """What the model reads of a listing: its title on the first line, then its body (module docstring)."""
    body = _line_ends(body) if isinstance(body, str) else ""
    title = one_line(title) if isinstance(title, str) else ""
    if not title or (body.strip() and holds_title(_unwrap_prompt(body), title)):
        return _unwrap_prompt(body)
    return _unwrap_prompt(f"{title}\n{body}")   # as if typed whole: the body's own leading blanks stay


def one_line(title: str) -> str:
    """A title with its line breaks as spaces and its ends stripped."""
    return " ".join(part.strip() for part in _line_ends(title).split("\n") if part.strip())


def _line_ends(text: str) -> str:
    # Spreadsheet exports keep CRLF inside quoted cells; the same listing typed or piped has "\n".
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _curate_listing(row: dict, price: float, source: str | None) -> Item:
    body = row.get("text") if "text" in row else row.get("description")
    title = row.get("title") if isinstance(row.get("title"), str) else ""
    if "text" not in row and not title.strip():
        raise SkipRow("missing title")
    if not isinstance(body, str) or not _unwrap_prompt(body):
        raise SkipRow("empty text")
    text = listing_text(title, body)
    return Item(title=one_line(title) or text.split("\n", 1)[0].strip(), text=text, price=price,
                category=_category(row), source=source)
