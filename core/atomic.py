"""Atomic file writes: the one implementation (stdlib only, so every layer may use it).

Every writer takes the same steps: a temp file in the target's folder (created 0600 by
``mkstemp``, so a key is never readable by others, even briefly), write, flush, fsync the file,
set the final mode, then ``os.replace`` (replace) or ``os.link`` (create-only: fails if the
target exists, so nothing is ever overwritten), then fsync the folder so the new name survives a
crash. A reader sees the old file or the whole new one, never a partial write; on any failure the
temp file is removed and the target is untouched.

* :func:`atomic_write`: replace ``path`` with ``data``.
* :func:`write_new_file`: create ``path``; refuse if it exists.
* :func:`write_new_numbered`: create the first free name of ``stem.suffix``, ``stem-1.suffix``...
* :func:`staged_write`: write now, replace when a block (e.g. a store commit) succeeds.
* :func:`temp_sibling` + :func:`publish_new` / :func:`publish_replace`: for writers that stream
  into a path of their own (weight files): a temp path beside the target, then publish it.
* :func:`temp_sibling_dir` + :func:`publish_new_dir`: the same for a whole folder (a sharded
  checkpoint): filled beside the target, every file synced, then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from assay.core.errors import AssayError

__all__ = [
    "atomic_write",
    "fsync_dir",
    "publish_new",
    "publish_new_dir",
    "publish_replace",
    "staged_write",
    "temp_sibling",
    "temp_sibling_dir",
    "write_new_file",
    "write_new_numbered",
]


def fsync_dir(folder: Path) -> None:
    """fsync ``folder`` so a rename or link in it is durable; best effort (some filesystems and
    platforms cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(folder: Path, name: str, data: bytes, mode: int) -> Path:
    """A synced temp file beside ``folder/name`` holding ``data`` with ``mode``; the caller
    publishes or removes it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _refuse(path: Path, error: type[AssayError], what: str) -> AssayError:
    return error(f"{path} already exists; refusing to overwrite {what}")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, ``os.replace``, fsync folder)."""
    path = Path(path)
    tmp = _write_temp(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_new_file(
    path: Path,
    data: bytes,
    mode: int = 0o644,
    *,
    error: type[AssayError] = AssayError,
    what: str = "it",
) -> Path:
    """Create ``path`` holding ``data``; raise ``error`` (nothing written) if it already exists."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise _refuse(path, error, what)
    tmp = _write_temp(path.parent, path.name, data, mode)
    try:
        try:
            os.link(tmp, path)  # fails if the target appeared meanwhile: create-only, atomically
        except FileExistsError as exc:
            raise _refuse(path, error, what) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return path


def write_new_numbered(
    folder: Path, stem: str, suffix: str, data: bytes, mode: int = 0o644, *, tries: int = 1000
) -> Path:
    """Create the first free one of ``stem+suffix``, ``stem-1+suffix``, ... in ``folder``; never
    replaces a file."""
    folder = Path(folder)
    tmp = _write_temp(folder, stem + suffix, data, mode)
    try:
        for attempt in range(tries):
            target = folder / (f"{stem}{suffix}" if attempt == 0 else f"{stem}-{attempt}{suffix}")
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue
            break
        else:
            raise AssayError(f"cannot find a free file name for {stem}{suffix} in {folder}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(folder)
    return target


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
        tmp = _write_temp(path.parent, path.name, data, mode)
    except OSError as exc:
        raise AssayError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        yield path
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise AssayError(f"cannot write {path}: {exc.strerror or exc}") from exc
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def temp_sibling(out: Path) -> Iterator[Path]:
    """An empty temp path beside ``out`` for a writer to fill; removed on failure or if left
    behind. Publish it with :func:`publish_new` or :func:`publish_replace`."""
    out = Path(out)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def publish_new(
    tmp: Path, out: Path, *, error: type[AssayError] = AssayError, what: str = "it"
) -> None:
    """Move a finished temp file to ``out`` without ever replacing an existing file."""
    tmp, out = Path(tmp), Path(out)
    _fsync_file(tmp)
    try:
        os.link(tmp, out)
    except FileExistsError as exc:
        raise _refuse(out, error, what) from exc
    except OSError:
        # Filesystems without hard links: best effort, checked just before.
        if out.exists() or out.is_symlink():
            raise _refuse(out, error, what) from None
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return
    tmp.unlink()
    fsync_dir(out.parent)


def publish_replace(tmp: Path, out: Path) -> None:
    """Replace ``out`` with a finished temp file (fsync it, ``os.replace``, fsync the folder)."""
    tmp, out = Path(tmp), Path(out)
    _fsync_file(tmp)
    os.replace(tmp, out)
    fsync_dir(out.parent)


@contextlib.contextmanager
def temp_sibling_dir(out: Path) -> Iterator[Path]:
    """An empty temp folder beside ``out`` (mode 0700) for a writer to fill; removed with
    everything in it on failure or if left behind. Publish it with :func:`publish_new_dir`."""
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_new_dir(
    tmp: Path, out: Path, *, error: type[AssayError] = AssayError, what: str = "it", mode=0o755
) -> None:
    """Move a finished temp folder to ``out`` (which must not exist): fsync every file and folder
    in it, set ``mode`` on it, rename, fsync the parent. A reader sees no folder or the whole one.

    POSIX rename cannot refuse to replace an *empty* folder created at ``out`` in the instant
    after the check; a non-empty one, or a file, is never replaced.
    """
    tmp, out = Path(tmp), Path(out)
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            _fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))
    os.chmod(tmp, mode)
    if out.exists() or out.is_symlink():
        raise _refuse(out, error, what)
    try:
        os.rename(tmp, out)
    except OSError as exc:  # a non-empty folder or a file appeared at ``out``
        raise _refuse(out, error, what) from exc
    fsync_dir(out.parent)
