"""Hashing started before the store opens: same manifest, errors re-raised, cancellable."""

from __future__ import annotations

import os

import pytest

from assay.core.errors import NotFoundError
from assay.integrity.manifest import build_manifest
from assay.integrity.prehash import _Cancelled, start_manifest


def test_prehash_builds_the_same_manifest(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(os.urandom(3000))
    job = start_manifest(tmp_path / "m", ignore_paths=(), hash_type="sha256", shard_size=1000)
    assert job.matches(tmp_path / "m", (), "sha256", 1000)
    assert not job.matches(tmp_path / "m", (), "sha256", None)
    assert job.result() == build_manifest(tmp_path / "m", shard_size=1000)


def test_prehash_error_is_raised_in_the_caller(tmp_path):
    job = start_manifest(tmp_path / "gone", ignore_paths=(), hash_type="blake3", shard_size=None)
    with pytest.raises(NotFoundError, match="does not exist"):
        job.result()


def test_cancelled_prehash_stops(tmp_path):
    (tmp_path / "m").mkdir()
    for i in range(8):
        (tmp_path / "m" / f"w{i}.bin").write_bytes(os.urandom(4 << 20))
    job = start_manifest(tmp_path / "m", ignore_paths=(), hash_type="sha256", shard_size=None)
    job.cancel()
    with pytest.raises(_Cancelled):
        job.result()
