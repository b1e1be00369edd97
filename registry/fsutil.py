"""Safe file writes: atomic replacement and create-only writes, never a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from assay.core.errors import AssayError


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Readers see either the old file or the whole new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Create ``path`` with ``data``; refuse (nothing written) if it already exists."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise AssayError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        # link() fails if the target appeared meanwhile: create-only, atomically.
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise AssayError(f"{path} already exists; refusing to overwrite it") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def staged_write(path: Path, data: bytes, mode: int = 0o644) -> Iterator[Path]:
    """Write ``data`` beside ``path`` now; replace ``path`` with it when the block succeeds.

    Write errors (missing or read-only folder, full disk) are raised as ``AssayError`` before the
    block runs, so a caller can stage the file, then commit other state inside the block, and
    never be left with that state but no file. If the block raises, the staged file is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise AssayError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
        except OSError as exc:
            raise AssayError(f"cannot write {path}: {exc.strerror or exc}") from exc
        yield path
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise AssayError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
