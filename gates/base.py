"""What a gate is: a named check over a verified model folder (and optionally a dataset table).

A gate plugin is a class (registered under the ``assay.gates`` entry-point group) with a ``name``,
a ``defaults`` mapping of its parameters and a ``run(context) -> Outcome`` method. The runner
merges the policy's parameters over the defaults (unknown ones are refused), calls ``run`` and
records the result; an exception is recorded as ``error``, never as ``passed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from assay.core.errors import AssayError

if TYPE_CHECKING:
    from assay.gates.tables import Table

__all__ = ["CannotRun", "Gate", "GateContext", "Outcome"]


class CannotRun(AssayError):
    """The gate cannot run on this model or data (the message says why, in one line)."""


@dataclass
class GateContext:
    """What a gate sees: the version, its verified files, the dataset and the parameters."""

    subject: str  # models:/NAME/V
    name: str
    version: str
    manifest_root: str
    model_dir: Path
    params: dict[str, Any]
    data: Table | None = None
    data_ref: str | None = None
    pickle_allow: list[str] = field(default_factory=list)  # policy's pickle-scan allow_globals
    data_error: str | None = None  # why the model's own dataset could not be read as a table

    def need_data(self, gate: str) -> Table:
        if self.data is None and self.data_error:
            raise CannotRun(f"gate {gate}: {self.data_ref}: {self.data_error}")
        if self.data is None:
            raise CannotRun(
                f"gate {gate} needs a dataset: pass --data dataset:NAME@V (a table with the "
                "label column), or register the model with --dataset"
            )
        return self.data


@dataclass
class Outcome:
    """A gate's verdict with its measurements."""

    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


class Gate(Protocol):
    name: str
    defaults: dict[str, Any]

    def run(self, context: GateContext) -> Outcome: ...


def merge_params(gate: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown parameter or a wrong type is refused."""
    from assay.core.errors import ConfigError

    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"gate {gate}: unknown parameter {key!r} (known: {known})")
        want = defaults[key]
        if isinstance(want, bool) != isinstance(value, bool) or (
            isinstance(want, int | float) and not isinstance(value, int | float)
        ):
            raise ConfigError(f"gate {gate}: parameter {key} must be like {want!r}")
        if isinstance(want, list) and not isinstance(value, list):
            value = [value]
        out[key] = value
    return out
