"""OMS shard serialization: how files split into shards, how shards are named, and checks.

model_signing 1.1.1 (``use_shard_serialization``) splits every non-empty file into consecutive
shards of ``shard_size`` bytes (the last one shorter), names each ``"<path>:<start>:<end>"``,
records the algorithm of each as ``"<hash_type>-sharded-<shard_size>"`` and leaves empty files out.
Resources are ordered by (path components, start, end).

A bundle's shard list is checked before any byte is hashed: every name parses, every shard is
at most ``shard_size`` long, and each file's shards tile it from 0 exactly as the splitter would.
Anything else can never verify and is refused as a corrupt bundle (exit 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from assay.core.errors import IntegrityError

__all__ = [
    "MAX_SHARD_SIZE",
    "Shard",
    "check_shard_layout",
    "parse_shard_name",
    "shard_algorithm",
    "shard_bounds",
    "shard_sort_key",
]

#: The largest shard size accepted (2**53: exact in the JSON floats model_signing writes).
MAX_SHARD_SIZE = 1 << 53


@dataclass(frozen=True)
class Shard:
    """One shard: the file's POSIX path relative to the model root and its byte range."""

    path: str
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.path}:{self.start}:{self.end}"

    def index(self, shard_size: int) -> int:
        return self.start // shard_size


def shard_algorithm(hash_type: str, shard_size: int) -> str:
    """The per-resource algorithm name model_signing records for a shard."""
    return f"{hash_type}-sharded-{shard_size}"


def shard_bounds(size: int, shard_size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each shard of a ``size``-byte file (none for an empty file)."""
    if shard_size <= 0:
        raise ValueError("shard size must be positive")
    for start in range(0, size, shard_size):
        yield start, min(start + shard_size, size)


def shard_sort_key(shard: Shard) -> tuple[tuple[str, ...], int, int]:
    """OMS order: path components, then offsets."""
    return (tuple(shard.path.split("/")), shard.start, shard.end)


def _offset(text: str, name: str) -> int:
    bad = not text.isascii() or not text.isdigit() or len(text) > 17
    if bad or (len(text) > 1 and text[0] == "0"):
        raise IntegrityError(f"corrupt signature bundle: shard {name!r} has a bad offset")
    return int(text)


def parse_shard_name(name: str) -> Shard:
    """Parse ``"<path>:<start>:<end>"`` (the path may itself hold colons)."""
    path, sep1, rest = name.rpartition(":")
    path, sep2, start_text = path.rpartition(":")
    if not sep1 or not sep2 or not path:
        raise IntegrityError(
            f"corrupt signature bundle: resource {name!r} is not a shard (path:start:end); "
            "the bundle says its serialization is 'shards'"
        )
    start, end = _offset(start_text, name), _offset(rest, name)
    if end <= start:
        raise IntegrityError(f"corrupt signature bundle: shard {name!r} is empty or reversed")
    return Shard(path, start, end)


def check_shard_layout(shards: Iterable[Shard], shard_size: int) -> dict[str, int]:
    """Each file's signed size; raises unless every file's shards tile it as the splitter would."""
    by_file: dict[str, list[Shard]] = {}
    for s in shards:
        if s.end - s.start > shard_size:
            raise IntegrityError(
                f"corrupt signature bundle: shard {s.name!r} is longer than the shard size "
                f"{shard_size}"
            )
        by_file.setdefault(s.path, []).append(s)
    sizes: dict[str, int] = {}
    for path, parts in by_file.items():
        parts.sort(key=lambda s: s.start)
        size = parts[-1].end
        if len(parts) != -(-size // shard_size):
            raise IntegrityError(
                f"corrupt signature bundle: the shards of {path!r} do not split it into "
                f"{shard_size}-byte pieces"
            )
        expected = list(shard_bounds(size, shard_size))
        if [(s.start, s.end) for s in parts] != expected:
            raise IntegrityError(
                f"corrupt signature bundle: the shards of {path!r} do not split it into "
                f"{shard_size}-byte pieces"
            )
        sizes[path] = size
    return sizes
