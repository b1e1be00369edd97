"""Bounded reads of regular files that an attacker may have placed (signature bundles).

Atomic and create-only writes live in :mod:`assay.core.atomic`."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from assay.core.errors import AssayError


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
