"""OpenAI fine-tuning chat JSONL, as the course wrote it for its frontier-model run.

Each line: {"messages": [system, user, assistant]} with the user turn the course's
`messages_for` text (the test prompt without " to the nearest dollar" and without
"Price is $") and the assistant turn "Price is $X.XX" with the exact price.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from data.items import DataError, Item
from data.prompts import PREFIX, QUESTION

SYSTEM = "You estimate prices of items."
_ANSWER = re.compile(r"Price is \$\d+\.\d\d")


def messages_for(item: Item, system: str = SYSTEM) -> list[dict[str, str]]:
    """System, user (question + text) and assistant ("Price is $X.XX") messages for one item."""
    question = QUESTION.replace(" to the nearest dollar", "")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"{question}\n\n{item.text.strip()}"},
        {"role": "assistant", "content": f"{PREFIX}{item.price:.2f}"},
    ]


def check_line(line: str) -> list[dict[str, str]]:
    """The messages of one JSONL line, or DataError when it is not a valid fine-tuning example."""
    try:
        messages = json.loads(line)["messages"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"not a chat example ({e})") from None
    roles = [m.get("role") for m in messages] if isinstance(messages, list) else None
    if roles != ["system", "user", "assistant"] or not all(isinstance(m.get("content"), str) for m in messages):
        raise DataError(f"messages must be system, user, assistant with string contents, got roles {roles}")
    if not _ANSWER.fullmatch(messages[2]["content"]):
        raise DataError(f"assistant answer {messages[2]['content']!r} is not 'Price is $X.XX'")
    return messages


def write_chat_jsonl(items: list[Item], path: str | Path, system: str = SYSTEM) -> int:
    """Write one chat example per item (atomically), each line checked by parsing it back; returns the count."""
    path = Path(path)
    lines = []
    for item in items:
        messages = messages_for(item, system)
        line = json.dumps({"messages": messages}, ensure_ascii=False)
        if check_line(line) != messages:
            raise DataError(f"line for {item.title!r} does not parse back to its messages")
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" if lines else "", encoding="utf-8")
    os.replace(tmp, path)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m data.export SOURCE OUT.jsonl [--split test] [--limit N]."""
    from data.sources import load_items
    from data.splits import sample, split_items

    parser = argparse.ArgumentParser(prog="python -m data.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="file, folder or saved dataset (see data.load_items)")
    parser.add_argument("out", help="output .jsonl")
    parser.add_argument("--split", choices=["all", "train", "val", "test"], default="train")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit", type=int, help="at most this many examples (a hash sample)")
    parser.add_argument("--system", default=SYSTEM)
    args = parser.parse_args(argv)
    try:
        items = load_items(args.source)
        if args.split != "all":
            items = getattr(split_items(items, seed=args.seed), args.split)
        if args.limit is not None:
            items = sample(items, args.limit, seed=args.seed)
        n = write_chat_jsonl(items, args.out, args.system)
    except (DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n:,} examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
