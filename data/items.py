"""The unit of data: one product listing with its price."""
from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """A data source or row that pricer cannot use; the message says which and why."""


@dataclass
class Item:
    """A curated listing: `text` is what the model reads (title on its first line), `price` in USD."""

    title: str
    text: str
    price: float
    category: str | None = None
    source: str | None = None
