"""Manifests: every file (or shard) of a model paired with its digest, as OMS records them.

Two serializations, each with SHA-256, BLAKE2b or BLAKE3 (model_signing 1.1.1's modes):
``files`` pairs every file with its digest; ``shards`` splits every non-empty file into
``shard_size``-byte pieces (see :mod:`assay.integrity._shards`), hashed in parallel even within one
file, and pairs each piece with its digest.

A directory model lists every regular file (empty ones included) by its POSIX path relative to the
model root, sorted the way OMS sorts them (by path components). A single file as the model is
recorded as one resource named ``"."`` and the model is named after the file, as OMS v1.0+ does.

Ignored by default, at the root of a directory model, exactly as ``model_signing`` records them:
``.git``, ``.gitattributes``, ``.github``, ``.gitignore`` and the signature file ``model.sig``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.errors import AssayError, NotFoundError, UnsafeInputError
from assay.integrity._shards import (
    MAX_SHARD_SIZE,
    Shard,
    shard_algorithm,
    shard_bounds,
    shard_sort_key,
)
from assay.integrity.hashing import FINGERPRINT, HASH_TYPES, ProgressCallback, Span, hash_spans

if TYPE_CHECKING:
    from assay.integrity.digest_cache import DigestCache

__all__ = [
    "DEFAULT_IGNORE_PATHS",
    "GIT_IGNORE_PATHS",
    "SIGNATURE_FILE_NAME",
    "Manifest",
    "ResourceDigest",
    "Serialization",
    "MAX_RESOURCES",
    "build_manifest",
    "compute_root_digest",
    "default_signature_path",
    "inner_ignores",
    "oms_sort_key",
]

log = logging.getLogger(__name__)

GIT_IGNORE_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")
SIGNATURE_FILE_NAME = "model.sig"
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (*GIT_IGNORE_PATHS, SIGNATURE_FILE_NAME)
#: The most shards one manifest may list (a bundle of at most 16 MiB holds about 100k resources).
MAX_RESOURCES = 100_000


@dataclass(frozen=True)
class ResourceDigest:
    """One file of a model: POSIX path relative to the root, hex digest, size (None if unknown)."""

    name: str
    digest: str
    size: int | None = None


@dataclass(frozen=True)
class Serialization:
    """How a manifest was built; recorded in the signature so verification repeats it exactly."""

    method: str = "files"
    hash_type: str = "sha256"
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = ()
    shard_size: int | None = None  # set exactly when method is "shards"

    @classmethod
    def of(cls, hash_type: str = "sha256", shard_size: int | None = None, **kw) -> Serialization:
        """A checked serialization: ``shard_size`` None means files, else shards of that size."""
        if hash_type not in HASH_TYPES:
            raise AssayError(
                f"unsupported hash type {hash_type!r} (use one of {', '.join(HASH_TYPES)})"
            )
        if shard_size is not None and not 1 <= shard_size <= MAX_SHARD_SIZE:
            raise AssayError(f"shard size must be between 1 and {MAX_SHARD_SIZE} bytes")
        method = "files" if shard_size is None else "shards"
        return cls(method=method, hash_type=hash_type, shard_size=shard_size, **kw)

    @property
    def mode(self) -> str:
        """``sha256``, ``blake3``, ``sha256/shards:1000000000``, ... (for messages)."""
        return (
            self.hash_type
            if self.shard_size is None
            else f"{self.hash_type}/shards:{self.shard_size}"
        )

    @property
    def resource_algorithm(self) -> str:
        """The ``algorithm`` every resource records under this serialization."""
        if self.shard_size is None:
            return self.hash_type
        return shard_algorithm(self.hash_type, self.shard_size)

    def to_dict(self) -> dict:
        """The ``predicate.serialization`` object as OMS writes it."""
        out: dict = {"method": self.method, "hash_type": self.hash_type}
        if self.shard_size is not None:
            out["shard_size"] = self.shard_size
        out["allow_symlinks"] = self.allow_symlinks
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out


def oms_sort_key(name: str) -> tuple[str, ...]:
    """OMS sorts resources as ``PurePosixPath`` objects: by their components."""
    return tuple(name.split("/"))


def compute_root_digest(resources: Iterable[ResourceDigest]) -> str:
    """SHA-256 over the concatenated raw resource digests, in listed order (OMS subject digest)."""
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r.digest))
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A model's files and digests, plus how they were computed."""

    model_name: str
    resources: tuple[ResourceDigest, ...]
    serialization: Serialization = field(default_factory=Serialization)
    #: Every file walked, with its size (shards of files skipped for their size are absent).
    file_sizes: tuple[tuple[str, int], ...] = ()

    @property
    def root_digest(self) -> str:
        return compute_root_digest(self.resources)

    @property
    def total_size(self) -> int:
        return sum(r.size or 0 for r in self.resources)

    @property
    def file_count(self) -> int:
        return len(self.file_sizes) if self.file_sizes else len(self.resources)

    def digests(self) -> dict[str, str]:
        """Resource name -> hex digest."""
        return {r.name: r.digest for r in self.resources}

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "root_digest": self.root_digest,
            "serialization": self.serialization.to_dict(),
            "resources": [
                {"name": r.name, "digest": r.digest, "size": r.size} for r in self.resources
            ],
        }


