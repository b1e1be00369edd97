"""Manifests: what is covered, what is ignored, what is refused."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from assay.core.errors import AssayError, NotFoundError, UnsafeInputError
from assay.integrity import digest_cache as dc
from assay.integrity.digest_cache import DigestCache
from assay.integrity.manifest import build_manifest, compute_root_digest, oms_sort_key


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def model(tmp_path):
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"w" * 1000)
    (root / "config.json").write_text("{}")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b").write_bytes(b"b")
    (root / "a-c").write_bytes(b"ac")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / ".gitattributes").write_text("*")
    (root / "model.sig").write_text("{}")
    return root


def test_directory_manifest(model):
    m = build_manifest(model)
    names = [r.name for r in m.resources]
    # OMS order: path components, so "a-c" < "config.json" < "empty" < "sub/b" < "weights.bin"
    assert names == ["a-c", "config.json", "empty", "sub/b", "weights.bin"]
    assert m.model_name == "model"
    by = {r.name: r for r in m.resources}
    assert by["empty"].digest == _sha(b"") and by["empty"].size == 0
    assert by["weights.bin"].digest == _sha(b"w" * 1000)
    assert m.serialization.ignore_paths == (
        ".git",
        ".gitattributes",
        ".github",
        ".gitignore",
        "model.sig",
    )
    assert m.root_digest == compute_root_digest(m.resources)
    h = hashlib.sha256()
    for r in m.resources:
        h.update(bytes.fromhex(r.digest))
    assert m.root_digest == h.hexdigest()


def test_sort_key_is_by_components():
    names = ["a-c", "a/b", "a"]
    assert sorted(names, key=oms_sort_key) == ["a", "a/b", "a-c"]


def test_user_ignores_relative_and_absolute(model):
    m = build_manifest(model, ignore_paths=["sub", model / "empty", "/elsewhere/x"])
    assert [r.name for r in m.resources] == ["a-c", "config.json", "weights.bin"]
    assert "sub" in m.serialization.ignore_paths and "empty" in m.serialization.ignore_paths


def test_single_file_model(model):
    m = build_manifest(model / "weights.bin")
    assert m.model_name == "weights.bin"
    assert [(r.name, r.digest) for r in m.resources] == [(".", _sha(b"w" * 1000))]


def test_symlink_refused_by_default(model):
    (model / "link").symlink_to(model / "config.json")
    with pytest.raises(UnsafeInputError, match="link.*symbolic link"):
        build_manifest(model)


def test_symlink_inside_allowed(model):
    (model / "link").symlink_to(model / "config.json")
    m = build_manifest(model, allow_symlinks=True)
    assert m.digests()["link"] == _sha(b"{}")
    assert m.serialization.allow_symlinks is True


def test_symlink_escaping_root_refused_even_when_allowed(model, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (model / "escape").symlink_to(outside)
    with pytest.raises(UnsafeInputError, match="outside"):
        build_manifest(model, allow_symlinks=True)


def test_fifo_refused(model):
    os.mkfifo(model / "pipe")
    with pytest.raises(UnsafeInputError, match="not a regular file"):
        build_manifest(model)


def test_missing_path(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        build_manifest(tmp_path / "nope")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_file(model):
    (model / "config.json").chmod(0)
    try:
        with pytest.raises(AssayError, match="cannot read .*config.json"):
            build_manifest(model)
    finally:
        (model / "config.json").chmod(0o600)


def test_digest_cache_reuse_and_invalidation(model, tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    cache_path = tmp_path / "home" / "cache" / "digests.json"
    first = build_manifest(model, cache=DigestCache(cache_path))
    assert cache_path.exists()

    cache = DigestCache(cache_path)
    again = build_manifest(model, cache=cache)
    assert again == first and cache.hits == len(first.resources) and cache.misses == 0

    time.sleep(0.01)
    (model / "weights.bin").write_bytes(b"W" + b"w" * 999)  # same size, new content
    cache = DigestCache(cache_path)
    changed = build_manifest(model, cache=cache)
    assert cache.misses == 1
    assert changed.digests()["weights.bin"] == _sha(b"W" + b"w" * 999)


def test_digest_cache_racy_files_not_cached(model, tmp_path):
    cache = DigestCache(tmp_path / "c.json")
    st = os.stat(model / "config.json")  # just written: inside the racy window
    assert cache.store(model / "config.json", st, "00" * 32) is False


def test_digest_cache_corrupt_file_is_rebuilt(model, tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "RACY_WINDOW_NS", 0)
    cache_path = tmp_path / "c.json"
    cache_path.write_text('{"format": 1, "entries": {"x": ')
    cache = DigestCache(cache_path)
    assert len(cache) == 0
    build_manifest(model, cache=cache)
    assert len(DigestCache(cache_path)) == 5
