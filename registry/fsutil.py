"""Safe file I/O: atomic replacement and create-only writes (never a half-written file), and
bounded reads of regular files that an attacker may have placed (signature bundles)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
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


def read_regular_file(
    path: Path, *, max_bytes: int, what: str, error: type[AssayError] = AssayError
) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; else ``error``.

    Opened non-blocking (a FIFO cannot hang the open), then checked with ``fstat`` on the open
    descriptor (no race with a swapped path): a FIFO, a device such as ``/dev/zero`` (directly or
    through a link), a socket or a folder is refused, and so is a file over the cap, before
    anything is read. The read itself stops at ``max_bytes + 1`` in case the file grows.
    A missing file raises ``FileNotFoundError`` for the caller to word.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(str(path)) from exc
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file")
        if st.st_size > max_bytes:
            raise error(f"{what} {path} is {st.st_size} bytes, over the limit of {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{what} {path} grew past the limit of {max_bytes} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
