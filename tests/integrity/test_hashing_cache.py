"""The digest cache's stat stamps, and parallel hashing against serial and reference digests."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import blake3
import pytest

from assay.integrity import digest_cache as dc
from assay.integrity import hashing
from assay.integrity.digest_cache import DigestCache
from assay.integrity.hashing import Span, hash_spans
from assay.integrity.manifest import build_manifest


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, DigestCache]:
    """A file with its digest in a fresh cache."""
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3000))
    cache = DigestCache(tmp_path / "cache.json")
    assert cache.store(path, os.stat(path), "ab" * 32, part="1000:0")
    assert cache.lookup(path, os.stat(path), part="1000:0") == "ab" * 32
    return path, cache


def _stat_with(st: os.stat_result, **changes: int) -> os.stat_result:
    """``st`` with some fields replaced (st_dev cannot be changed on a real file)."""
    fields = list(st)
    names = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size")
    for name, value in changes.items():
        fields[names.index(name)] = value
    extra = {k: getattr(st, k) for k in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
    return os.stat_result(fields, extra)


def test_a_new_mtime_invalidates(cached):
    path, cache = cached
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # contents unchanged
    assert cache.lookup(path, os.stat(path), part="1000:0") is None


def test_a_new_ctime_alone_invalidates(cached):
    path, cache = cached
    st = os.stat(path)
    os.chmod(path, 0o600)  # changes st_ctime only
    now = os.stat(path)
    assert (now.st_mtime_ns, now.st_size, now.st_ino) == (st.st_mtime_ns, st.st_size, st.st_ino)
    if now.st_ctime_ns == st.st_ctime_ns:
        pytest.skip("this filesystem's ctime did not move")
    assert cache.lookup(path, now, part="1000:0") is None


def test_a_new_size_invalidates(cached):
    path, cache = cached
    st = os.stat(path)
    with open(path, "ab") as fh:
        fh.write(b"x")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, other size
    assert cache.lookup(path, os.stat(path), part="1000:0") is None


def test_a_replaced_file_invalidates(cached, tmp_path: Path):
    path, cache = cached
    st = os.stat(path)
    copy = tmp_path / "copy"
    shutil.copy2(path, copy)  # same bytes and mtime, another inode
    os.replace(copy, path)
    now = os.stat(path)
    assert now.st_ino != st.st_ino and now.st_mtime_ns == st.st_mtime_ns
    assert cache.lookup(path, now, part="1000:0") is None


def test_another_device_invalidates(cached):
    path, cache = cached
    st = os.stat(path)
    assert cache.lookup(path, _stat_with(st, st_dev=st.st_dev + 1), part="1000:0") is None
    assert cache.lookup(path, st, part="1000:0") == "ab" * 32


def test_another_shard_or_algorithm_misses(cached):
    path, cache = cached
    st = os.stat(path)
    assert cache.lookup(path, st, part="1000:1000") is None
    assert cache.lookup(path, st, part="500:0") is None
    assert cache.lookup(path, st, algorithm="blake3", part="1000:0") is None


def test_a_changed_file_rehashes_every_shard_and_only_that_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.bin").write_bytes(os.urandom(5000))
    (model / "b.bin").write_bytes(os.urandom(3000))
    build_manifest(model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"))
    with open(model / "a.bin", "r+b") as fh:
        fh.seek(2500)
        fh.write(b"changed")
    cache = DigestCache(tmp_path / "c.json")
    after = build_manifest(model, shard_size=1000, cache=cache)
    assert (cache.hits, cache.misses) == (3, 5)  # b's 3 shards reused, a's 5 re-read
    assert after == build_manifest(model, shard_size=1000)


REFERENCE = {
    "sha256": lambda b: hashlib.sha256(b).hexdigest(),
    "blake2b": lambda b: hashlib.blake2b(b).hexdigest(),
    "blake3": lambda b: blake3.blake3(b).hexdigest(),
}


@pytest.mark.parametrize("algorithm", sorted(REFERENCE))
def test_parallel_spans_equal_serial_and_reference(tmp_path, monkeypatch, algorithm):
    # small buffers and windows so every span crosses several of them
    monkeypatch.setattr(hashing, "BUFFER_SIZE", 4096)
    monkeypatch.setattr(hashing, "MMAP_WINDOW", 3 * 65536)
    monkeypatch.setattr(hashing, "BLAKE3_PARALLEL_MIN", 100_000)
    monkeypatch.setattr(hashing, "_local", threading.local())
    blobs = [os.urandom(n) for n in (0, 1, 4097, 300_001, 1_000_000)]
    spans, expected, sizes = [], [], []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"f{i}"
        path.write_bytes(blob)
        spans.append(Span(path))
        expected.append(REFERENCE[algorithm](blob))
        sizes.append(len(blob))
        for start in range(0, len(blob), 123_457):
            end = min(start + 123_457, len(blob))
            spans.append(Span(path, start, end))
            expected.append(REFERENCE[algorithm](blob[start:end]))
            sizes.append(end - start)
    serial = hash_spans(spans, algorithm=algorithm, workers=1, sizes=sizes)
    parallel = hash_spans(spans, algorithm=algorithm, workers=4, sizes=sizes)
    assert [r.digest for r in serial] == expected
    assert [r.digest for r in parallel] == expected
    assert [r.size for r in parallel] == sizes


def _sharded(tmp_path: Path) -> Path:
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.bin").write_bytes(os.urandom(5000))
    (model / "b.bin").write_bytes(os.urandom(3000))
    return model


def _hashed_bytes(model: Path, cache: DigestCache, **kw) -> tuple[object, int]:
    """The manifest and the bytes its digests were computed from (fingerprint reads excluded)."""
    seen = [0]
    manifest = build_manifest(model, cache=cache, progress=lambda n: seen.__setitem__(0, n), **kw)
    return manifest, seen[0]


def test_signing_rehashes_only_the_changed_shard_of_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    build_manifest(
        model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"), fingerprints=True
    )
    with open(model / "a.bin", "r+b") as fh:
        fh.seek(2500)
        fh.write(b"changed")
    cache = DigestCache(tmp_path / "c.json")
    after, hashed = _hashed_bytes(model, cache, shard_size=1000, fingerprints=True)
    assert (cache.hits, cache.confirmed) == (3, 4)  # b's 3 shards by stamps, 4 of a's by print
    assert hashed == 1000  # only shard 2000:3000 of a.bin was hashed again
    assert after == build_manifest(model, shard_size=1000)
    # the confirmed shards were re-stamped: the next run reuses all 8 by their stamps
    again = DigestCache(tmp_path / "c.json")
    assert build_manifest(model, shard_size=1000, cache=again, fingerprints=True) == after
    assert (again.hits, again.confirmed) == (8, 0)


def test_a_touched_file_keeps_its_digest_by_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    first = build_manifest(model, cache=DigestCache(tmp_path / "c.json"), fingerprints=True)
    st = os.stat(model / "a.bin")
    os.utime(model / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    cache = DigestCache(tmp_path / "c.json")
    after, hashed = _hashed_bytes(model, cache, fingerprints=True)
    assert after == first and hashed == 0 and cache.confirmed == 1


def test_every_changed_shard_is_rehashed_to_the_right_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    build_manifest(
        model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"), fingerprints=True
    )
    (model / "a.bin").write_bytes(os.urandom(5000))  # same size, every byte new
    cache = DigestCache(tmp_path / "c.json")
    after, hashed = _hashed_bytes(model, cache, shard_size=1000, fingerprints=True)
    assert cache.confirmed == 0 and hashed == 5000
    assert after == build_manifest(model, shard_size=1000)


def test_verification_never_reuses_a_changed_file_by_fingerprint(tmp_path, monkeypatch):
    """Fingerprints are not cryptographic: only signing may use them (a collision there signs
    the previous bytes' digest, which then fails verification)."""
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    build_manifest(
        model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"), fingerprints=True
    )
    st = os.stat(model / "a.bin")
    os.utime(model / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    cache = DigestCache(tmp_path / "c.json")
    _, hashed = _hashed_bytes(model, cache, shard_size=1000)  # fingerprints=False
    assert cache.confirmed == 0 and hashed == 5000


def test_a_wrong_fingerprint_in_the_cache_rehashes(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    build_manifest(
        model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"), fingerprints=True
    )
    data = json.loads((tmp_path / "c.json").read_text())
    for entry in data["entries"].values():
        entry["digest"], entry["fp"] = "00" * 32, "11" * 16  # a digest no shard has
        entry["stat"][3] += 1  # and stamps that no longer match
    (tmp_path / "c.json").write_text(json.dumps(data))
    cache = DigestCache(tmp_path / "c.json")
    after, hashed = _hashed_bytes(model, cache, shard_size=1000, fingerprints=True)
    assert cache.confirmed == 0 and hashed == 8000
    assert after == build_manifest(model, shard_size=1000)


def test_a_stale_entry_of_another_size_is_not_a_candidate(cached):
    path, cache = cached
    cache.store(path, os.stat(path), "ab" * 32, part="1000:0", fingerprint="cd" * 16)
    with open(path, "ab") as fh:
        fh.write(b"x")
    assert cache.stale(path, os.stat(path), part="1000:0") is None


@pytest.mark.parametrize("content", ['{"format": 1, "entries": {}}', '{"format": 2}', "[]", "{"])
def test_an_old_or_corrupt_cache_file_is_rebuilt_with_a_new_seed(tmp_path, monkeypatch, content):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    (tmp_path / "c.json").write_text(content)
    cache = DigestCache(tmp_path / "c.json")
    assert len(cache) == 0 and 0 < cache.seed < 2**64
    (tmp_path / "w").write_bytes(b"w")
    assert cache.store(tmp_path / "w", os.stat(tmp_path / "w"), "ab" * 32, fingerprint="cd" * 16)
    cache.save()
    again = DigestCache(tmp_path / "c.json")
    assert again.seed == cache.seed and len(again) == 1


def test_a_second_cache_object_does_not_erase_the_first_ones_entries(tmp_path, monkeypatch):
    """``assay sign`` opens the cache twice (pre-hash and signing): the one that stored nothing
    must not write its empty cache (with another seed) over the other's."""
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    model = _sharded(tmp_path)
    idle = DigestCache(tmp_path / "c.json")
    build_manifest(
        model, shard_size=1000, cache=DigestCache(tmp_path / "c.json"), fingerprints=True
    )
    idle.save()
    assert len(DigestCache(tmp_path / "c.json")) == 8


def test_fingerprints_are_seeded_xxh3_of_the_same_bytes(tmp_path):
    import xxhash

    blob = os.urandom(300_001)
    (tmp_path / "f").write_bytes(blob)
    spans = [Span(tmp_path / "f"), Span(tmp_path / "f", 1000, 200_000)]
    for algorithm in ("sha256", "blake3"):
        res = hash_spans(spans, algorithm=algorithm, sizes=[300_001, 199_000], fingerprint_seed=7)
        assert [r.fingerprint for r in res] == [
            xxhash.xxh3_128(blob, seed=7).hexdigest(),
            xxhash.xxh3_128(blob[1000:200_000], seed=7).hexdigest(),
        ]
        assert res[0].digest == REFERENCE[algorithm](blob)
    other = hash_spans(spans[:1], algorithm=hashing.FINGERPRINT, fingerprint_seed=8)
    assert other[0].digest == xxhash.xxh3_128(blob, seed=8).hexdigest() != res[0].fingerprint
