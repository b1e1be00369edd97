"""``model.safetensors.index.json``: the shard map of a sharded safetensors checkpoint.

The index is attacker input like the shards: it is size-bounded, parsed by ``loads_untrusted``,
must map every tensor name to one shard file, and a shard is a plain file name in the index's own
folder (no separators, no ``..``, no hidden names, no symlinks): nothing outside the folder is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.core.errors import FormatError
from assay.core.safe_json import loads_untrusted
from assay.watermark.formats._common import Limits, brief

INDEX_NAME = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"
#: distinct shard files one index may name
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class ShardIndex:
    """Tensor name -> shard file, in index order, and the shard files in first-use order."""

    path: Path
    weight_map: dict[str, str]
    shards: tuple[str, ...]


def _check_shard_name(name: object, where: Path) -> str:
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}: a shard file name is not a non-empty string")
    bad = (
        "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or not name.endswith(".safetensors")
        or len(name) > 255
    )
    if bad:
        raise FormatError(
            f"{where}: shard {brief(name)} is not a plain .safetensors file name in its folder"
        )
    return name


def parse_index(raw: bytes, where: Path, limits: Limits) -> ShardIndex:
    """Parse and check the bytes of an index file (no file system access)."""
    if len(raw) > limits.max_header_bytes:
        raise FormatError(
            f"{where} is {len(raw)} bytes, over the limit of {limits.max_header_bytes}"
        )
    data = loads_untrusted(raw, what=str(where), error=FormatError)
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise FormatError(f"{where} has no weight_map object")
    weight_map = data["weight_map"]
    if not weight_map:
        raise FormatError(f"{where}: weight_map is empty")
    if len(weight_map) > limits.max_tensors:
        raise FormatError(
            f"{where} maps {len(weight_map)} tensors, over the limit of {limits.max_tensors}"
        )
    shards: dict[str, None] = {}
    out: dict[str, str] = {}
    for name, shard in weight_map.items():
        if len(name) > limits.max_name_chars:
            raise FormatError(f"{where}: tensor name {brief(name)} is too long")
        shard = _check_shard_name(shard, where)
        if shard not in shards and len(shards) >= MAX_SHARDS:
            raise FormatError(f"{where} names over {MAX_SHARDS} shard files")
        shards[shard] = None
        out[name] = shard
    return ShardIndex(where, out, tuple(shards))


def read_index(path: Path, limits: Limits) -> ShardIndex:
    """Read the index at ``path``; every shard it names must be a regular file beside it."""
    if path.is_symlink() or not path.is_file():
        raise FormatError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > limits.max_header_bytes:
        raise FormatError(f"{path} is {size} bytes, over the limit of {limits.max_header_bytes}")
    index = parse_index(path.read_bytes(), path, limits)
    folder = path.parent
    for shard in index.shards:
        p = folder / shard
        if p.is_symlink() or not p.is_file():
            raise FormatError(f"{path}: shard {brief(shard)} is not a regular file in {folder}")
    return index


def find_index(folder: Path) -> Path | None:
    """The shard index of a model folder: ``model.safetensors.index.json``, else one ``*`` + suffix."""
    exact = folder / INDEX_NAME
    if exact.exists() or exact.is_symlink():
        return exact
    found = sorted(p for p in folder.glob(f"*{INDEX_SUFFIX}") if not p.name.startswith("."))
    if len(found) > 1:
        raise FormatError(f"{folder} holds {len(found)} safetensors index files; name one")
    return found[0] if found else None
