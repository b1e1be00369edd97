"""Streaming, parallel file hashing: SHA-256, BLAKE2b and BLAKE3, of whole files or byte ranges.

SHA-256 and BLAKE2b read into one fixed, reusable buffer per worker thread (never a whole file in
memory) and hash with :mod:`hashlib`, which releases the GIL on large updates, so a thread pool
hashes several files (or shards of one file) on several cores at once. BLAKE3 (the ``blake3``
package, imported lazily) hashes memory-mapped windows of :data:`MMAP_WINDOW` bytes with its own
threads (``max_threads=AUTO``) for large inputs: no copy, and only one window mapped at a time.
(As with any mmap, a file truncated by another process while its window is mapped ends the
process with SIGBUS: it fails, never passes.)

A unit of work is a :class:`Span`: a file, or the byte range ``[start, end)`` of one (an OMS
shard). A range that runs past the end of its file fails naming the file and the range.

With ``fingerprint_seed`` every span is also fingerprinted (XXH3-128 with that seed, the
``xxhash`` package) in the same read: the digest cache uses fingerprints to tell whether the
shards of a changed file are really unchanged (:mod:`assay.integrity.digest_cache`).
:data:`FINGERPRINT` is an internal algorithm name, never one a bundle may name.

``progress`` callbacks receive the running total of bytes hashed across all files (monotonic; the
callback is called under a lock, so it needs no locking of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from assay.core.errors import AssayError, IntegrityError, NotFoundError

__all__ = [
    "BUFFER_SIZE",
    "FINGERPRINT",
    "FileDigest",
    "ProgressCallback",
    "HASH_TYPES",
    "Span",
    "TruncatedError",
    "digest_hex_length",
    "hash_bytes",
    "hash_file",
    "hash_files",
    "hash_spans",
]

log = logging.getLogger(__name__)

#: Read size. 1 MiB measured as fast as 4-8 MiB from page cache and keeps RSS flat.
BUFFER_SIZE = 1 << 20

#: The hash types OMS bundles name (model_signing 1.1.1), with their hex digest lengths.
HASH_TYPES: dict[str, int] = {"sha256": 64, "blake2b": 128, "blake3": 64}
SUPPORTED_HASHES = frozenset(HASH_TYPES)
#: BLAKE3 maps this much of a file at a time (bounded RSS; large enough for its threads).
MMAP_WINDOW = 16 << 20
#: Fast, seeded, non-cryptographic: tells an unchanged shard from a changed one (see above).
FINGERPRINT = "xxh3-128"
#: Hashed from memory-mapped windows (no copy, few GIL hand-overs): BLAKE3, and fingerprints,
#: which only signing computes alone (its own files; see the SIGBUS note above).
_MAPPED = frozenset({"blake3", FINGERPRINT})
#: Spans at least this long are hashed by BLAKE3 on every core, one after another.
BLAKE3_PARALLEL_MIN = 8 << 20

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class FileDigest:
    """The digest of one file's contents."""

    path: Path
    digest: str  # lowercase hex
    size: int
    fingerprint: str | None = None  # with ``fingerprint_seed``: XXH3-128 of the same bytes


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


class TruncatedError(IntegrityError):
    """A file ended before the byte range being hashed (exit 3)."""


def digest_hex_length(algorithm: str) -> int:
    """Hex length of ``algorithm``'s digests."""
    return HASH_TYPES[algorithm]


class _Both:
    """Feeds one read to the digest and to the fingerprint."""

    __slots__ = ("digest", "fingerprint")

    def __init__(self, digest, fingerprint) -> None:
        self.digest, self.fingerprint = digest, fingerprint

    def update(self, data) -> None:
        self.digest.update(data)
        self.fingerprint.update(data)


def _new_hasher(algorithm: str, threads: int = 1, seed: int = 0):
    if algorithm == FINGERPRINT:
        import xxhash

        return xxhash.xxh3_128(seed=seed)
    if algorithm not in SUPPORTED_HASHES:
        raise AssayError(
            f"unsupported hash type {algorithm!r} (assay supports {', '.join(HASH_TYPES)})"
        )
    if algorithm == "blake3":
        import blake3

        return blake3.blake3(max_threads=blake3.blake3.AUTO if threads != 1 else 1)
    return hashlib.new(algorithm)


@dataclass(frozen=True)
class Span:
    """A file, or the byte range ``[start, end)`` of it (``end`` None: to the end of the file)."""

    path: Path
    start: int = 0
    end: int | None = None

    def describe(self) -> str:
        return str(self.path) if self.end is None else f"{self.path} bytes {self.start}:{self.end}"


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


def _truncated(span: Span, size: int) -> TruncatedError:
    return TruncatedError(
        f"{span.path} is truncated: it ends at byte {size}, inside shard {span.start}:{span.end}"
    )


