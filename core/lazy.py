"""Lazy package exports (PEP 562): a package's public names, imported on first use.

Every ``assay`` subpackage declares its public API as a table of name -> defining module, so
``import assay.registry`` stays cheap (the CLI must start fast) while ``from assay.registry import
Registry`` works. ``__all__`` is the table's keys; ARCHITECTURE.md lists the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` exporting ``exports`` lazily."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
