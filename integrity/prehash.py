"""Start hashing a model before the store opens (``assay sign``).

Opening the store (SQLAlchemy, migrations check, policy) takes about half a second; hashing does
not need it. :func:`start_manifest` builds the manifest on a daemon thread while the caller opens
the store; ``sign_path`` then takes the result if it was built with the serialization it wants
and builds a new one otherwise. This module imports no SQLAlchemy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assay.integrity.manifest import Manifest, build_manifest

if TYPE_CHECKING:
    from assay.integrity.digest_cache import DigestCache
    from assay.integrity.hashing import ProgressCallback

__all__ = ["Prehash", "check_mode", "requested_mode", "start_manifest"]


def check_mode(hash_type: str, shard_size: int | None) -> None:
    """Refuse a signing mode assay does not write (BLAKE3 shards: model_signing 1.1.1 cannot
    verify them, and BLAKE3 already hashes one file on every core)."""
    from assay.core.errors import ConfigError
    from assay.integrity.manifest import Serialization

    if hash_type == "blake3" and shard_size is not None:
        raise ConfigError(
            "--shard-size does not apply to blake3: BLAKE3 hashes each file on every core, and "
            "model_signing 1.1.1 signs and verifies blake3 only as files"
        )
    try:
        Serialization.of(hash_type, shard_size)
    except ConfigError:
        raise
    except Exception as exc:  # AssayError with a one-line message
        raise ConfigError(str(exc)) from exc


def requested_mode(hash_type: str | None, shard_size: int | None) -> tuple[str, int | None] | None:
    """The mode the flags ask for (``--shard-size`` alone means sha256 shards), or None when
    neither flag is given and the policy's ``signing:`` default applies."""
    if hash_type is None and shard_size is None:
        return None
    return (hash_type or "sha256", shard_size)


class _Cancelled(Exception):
    """Raised inside the hashing threads of a cancelled pre-hash."""


@dataclass
class Prehash:
    """A manifest being built on a background thread."""

    path: Path
    ignore_paths: tuple[str, ...]
    hash_type: str
    shard_size: int | None
    _done: threading.Event = field(default_factory=threading.Event)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _manifest: Manifest | None = None
    _error: BaseException | None = None

    def cancel(self) -> None:
        """Stop hashing at the next chunk (the manifest is not wanted: another mode applies)."""
        self._cancelled.set()

    def matches(self, path: Path, ignore_paths: tuple[str, ...], hash_type: str, shard_size):
        """Whether this is the manifest ``sign_path`` would build."""
        return (
            Path(path) == self.path
            and tuple(ignore_paths) == self.ignore_paths
            and (hash_type, shard_size) == (self.hash_type, self.shard_size)
        )

    def result(self) -> Manifest:
        """Wait for the manifest; re-raise the hashing error, if any, in the caller's thread."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._manifest is not None
        return self._manifest


def start_manifest(
    path: Path,
    *,
    ignore_paths: tuple[str, ...],
    hash_type: str,
    shard_size: int | None,
    cache: DigestCache | None = None,
    progress: ProgressCallback | None = None,
) -> Prehash:
    """Build ``path``'s manifest on a daemon thread (a failed store open does not wait for it)."""
    job = Prehash(Path(path), tuple(ignore_paths), hash_type, shard_size)

    def advance(done: int) -> None:
        if job._cancelled.is_set():
            raise _Cancelled
        if progress is not None:
            progress(done)

    def run() -> None:
        try:
            job._manifest = build_manifest(
                path,
                ignore_paths=ignore_paths,
                cache=cache,
                fingerprints=cache is not None,
                progress=advance,
                hash_type=hash_type,
                shard_size=shard_size,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            job._error = exc
        finally:
            job._done.set()

    threading.Thread(target=run, name="assay-prehash", daemon=True).start()
    return job
