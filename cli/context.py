"""State shared by every command: settings and output helpers.

rich (about 0.04 s to import, more for its tables) is only imported to render for a person at a
terminal: ``--json`` prints with ``json``, and output that is not a terminal (a pipe, a file, CI)
goes through :class:`PlainConsole`, which prints text and :func:`new_table` tables itself (never
cut to 80 columns) and hands anything else (a rich renderable built by a command) to a real rich
console. Every table comes from :func:`new_table`: its text cells are escaped, not markup.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from assay.cli.common import Markup, esc

if TYPE_CHECKING:
    from rich.console import Console

    from assay.core.settings import Settings

# rich's markup tags (rich.markup.RE_TAGS): "[bold]", "[/]", "[link=...]"; "\[" escapes one.
_MARKUP_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")


def plain_text(markup: str) -> str:
    """``markup`` as rich prints it without styles: tags dropped, escaped brackets kept."""

    def replace(match: re.Match[str]) -> str:
        backslashes, escaped = divmod(len(match.group(2)), 2)
        tag = match.group(1)[len(match.group(2)) :]
        return "\\" * backslashes + (tag if escaped else "")

    return _MARKUP_TAG.sub(replace, markup) if "[" in markup else markup


def _cell(value: Any, plain: bool) -> Any:
    """A table cell: text is escaped (printed as it is), :class:`Markup` keeps its styles."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return plain_text(value) if plain else str(value)
    if isinstance(value, str) or plain:
        return str(value) if plain else esc(value)
    return value  # a rich renderable built by the command


class PlainTable:
    """A table printed as aligned plain-text columns (rich's ``Table`` API subset we use).

    Used when stdout is not a terminal (CI logs, pipes): nothing is ever cut to a width."""

    def __init__(self, *headers: str, title: str | None = None, **_style: Any) -> None:
        self.headers = [str(h) for h in headers]
        self.title = title
        self.rows: list[list[str]] = []

    def add_column(self, header: str = "", **_style: Any) -> None:
        self.headers.append(str(header))

    def add_row(self, *cells: Any, **_style: Any) -> None:
        self.rows.append([_cell(c, plain=True) for c in cells])

    def lines(self) -> list[str]:
        table = [self.headers, *self.rows]
        widths = [
            max(len(row[i]) if i < len(row) else 0 for row in table)
            for i in range(len(self.headers))
        ]
        body = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
            for row in table
        ]
        return [plain_text(self.title), *body] if self.title else body


class PlainConsole:
    """Prints strings (markup removed) and :class:`PlainTable` without importing rich."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self._rich: Console | None = None

    @property
    def rich(self) -> Console:
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(stderr=self.stderr)
        return self._rich

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", **kwargs: Any) -> None:
        if kwargs or not all(isinstance(o, (str, PlainTable)) for o in objects):
            self.rich.print(*objects, sep=sep, end=end, **kwargs)
            return
        parts = [
            "\n".join(o.lines()) if isinstance(o, PlainTable) else plain_text(o) for o in objects
        ]
        click.echo(sep.join(parts) + end, nl=False, err=self.stderr)

    def __getattr__(self, name: str) -> Any:  # anything else rich offers
        return getattr(self.rich, name)


@functools.cache
def _rich_table_class() -> type:
    from rich.table import Table

    class SafeTable(Table):
        """rich's Table whose text cells are escaped and whose columns fold instead of
        truncating: states, versions and aliases always show in full."""

        def add_column(self, header: Any = "", **kwargs: Any) -> None:
            kwargs.setdefault("overflow", "fold")
            super().add_column(header, **kwargs)

        def add_row(self, *cells: Any, **kwargs: Any) -> None:
            super().add_row(*(_cell(c, plain=False) for c in cells), **kwargs)

    return SafeTable


def new_table(console: Any, *headers: str, **options: Any) -> Any:
    """A table for ``console``: plain for a :class:`PlainConsole`, else a rich ``Table``.

    Either way text cells print as they are (escaped) unless wrapped in
    :func:`assay.cli.common.styled`, and nothing is truncated. ``options`` are rich's (``title``,
    ``title_justify``, ``style``...); a plain table keeps only the title."""
    if isinstance(console, PlainConsole):
        return PlainTable(*headers, **options)
    return _rich_table_class()(*headers, **options)


@dataclass
class AppContext:
    """Passed to every command with ``@click.pass_obj``."""

    home: str | None = None
    verbose: bool = False
    _console: Console | PlainConsole | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        from assay.core.settings import Settings

        return Settings.from_env(self.home)

    @property
    def console(self) -> Console:
        """rich for a terminal, else a :class:`PlainConsole` (same ``print``, no rich import)."""
        if self._console is None:
            if _is_terminal(sys.stdout):
                from rich.console import Console

                self._console = Console()
            else:
                self._console = PlainConsole()
        return self._console  # type: ignore[return-value]

    @property
    def err_console(self) -> Console:
        """Like :attr:`console`, for stderr."""
        if _is_terminal(sys.stderr):
            from rich.console import Console

            return Console(stderr=True)
        return PlainConsole(stderr=True)  # type: ignore[return-value]

    def emit(self, data: Any, as_json: bool, render: Callable[[Console], None]) -> None:
        """Print ``data`` as JSON for machines, or call ``render`` for people."""
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            render(self.console)

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stdout.isatty()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