def default_signature_path(path: Path) -> Path:
    """``PATH/model.sig`` for a folder, ``PATH.sig`` beside a single file (as OMS tools do)."""
    return path / SIGNATURE_FILE_NAME if path.is_dir() else path.with_name(path.name + ".sig")


def inner_ignores(path: Path, signature: Path) -> list[str]:
    """The signature file, when it sits inside the signed folder under another name."""
    if not path.is_dir():
        return []
    try:
        rel = signature.resolve().relative_to(path.resolve())
    except ValueError:
        return []
    return [] if rel.as_posix() == SIGNATURE_FILE_NAME else [rel.as_posix()]


def _normalise_ignores(root: Path, ignore_paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Ignore paths as POSIX paths relative to ``root``; absolute ones outside it are dropped."""
    out: list[str] = []
    real_root = Path(os.path.abspath(root))
    for p in ignore_paths:
        pp = Path(p)
        if pp.is_absolute():
            try:
                rel = Path(os.path.abspath(pp)).relative_to(real_root)
            except ValueError:
                continue
        else:
            rel = pp
        parts = [x for x in rel.as_posix().split("/") if x not in ("", ".")]
        if not parts or ".." in parts:
            continue
        out.append("/".join(parts))
    return out


def _is_ignored(rel_parts: tuple[str, ...], ignores: list[tuple[str, ...]]) -> bool:
    return any(rel_parts[: len(ig)] == ig for ig in ignores)


def _walk(
    root: Path,
    real_root: str,
    ignores: list[tuple[str, ...]],
    allow_symlinks: bool,
) -> list[tuple[str, Path, os.stat_result]]:
    """(posix name, path, stat) of every regular file under ``root`` that is not ignored."""
    found: list[tuple[str, Path, os.stat_result]] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            raise AssayError(f"cannot list {directory}: {exc.strerror or exc}") from exc
        for entry in entries:
            parts = (*prefix, entry.name)
            if _is_ignored(parts, ignores):
                continue
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise AssayError(f"cannot read {path}: {exc.strerror or exc}") from exc
            if stat.S_ISLNK(st.st_mode):
                if not allow_symlinks:
                    raise UnsafeInputError(
                        f"{path} is a symbolic link; symlinks are refused unless allowed"
                    )
                target = os.path.realpath(path)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise UnsafeInputError(f"{path} is a symbolic link that points outside {root}")
                try:
                    st = os.stat(path)
                except OSError as exc:
                    raise AssayError(f"{path} is a broken symbolic link") from exc
                if stat.S_ISDIR(st.st_mode):
                    # OMS does not descend into linked directories; neither do we.
                    continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((path, parts))
            elif stat.S_ISREG(st.st_mode):
                found.append(("/".join(parts), path, st))
            else:
                raise UnsafeInputError(f"{path} is not a regular file or directory")
    return found


def build_manifest(
    path: str | os.PathLike[str],
    *,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    allow_symlinks: bool = False,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cache: DigestCache | None = None,
    default_ignores: bool = True,
    hash_type: str = "sha256",
    shard_size: int | None = None,
    signed_sizes: dict[str, int] | None = None,
    fingerprints: bool = False,
) -> Manifest:
    """Hash every file of the model at ``path`` (a directory or a single file).

    ``ignore_paths`` are relative to the model root (absolute paths inside it work too).
    With ``default_ignores`` (the default) the OMS defaults (git files, ``model.sig``) are added;
    verification turns it off and passes the paths recorded in the signature instead.
    ``cache`` (a :class:`~assay.integrity.digest_cache.DigestCache`) reuses digests of unchanged
    files (or shards); it is saved at the end. With ``fingerprints`` (signing, never
    verification) the cache also keeps a fingerprint of each digest's bytes, and the unchanged
    shards of a changed file keep their digests after a re-read of their fingerprints alone.
    ``hash_type`` and ``shard_size`` choose the
    serialization (see :meth:`Serialization.of`). ``signed_sizes`` (verification of shards) maps
    each signed file to its signed size: a file of another size, or not signed, is walked but not
    hashed, so the work is bounded by the bundle's own shard list.
    """
    template = Serialization.of(hash_type, shard_size)
    root = Path(path)
    try:
        root_st = os.lstat(root)
    except FileNotFoundError as exc:
        raise NotFoundError(f"model path {root} does not exist") from exc
    except OSError as exc:
        raise AssayError(f"cannot read {root}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(root_st.st_mode):
        if not allow_symlinks:
            raise UnsafeInputError(
                f"{root} is a symbolic link; symlinks are refused unless allowed"
            )
        root_st = os.stat(root)

    model_name = root.name
    if not model_name or model_name == "..":
        model_name = Path(os.path.abspath(root)).name

    if stat.S_ISREG(root_st.st_mode):
        # A single file is the model: one resource named "." (OMS v1.0.0 and later).
        extra = sorted(set(_normalise_ignores(root, ignore_paths)))
        recorded = sorted(set(GIT_IGNORE_PATHS) | set(extra)) if default_ignores else extra
        files = [(".", root, root_st)]
    elif stat.S_ISDIR(root_st.st_mode):
        extra = _normalise_ignores(root, ignore_paths)
        recorded = (
            sorted(set(DEFAULT_IGNORE_PATHS) | set(extra))
            if default_ignores
            else sorted(set(extra))
        )
        ignores = [tuple(p.split("/")) for p in recorded]
        real_root = os.path.realpath(root)
        files = _walk(root, real_root, ignores, allow_symlinks)
    else:
        raise UnsafeInputError(f"{root} is not a regular file or directory")

    serialization = Serialization(
        method=template.method,
        hash_type=template.hash_type,
        allow_symlinks=allow_symlinks,
        ignore_paths=tuple(recorded),
        shard_size=template.shard_size,
    )
    units = _units(files, serialization, signed_sizes)
    algorithm = serialization.resource_algorithm
    digests: dict[str, tuple[str, int]] = {}
    to_hash: list[tuple[str, Span, os.stat_result, str]] = []
    to_confirm: list[tuple[str, Span, os.stat_result, str, tuple[str, str]]] = []
    for name, span, st, part, *_ in units:
        hit = (
            cache.lookup(span.path, st, algorithm=algorithm, part=part)
            if cache is not None
            else None
        )
        stale = (
            cache.stale(span.path, st, algorithm=algorithm, part=part)
            if cache is not None and fingerprints and hit is None
            else None
        )
        if hit is not None:
            digests[name] = (hit, _span_size(span, st))
        elif stale is not None:
            to_confirm.append((name, span, st, part, stale))
        else:
            to_hash.append((name, span, st, part))
    seed = cache.seed if cache is not None and fingerprints else None
    if to_confirm:
        assert cache is not None and seed is not None
        reread = hash_spans(
            [span for _, span, _, _, _ in to_confirm],
            algorithm=FINGERPRINT,
            workers=workers,
            sizes=[_span_size(span, st) for _, span, st, _, _ in to_confirm],
            fingerprint_seed=seed,
        )
        for (name, span, st, part, (digest, fp)), res in zip(to_confirm, reread, strict=True):
            if res.digest == fp and res.size == _span_size(span, st):
                digests[name] = (digest, res.size)
                cache.confirmed += 1
                cache.store(span.path, st, digest, algorithm=algorithm, part=part, fingerprint=fp)
            else:
                to_hash.append((name, span, st, part))

    results = hash_spans(
        [span for _, span, _, _ in to_hash],
        algorithm=serialization.hash_type,
        workers=workers,
        progress=progress,
        sizes=[_span_size(span, st) for _, span, st, _ in to_hash],
        fingerprint_seed=seed,
    )
    for (name, span, st, part), res in zip(to_hash, results, strict=True):
        digests[name] = (res.digest, res.size)
        if cache is not None:
            cache.store(
                span.path,
                st,
                res.digest,
                algorithm=algorithm,
                part=part,
                fingerprint=res.fingerprint,
            )
    if cache is not None:
        cache.save()

    order = {name: key for name, key in ((u[0], _unit_sort_key(u, serialization)) for u in units)}
    resources = tuple(
        ResourceDigest(name=name, digest=digests[name][0], size=digests[name][1])
        for name in sorted(digests, key=order.__getitem__)
    )
    log.debug("manifest of %s: %d resources (%d hashed)", root, len(resources), len(to_hash))
    return Manifest(
        model_name=model_name,
        resources=resources,
        serialization=serialization,
        file_sizes=tuple((name, st.st_size) for name, _, st in files),
    )


def _span_size(span: Span, st: os.stat_result) -> int:
    return (st.st_size if span.end is None else span.end) - span.start


def _unit_sort_key(unit: tuple, serialization: Serialization) -> tuple:
    name, span = unit[0], unit[1]
    if serialization.shard_size is None:
        return (oms_sort_key(name),)
    return shard_sort_key(Shard(unit[4], span.start, span.end or 0))


def _units(
    files: list[tuple[str, Path, os.stat_result]],
    serialization: Serialization,
    signed_sizes: dict[str, int] | None,
) -> list[tuple]:
    """(resource name, span, stat, cache part[, file name]) of everything to digest."""
    shard_size = serialization.shard_size
    if shard_size is None:
        return [(name, Span(path), st, "") for name, path, st in files]
    units: list[tuple] = []
    for name, path, st in files:
        if signed_sizes is not None and signed_sizes.get(name) != st.st_size:
            continue
        if len(units) + -(-st.st_size // shard_size) > MAX_RESOURCES:
            raise AssayError(
                f"shards of {shard_size} bytes would list over {MAX_RESOURCES} resources; "
                "use a larger --shard-size"
            )
        for start, end in shard_bounds(st.st_size, shard_size):
            shard = Shard(name, start, end)
            units.append((shard.name, Span(path, start, end), st, f"{shard_size}:{start}", name))
    return units
