"""Verify before load: the hook MLflow's ``models:`` artifact repository calls after download.

``ASSAY_ENFORCE`` (read by the plugin): ``enforce`` (default) refuses a tampered model, ``warn``
logs and loads, ``off`` skips. Models assay never registered load with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from assay.core.errors import ConfigError, NotFoundError
from assay.core.settings import Settings

log = logging.getLogger(__name__)


def verify_download(name: str, version: str, local_path: str) -> None:
    """Raise ``IntegrityError`` if the downloaded files of ``name``/``version`` were tampered with."""
    from assay.registry.facade import Registry
    from assay.registry.uri_verify import verify_local_copy

    try:
        registry = Registry.open(Settings.from_env())
    except ConfigError:
        log.warning("assay is not initialised here; models:/%s/%s loads unverified", name, version)
        return
    try:
        report = verify_local_copy(registry, name, version, Path(local_path))
    except NotFoundError:
        log.warning(
            "models:/%s/%s was not registered with assay; loading it unverified", name, version
        )
        return
    report.raise_for_failure()
