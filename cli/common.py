"""Helpers shared by command modules: opening the registry, parsing times, small renderers.

Untrusted text (names, versions, aliases, reasons, paths, playbook messages, anything read from a
bundle, a playbook or MLflow) is printed through rich markup, where ``[/]`` or ``[bold]`` would be
taken as tags: :func:`esc` is the one way to put such text into a markup string. Table cells are
escaped by :func:`assay.cli.context.new_table` itself; only :func:`styled` cells are markup.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
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


class Terminated(BaseException):
    """SIGTERM arrived (a cancelled CI job): unwinds like Ctrl-C so cleanup code runs."""


@contextlib.contextmanager
def sigterm_unwinds(what: str) -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (so ``finally`` blocks run: an upload in
    progress ends its MLflow run as FAILED) and is reported as one error line."""
    from assay.core.errors import AssayError

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        raise AssayError(f"{what} was terminated (SIGTERM); re-run it to finish") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


# What rich takes for a tag (rich.markup.RE_TAGS), with the backslashes before it.
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def esc(value: object) -> str:
    """``value`` as text that rich markup prints literally (``rich.markup.escape`` without
    importing rich): every tag-like ``[...]`` gets a backslash, and an odd run of backslashes at
    the end gets one more, so that it cannot escape the tag that follows (rich's own escape
    misses runs of three or more)."""
    text = "" if value is None else str(value)
    if "[" in text:
        text = _TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)
    trailing = len(text) - len(text.rstrip("\\"))
    if trailing % 2:
        text += "\\"
    return text


class Markup(str):
    """A table cell that is rich markup on purpose (styles), not text to escape."""


def styled(markup: str) -> Markup:
    """Mark ``markup`` (trusted tags around :func:`esc`-aped text) as a styled table cell."""
    return Markup(markup)


# --- option groups: each repeated option defined once (each command passes its own help) -------


def reason_option(help: str, *, required: bool = False):
    """``--reason TEXT``: why, recorded with the change."""
    return click.option("--reason", required=required, help=help)


def incident_option(what: str):
    """``--incident ID`` (as ``incident_id``): the incident ``what`` belongs to."""
    return click.option(
        "--incident", "incident_id", metavar="ID", help=f"Incident this {what} belongs to."
    )


def yes_option(help: str = "Approve approval gates without asking."):
    """``-y/--yes``."""
    return click.option("-y", "--yes", is_flag=True, help=help)


def new_output_option(help: str = "Write to a new file."):
    """``-o/--output FILE`` (a ``Path``)."""
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help=help
    )


def signature_option(help: str):
    """``--signature FILE``: the OMS bundle's path."""
    return click.option("--signature", type=click.Path(dir_okay=False, path_type=Path), help=help)


ignore_path_option = click.option(
    "--ignore-path",
    "ignore_paths",
    multiple=True,
    help="A path (relative to PATH) left out of the signature (repeatable).",
)
