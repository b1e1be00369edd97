"""Streaming, parallel file hashing."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from assay.core.errors import AssayError, NotFoundError
from assay.integrity import hashing
from assay.integrity.hashing import hash_bytes, hash_file, hash_files


def test_hash_file_matches_hashlib_across_buffer_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "BUFFER_SIZE", 4096)
    monkeypatch.setattr(hashing, "_local", threading.local())
    for size in (0, 1, 4095, 4096, 4097, 3 * 4096 + 17):
        data = os.urandom(size)
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        got = hash_file(p)
        assert got.digest == hashlib.sha256(data).hexdigest()
        assert got.size == size


def test_hash_files_parallel_order_and_progress(tmp_path):
    blobs = [os.urandom(n) for n in (10, 300_000, 0, 2_500_000, 77)]
    paths = []
    for i, b in enumerate(blobs):
        p = tmp_path / f"f{i}"
        p.write_bytes(b)
        paths.append(p)
    seen: list[int] = []
    results = hash_files(paths, workers=4, progress=seen.append, sizes=[len(b) for b in blobs])
    assert [r.path for r in results] == paths
    assert [r.digest for r in results] == [hashlib.sha256(b).hexdigest() for b in blobs]
    total = sum(len(b) for b in blobs)
    assert seen == sorted(seen) and seen[-1] == total


def test_hash_bytes():
    assert hash_bytes(b"") == hashlib.sha256(b"").hexdigest()


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="file not found"):
        hash_file(tmp_path / "nope")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_file_is_clear_error(tmp_path):
    p = tmp_path / "secret"
    p.write_bytes(b"x")
    p.chmod(0)
    try:
        with pytest.raises(AssayError, match="cannot read .*secret: Permission denied"):
            hash_files([p, p], workers=2)
    finally:
        p.chmod(0o600)


def test_unsupported_algorithm(tmp_path):
    with pytest.raises(AssayError, match="unsupported hash type"):
        hash_files([], algorithm="md5")
