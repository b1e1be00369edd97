"""JSON from untrusted bytes: bounded nesting and integers, no duplicate keys, one error class.

``json.loads`` alone raises ``RecursionError`` on deep nesting, ``ValueError`` on a 5000-digit
integer and keeps the last of two duplicate keys; every reader of attacker files (safetensors
headers, OMS bundles) goes through :func:`loads_untrusted` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from assay.core.errors import AssayError

MAX_DEPTH = 64
MAX_INT_DIGITS = 40

_TOKENS = re.compile(rb'[\[{"\]}]')


def _depth_ok(data: bytes, max_depth: int) -> bool:
    """Whether brackets outside strings nest at most ``max_depth`` deep (linear scan)."""
    depth = 0
    i = 0
    n = len(data)
    search = _TOKENS.search
    while i < n:
        m = search(data, i)
        if m is None:
            return True
        c = data[m.start()]
        if c == 0x22:  # a string: skip to its closing quote, past escapes
            j = m.start() + 1
            while True:
                k = data.find(b'"', j)
                if k < 0:
                    return True  # unterminated: json reports it
                backslashes = 0
                while data[k - 1 - backslashes] == 0x5C:
                    backslashes += 1
                if backslashes % 2 == 0:
                    break
                j = k + 1
            i = k + 1
            continue
        if c in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return False
        else:
            depth -= 1
        i = m.start() + 1
    return True


def loads_untrusted(
    data: bytes | str,
    *,
    what: str,
    error: type[AssayError],
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
) -> Any:
    """Parse JSON text from an attacker; any problem raises ``error`` with a one-line message."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not _depth_ok(raw, max_depth):
        raise error(f"{what} nests deeper than {max_depth} levels")

    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > max_int_digits:
            raise error(f"{what} holds an integer of {len(text)} digits")
        return int(text)

    def parse_constant(name: str) -> Any:
        raise error(f"{what} holds {name}, which is not JSON")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            dup = next(k for k, _ in items if k in seen or seen.add(k))
            raise error(f"{what} has the key {dup[:60]!r} twice")
        return out

    try:
        text = raw.decode("utf-8")
        return json.loads(
            text, parse_int=parse_int, parse_constant=parse_constant, object_pairs_hook=pairs
        )
    except AssayError:
        raise
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text") from exc
    except RecursionError as exc:
        raise error(f"{what} nests too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and friends
        raise error(f"{what} is not valid JSON: {str(exc)[:100]}") from exc
