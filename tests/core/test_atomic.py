"""assay.core.atomic: the one atomic-write family (replace, create-only, numbered, staged, publish)."""

from __future__ import annotations

import os
import stat

import pytest

from assay.core.atomic import (
    atomic_write,
    publish_new,
    publish_new_dir,
    publish_replace,
    staged_write,
    temp_sibling,
    temp_sibling_dir,
    write_new_file,
    write_new_numbered,
)
from assay.core.errors import AssayError, FormatError, RefusedError


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_with_mode_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one" and _mode(path) == 0o644
    atomic_write(path, b"two", mode=0o600)
    assert path.read_bytes() == b"two" and _mode(path) == 0o600
    assert _leftovers(path.parent) == []


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f"
    atomic_write(path, b"old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_write_new_file_refuses_existing_and_symlink(tmp_path):
    path = write_new_file(tmp_path / "k.pem", b"secret", 0o600)
    assert _mode(path) == 0o600
    with pytest.raises(RefusedError, match="already exists; refusing to overwrite a key file"):
        write_new_file(path, b"other", error=RefusedError, what="a key file")
    assert path.read_bytes() == b"secret"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(AssayError, match="already exists"):
        write_new_file(link, b"x")
    assert not (tmp_path / "missing").exists() and _leftovers(tmp_path) == []


def test_write_new_numbered_takes_the_next_free_name(tmp_path):
    first = write_new_numbered(tmp_path, "cp", ".json", b"1")
    second = write_new_numbered(tmp_path, "cp", ".json", b"2")
    assert (first.name, second.name) == ("cp.json", "cp-1.json")
    assert first.read_bytes() == b"1" and second.read_bytes() == b"2"
    assert _leftovers(tmp_path) == []


def test_staged_write_commits_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "bundle"
    with pytest.raises(RuntimeError), staged_write(path, b"data"):
        raise RuntimeError("store commit failed")
    assert not path.exists() and _leftovers(tmp_path) == []
    with staged_write(path, b"data"):
        assert not path.exists()
    assert path.read_bytes() == b"data"
    (tmp_path / "blocker").write_bytes(b"")
    with (
        pytest.raises(AssayError, match="cannot write"),
        staged_write(tmp_path / "blocker" / "x", b""),
    ):
        pass


def test_temp_sibling_and_publish(tmp_path):
    out = tmp_path / "w.safetensors"
    with temp_sibling(out) as tmp:
        tmp.write_bytes(b"weights")
        publish_new(tmp, out, error=FormatError)
    assert out.read_bytes() == b"weights"
    with temp_sibling(out) as tmp, pytest.raises(FormatError, match="exists"):
        tmp.write_bytes(b"again")
        publish_new(tmp, out, error=FormatError)
    assert out.read_bytes() == b"weights"
    with temp_sibling(out) as tmp:
        tmp.write_bytes(b"marked")
        publish_replace(tmp, out)
    assert out.read_bytes() == b"marked" and _leftovers(tmp_path) == []


def test_temp_sibling_dir_publishes_a_whole_folder_or_nothing(tmp_path):
    out = tmp_path / "checkpoint"
    with pytest.raises(RuntimeError), temp_sibling_dir(out) as tmp:
        (tmp / "a.safetensors").write_bytes(b"half")
        raise RuntimeError("a shard failed")
    assert not out.exists() and _leftovers(tmp_path) == []
    with temp_sibling_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "a.safetensors").write_bytes(b"one")
        (tmp / "sub" / "b.json").write_bytes(b"two")
        publish_new_dir(tmp, out, error=FormatError)
    assert (out / "a.safetensors").read_bytes() == b"one"
    assert (out / "sub" / "b.json").read_bytes() == b"two" and _mode(out) == 0o755
    for existing in (out, tmp_path / "file"):
        (tmp_path / "file").write_bytes(b"keep")
        with temp_sibling_dir(existing) as tmp, pytest.raises(FormatError, match="exists"):
            (tmp / "c").write_bytes(b"new")
            publish_new_dir(tmp, existing, error=FormatError)
    assert sorted(p.name for p in out.iterdir()) == ["a.safetensors", "sub"]
    assert (tmp_path / "file").read_bytes() == b"keep" and _leftovers(tmp_path) == []
