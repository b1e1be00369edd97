"""Streaming, parallel SHA-256 of files.

Files are read into one fixed, reusable buffer per worker thread (never a whole file in memory) and
hashed with :mod:`hashlib`, which releases the GIL on large updates, so a thread pool hashes several
files on several cores at once. A single file is hashed in the calling thread.

``progress`` callbacks receive the running total of bytes hashed across all files (monotonic; the
callback is called under a lock, so it needs no locking of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from assay.core.errors import AssayError, NotFoundError

__all__ = [
    "BUFFER_SIZE",
    "FileDigest",
    "ProgressCallback",
    "hash_bytes",
    "hash_file",
    "hash_files",
]

log = logging.getLogger(__name__)

#: Read size. 1 MiB measured as fast as 4-8 MiB from page cache and keeps RSS flat.
BUFFER_SIZE = 1 << 20

SUPPORTED_HASHES = frozenset({"sha256"})

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class FileDigest:
    """The digest of one file's contents."""

    path: Path
    digest: str  # lowercase hex
    size: int


class _Progress:
    """Thread-safe running total forwarded to the user's callback."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._done = 0

    def add(self, n: int) -> None:
        if self._callback is None or n <= 0:
            return
        with self._lock:
            self._done += n
            self._callback(self._done)


_local = threading.local()


def _buffer() -> bytearray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(BUFFER_SIZE)
    return buf


def _new_hasher(algorithm: str):
    if algorithm not in SUPPORTED_HASHES:
        raise AssayError(f"unsupported hash type {algorithm!r} (assay supports sha256)")
    return hashlib.new(algorithm)


def hash_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """Hex digest of an in-memory byte string."""
    h = _new_hasher(algorithm)
    h.update(data)
    return h.hexdigest()


def _read_error(path: Path, exc: OSError) -> AssayError:
    reason = exc.strerror or exc.__class__.__name__
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"cannot read {path}: file not found")
    return AssayError(f"cannot read {path}: {reason}")


def _hash_one(path: Path, algorithm: str, progress: _Progress) -> FileDigest:
    h = _new_hasher(algorithm)
    buf = _buffer()
    view = memoryview(buf)
    size = 0
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):  # not supported on some filesystems
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
                size += n
                progress.add(n)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    finally:
        view.release()
        os.close(fd)
    return FileDigest(path=path, digest=h.hexdigest(), size=size)


def hash_file(
    path: str | os.PathLike[str],
    *,
    algorithm: str = "sha256",
    progress: ProgressCallback | None = None,
) -> FileDigest:
    """Hash one file in the calling thread, streaming through a fixed buffer."""
    return _hash_one(Path(path), algorithm, _Progress(progress))


def default_workers() -> int:
    return os.cpu_count() or 1


def hash_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    algorithm: str = "sha256",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    sizes: Sequence[int] | None = None,
) -> list[FileDigest]:
    """Hash many files in parallel; results come back in the order of ``paths``.

    ``sizes`` (optional, same order) lets the largest files start first for better load balance.
    The first read error stops the work and is raised as an :class:`AssayError`.
    """
    items = [Path(p) for p in paths]
    _new_hasher(algorithm)  # fail fast on an unsupported algorithm
    tracker = _Progress(progress)
    n_workers = max(1, min(workers or default_workers(), len(items) or 1))
    if n_workers == 1 or len(items) <= 1:
        return [_hash_one(p, algorithm, tracker) for p in items]

    order = list(range(len(items)))
    if sizes is not None:
        order.sort(key=lambda i: -sizes[i])
    results: list[FileDigest | None] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="assay-hash") as pool:
        futures = {i: pool.submit(_hash_one, items[i], algorithm, tracker) for i in order}
        try:
            for i in order:
                results[i] = futures[i].result()
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
    return [r for r in results if r is not None]