def _hash_mmap(fd: int, span: Span, size: int, h, progress: _Progress) -> None:
    """Feed ``[span.start, end)`` of ``fd`` to ``h`` one mapped window at a time."""
    end = size if span.end is None else span.end
    pos = span.start
    gran = mmap.ALLOCATIONGRANULARITY
    while pos < end:
        base = pos - pos % gran
        length = min(MMAP_WINDOW, end - base)
        with mmap.mmap(fd, length, offset=base, access=mmap.ACCESS_READ) as m:
            with contextlib.suppress(AttributeError, OSError):
                m.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(m)
            try:
                h.update(view[pos - base :])
            finally:
                view.release()
        progress.add(base + length - pos)
        pos = base + length


def _hash_read(fd: int, span: Span, h, progress: _Progress) -> int:
    """Feed ``span`` of ``fd`` to ``h`` through the thread's buffer; the bytes read."""
    buf = _buffer()
    view = memoryview(buf)
    remaining = None if span.end is None else span.end - span.start
    done = 0
    try:
        with open(fd, "rb", buffering=0, closefd=False) as f:
            if span.start:
                f.seek(span.start)
            while remaining is None or remaining > 0:
                want = BUFFER_SIZE if remaining is None else min(BUFFER_SIZE, remaining)
                n = f.readinto(view[:want])
                if not n:
                    break
                h.update(view[:n])
                done += n
                if remaining is not None:
                    remaining -= n
                progress.add(n)
    finally:
        view.release()
    return done


def _hash_span(
    span: Span,
    algorithm: str,
    progress: _Progress,
    threads: int = 1,
    seed: int | None = None,
) -> FileDigest:
    path = span.path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
        size = os.fstat(fd).st_size
        if span.end is not None and span.end > size:
            raise _truncated(span, size)
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):  # not supported on some filesystems
                os.posix_fadvise(fd, span.start, 0, os.POSIX_FADV_SEQUENTIAL)
        h = _new_hasher(algorithm, threads, seed or 0)
        alone = algorithm == FINGERPRINT  # the fingerprint is the digest
        fp = _new_hasher(FINGERPRINT, seed=seed) if seed is not None and not alone else None
        feed = h if fp is None else _Both(h, fp)
        if algorithm in _MAPPED and size:
            _hash_mmap(fd, span, size, feed, progress)
            done = (size if span.end is None else span.end) - span.start
        else:
            done = _hash_read(fd, span, feed, progress)
            if span.end is not None and done != span.end - span.start:
                raise _truncated(span, span.start + done)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    except (ValueError, BufferError) as exc:  # mmap of a file that shrank meanwhile
        raise TruncatedError(f"{path} changed while it was hashed: {exc}") from exc
    finally:
        os.close(fd)
    fingerprint = fp.hexdigest() if fp is not None else None
    return FileDigest(path=path, digest=h.hexdigest(), size=done, fingerprint=fingerprint)


def _hash_one(path: Path, algorithm: str, progress: _Progress) -> FileDigest:
    return _hash_span(Span(path), algorithm, progress)


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
    """Hash many whole files in parallel; results come back in the order of ``paths``.

    ``sizes`` (optional, same order) lets the largest files start first for better load balance.
    The first read error stops the work and is raised as an :class:`AssayError`.
    """
    spans = [Span(Path(p)) for p in paths]
    return hash_spans(spans, algorithm=algorithm, workers=workers, progress=progress, sizes=sizes)


def hash_spans(
    spans: Sequence[Span],
    *,
    algorithm: str = "sha256",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    sizes: Sequence[int] | None = None,
    fingerprint_seed: int | None = None,
) -> list[FileDigest]:
    """Hash files and byte ranges in parallel; results come back in the order of ``spans``.

    SHA-256 and BLAKE2b spans run on a pool of ``workers`` threads (largest first when ``sizes``
    is given). BLAKE3 spans of at least :data:`BLAKE3_PARALLEL_MIN` bytes are hashed one after
    another, each on every core; the smaller ones share the pool. The first error stops the work.
    ``fingerprint_seed`` also fingerprints each span in the same read (``FileDigest.fingerprint``);
    ``algorithm=FINGERPRINT`` (with a seed) computes fingerprints alone.
    """
    items = list(spans)
    _new_hasher(algorithm)  # fail fast on an unsupported algorithm
    tracker = _Progress(progress)
    results: list[FileDigest | None] = [None] * len(items)
    pooled = list(range(len(items)))
    if algorithm == "blake3" and sizes is not None:
        big = [i for i in pooled if sizes[i] >= BLAKE3_PARALLEL_MIN]
        pooled = [i for i in pooled if sizes[i] < BLAKE3_PARALLEL_MIN]
        for i in big:
            results[i] = _hash_span(items[i], algorithm, tracker, threads=0, seed=fingerprint_seed)
    n_workers = max(1, min(workers or default_workers(), len(pooled) or 1))
    if n_workers == 1 or len(pooled) <= 1:
        for i in pooled:
            results[i] = _hash_span(items[i], algorithm, tracker, seed=fingerprint_seed)
        return [r for r in results if r is not None]

    if sizes is not None:
        pooled.sort(key=lambda i: -sizes[i])
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="assay-hash") as pool:
        futures = {
            i: pool.submit(_hash_span, items[i], algorithm, tracker, 1, fingerprint_seed)
            for i in pooled
        }
        try:
            for i in pooled:
                results[i] = futures[i].result()
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
    return [r for r in results if r is not None]
