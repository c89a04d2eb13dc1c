"""What the small bench commands share: print what they measured, line by line, or one `error: ...` line."""
from __future__ import annotations

import sys
from typing import Iterable


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
