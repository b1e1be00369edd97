"""Reading the real bytes of a registered artifact, wherever MLflow stored them.

Local artifact stores (the embedded default) are read in place: nothing is copied, so what is
verified is exactly what sits in the store. Remote stores are downloaded into a temporary folder
that is removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from assay.core.errors import IntegrityError, NotFoundError

if TYPE_CHECKING:
    from assay.mlflow_access.base import MlflowBackend


def local_path_of(uri: str) -> Path | None:
    """The local path behind a ``file:`` URI or a plain absolute path, else None."""
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    if uri.startswith("/"):
        return Path(uri)
    return None


@contextmanager
def artifact_files(backend: MlflowBackend, uri: str, what: str) -> Iterator[Path]:
    """Yield a local path holding the artifact at ``uri`` (in place when it is local, or when the
    backend can map it to a local folder: ``local_artifact_path``, e.g. inside the server)."""
    local = local_path_of(uri)
    if local is None and hasattr(backend, "local_artifact_path"):
        local = backend.local_artifact_path(uri)
    if local is not None:
        if not local.exists():
            raise IntegrityError(f"{what}: its files are gone from the artifact store ({local})")
        yield local
        return
    tmp = Path(tempfile.mkdtemp(prefix="assay-fetch-"))
    try:
        dest = tmp / "artifact"
        try:
            backend.download_uri(uri, dest)
        except (FileNotFoundError, NotFoundError) as exc:
            raise IntegrityError(f"{what}: its files are gone from the artifact store") from exc
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
