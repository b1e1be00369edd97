"""Helpers shared by command modules: opening the registry, parsing times, small renderers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from assay.cli.context import AppContext
    from assay.registry.facade import Registry


def open_registry(app: AppContext) -> Registry:
    """The registry for the current settings; a clear error when `assay init` was never run."""
    from assay.registry.facade import Registry

    return Registry.open(app.settings)


class IsoTime(click.ParamType):
    """An ISO 8601 timestamp; naive times are taken as UTC."""

    name = "ISO8601"

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-20T14:00:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


ISO_TIME = IsoTime()


def short(digest: str | None, n: int = 12) -> str:
    return (digest or "")[:n]
