"""What the small bench commands share: print what they measured, line by line, or one `error: ...` line."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable


def print_or_fail(lines: Iterable[str],
                  errors: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)) -> int:
    """Print each line as it is made; a user error (one of `errors`) prints `error: ...` instead and returns 2."""
    try:
        for line in lines:
            print(line, flush=True)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def write_result(out: str, name: str, result: dict[str, Any]) -> Path:
    """Write a bench's result as <out>/<name> (JSON, the folder made if needed); returns the path."""
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path
