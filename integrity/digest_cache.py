"""A cache of file digests for ``--reuse-digests``.

Entries are keyed by absolute path, algorithm and (for OMS shards) the shard's size and offset,
and carry the file's identity and change stamps
``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``; a digest is reused only when all of them
still match, so any write, truncation, replacement or ``touch`` re-hashes the file. Files modified
within :data:`RACY_WINDOW_NS` of being hashed are not cached (a later write in the same timestamp
tick would be invisible), nor are files whose stamps changed while they were hashed.

Signing also keeps a fingerprint of each entry's bytes (XXH3-128 seeded with this cache's own
random :attr:`DigestCache.seed`, computed in the same read as the digest). When a file changed,
:meth:`DigestCache.stale` hands back its entries of the same size, and signing re-reads only the
fingerprints: a shard whose fingerprint is unchanged keeps its digest, so a 1 KB write into a
large sharded file re-hashes one shard. The fingerprint is not cryptographic, so it is never used
to *verify*: at worst a crafted collision makes signing record the previous bytes' digest, and the
bundle then fails verification against the new bytes (it fails, never passes). Verification that
trusts the cache (``trust_cache``) reuses only entries whose stamps are unchanged.

The cache is one JSON file under ``$ASSAY_HOME/cache/``, written atomically (temporary file +
``os.replace``); a corrupt or unreadable file is ignored and rebuilt. Signing may use the cache;
verification re-hashes unless told to trust it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from assay.core.atomic import atomic_write

__all__ = ["DigestCache", "RACY_WINDOW_NS", "default_cache_path"]

log = logging.getLogger(__name__)

#: 2: entries carry a fingerprint and the file a seed (format 1 files are rebuilt).
CACHE_FORMAT = 2
MAX_ENTRIES = 50_000
#: Files modified this recently are hashed but not cached (coarse filesystem timestamps).
RACY_WINDOW_NS = 100_000_000


def default_cache_path(home: str | os.PathLike[str]) -> Path:
    """``$ASSAY_HOME/cache/digests.json``."""
    return Path(home) / "cache" / "digests.json"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class DigestCache:
    """Digests of files by absolute path, valid while the file's stat stamps are unchanged."""

    def __init__(self, path: str | os.PathLike[str], algorithm: str = "sha256") -> None:
        self.path = Path(path)
        self.algorithm = algorithm
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self._dirty = False
        self.seed = 0
        self.hits = 0
        self.misses = 0
        self.confirmed = 0  # stale entries reused because their fingerprint was unchanged
        self._load()
        if not self.seed:  # saved with the first entry (an empty cache is never written)
            self.seed = secrets.randbits(64) or 1

    @classmethod
    def for_home(cls, home: str | os.PathLike[str]) -> DigestCache:
        return cls(default_cache_path(home))

    def _key(self, path: str | os.PathLike[str], algorithm: str | None, part: str) -> str:
        alg = algorithm or self.algorithm
        return f"{alg}@{part}:{os.path.abspath(path)}" if part else f"{alg}:{os.path.abspath(path)}"

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("digest cache %s unreadable (%s); starting empty", self.path, exc)
            return
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and data.get("format") in range(1, CACHE_FORMAT):
                log.info("digest cache %s has an older format; rebuilding it", self.path)
                return
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                raise ValueError("unknown format")
            entries, seed = data["entries"], data["seed"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not an object")
            if not isinstance(seed, int) or not 0 < seed < 2**64:
                raise ValueError("seed is not a 64-bit integer")
            clean: dict[str, dict] = {}
            for key, value in entries.items():
                if (
                    isinstance(value, dict)
                    and isinstance(value.get("digest"), str)
                    and isinstance(value.get("stat"), list)
                    and len(value["stat"]) == 5
                    and all(isinstance(x, int) for x in value["stat"])
                    and isinstance(value.get("fp", ""), str)
                ):
                    clean[key] = value
            self._entries, self.seed = clean, seed
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("digest cache %s is corrupt (%s); rebuilding it", self.path, exc)
            self._entries = {}
            self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self,
        path: str | os.PathLike[str],
        st: os.stat_result,
        *,
        algorithm: str | None = None,
        part: str = "",
    ) -> str | None:
        """The cached digest of ``path`` (or of its shard ``part``) if its stamps still equal
        ``st``'s, else None. ``algorithm`` overrides the cache's default algorithm."""
        with self._lock:
            entry = self._entries.get(self._key(path, algorithm, part))
            if entry is not None and entry["stat"] == _stamp(st):
                self.hits += 1
                return entry["digest"]
            self.misses += 1
            return None

    def stale(
        self,
        path: str | os.PathLike[str],
        st: os.stat_result,
        *,
        algorithm: str | None = None,
        part: str = "",
    ) -> tuple[str, str] | None:
        """``(digest, fingerprint)`` of an entry whose stamps no longer match ``st`` but whose
        file has the same size: the bytes may be unchanged, which only their fingerprint can
        tell. None when there is no such entry or it has no fingerprint."""
        with self._lock:
            entry = self._entries.get(self._key(path, algorithm, part))
        if entry is None or not entry.get("fp") or entry["stat"][2] != st.st_size:
            return None
        return entry["digest"], entry["fp"]

    def store(
        self,
        path: str | os.PathLike[str],
        st: os.stat_result,
        digest: str,
        *,
        algorithm: str | None = None,
        part: str = "",
        fingerprint: str | None = None,
    ) -> bool:
        """Remember ``digest`` (and the ``fingerprint`` of the same bytes) for ``path`` hashed
        when its stat was ``st``.

        Re-stats the file: nothing is stored if it changed meanwhile or was modified too
        recently to be trusted. Returns whether the entry was stored.
        """
        key = self._key(path, algorithm, part)
        try:
            now_st = os.stat(path)
        except OSError:
            now_st = None
        racy = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_WINDOW_NS
        with self._lock:
            if now_st is None or _stamp(now_st) != _stamp(st) or racy:
                if self._entries.pop(key, None) is not None:
                    self._dirty = True
                return False
            self._entries.pop(key, None)  # re-insert at the end: newest last
            entry = {"digest": digest, "stat": _stamp(st)}
            if fingerprint:
                entry["fp"] = fingerprint
            self._entries[key] = entry
            self._dirty = True
            return True

    def forget(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            if self._entries.pop(self._key(path, None, ""), None) is not None:
                self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if it changed. Failures are logged, never raised."""
        with self._lock:
            if not self._dirty:
                return
            if len(self._entries) > MAX_ENTRIES:
                for key in list(self._entries)[: len(self._entries) - MAX_ENTRIES]:
                    del self._entries[key]
            payload = json.dumps(
                {"format": CACHE_FORMAT, "seed": self.seed, "entries": self._entries},
                separators=(",", ":"),
            )
            try:
                atomic_write(self.path, payload.encode("utf-8"), mode=0o600)
            except OSError as exc:
                log.warning("could not write digest cache %s: %s", self.path, exc)
                return
            self._dirty = False
