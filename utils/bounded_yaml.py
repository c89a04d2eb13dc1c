"""YAML from user-supplied files, bounded: a config is small, and a few lines of aliases must not expand to billions.

PyYAML's safe loader shares the object an alias names, so an alias bomb ("billion laughs": ten
lists of ten aliases to the list before) loads in microseconds, but whoever walks the result
(the config parser coercing every list item, a str() in an error message) walks 10^9 items.
`load_yaml` counts the nodes the document stands for, each alias counted as all it expands to,
and refuses more than MAX_NODES; `read_yaml` also refuses files over MAX_BYTES before parsing.
Refusals are `YAMLRefused`, a yaml.YAMLError (and a ValueError), so callers' existing handlers
for malformed YAML catch them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_NODES = 100_000   # every pricer config holds under 200


class YAMLRefused(yaml.YAMLError, ValueError):
    """YAML refused for its size, its alias expansion or its nesting; the message says which."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes `root` stands for with every alias expanded; stops counting past `limit`."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise YAMLRefused("a YAML alias refers to a node that contains it (a recursive alias)")
        open_nodes.add(id(node))
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else
                    node.value if isinstance(node, yaml.SequenceNode) else [])
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break   # already too many: the exact count does not matter
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


class _BoundedLoader(yaml.SafeLoader):
    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        if node is not None and _expanded_size(node, MAX_NODES) > MAX_NODES:
            raise YAMLRefused(f"its aliases expand to more than {MAX_NODES:,} values (a YAML alias bomb?); "
                              "write the values out without & and * aliases")
        return node


def load_yaml(text: str | bytes) -> Any:
    """yaml.safe_load of `text`, refusing (YAMLRefused) documents whose aliases expand past MAX_NODES values."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise YAMLRefused("it is nested too deeply to be a config") from None


def read_yaml(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Any:
    """The YAML document in file `path` (UTF-8), refusing files over `max_bytes` and alias bombs (YAMLRefused).

    OSError when the file cannot be read, UnicodeDecodeError when it is not UTF-8.
    """
    with Path(path).open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YAMLRefused(f"it is larger than {max_bytes:,} bytes, more than any config")
    return load_yaml(data.decode("utf-8"))
