"""A rich progress bar for hashing, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def byte_progress(description: str, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield a thread-safe ``advance(n_bytes)`` callback driving a progress bar.

    The bar appears on stderr only when it is a terminal (never in CI logs or pipes). The total is
    unknown up front, so the bar shows bytes hashed and the rate.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TransferSpeedColumn,
    )

    lock = threading.Lock()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # file names are not markup
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def advance(n: int) -> None:
            with lock:
                progress.advance(task, n)

        yield advance
