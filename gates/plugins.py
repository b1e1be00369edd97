"""Finding gates: the built-ins and any plugin installed under the ``assay.gates`` entry points.

A plugin is ``name = "package.module:GateClass"`` in the ``assay.gates`` group of its
distribution's entry points; the class is instantiated with no arguments.
"""

from __future__ import annotations

from typing import Any

from assay.core.errors import ConfigError

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "available", "load_gate"]

ENTRY_POINT_GROUP = "assay.gates"
BUILTIN = {
    "pickle-scan": "assay.gates.pickle_scan:PickleScanGate",
    "robustness": "assay.gates.robustness:RobustnessGate",
    "label-issues": "assay.gates.label_issues:LabelIssuesGate",
    "privacy": "assay.gates.privacy:PrivacyGate",
    "backdoor": "assay.gates.backdoor:BackdoorGate",
}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every gate name: the built-ins and the installed plugins."""
    return sorted(set(BUILTIN) | set(_entry_points()))


def load_gate(name: str) -> Any:
    """An instance of gate ``name``; ``ConfigError`` naming the gates there are."""
    import importlib

    target = BUILTIN.get(name)
    try:
        if target is not None:
            module, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            ep = _entry_points().get(name)
            if ep is None:
                raise ConfigError(f"no gate named {name!r} (available: {', '.join(available())})")
            cls = ep.load()
        gate = cls()
    except ConfigError:
        raise
    except Exception as exc:  # a plugin that cannot even load  # noqa: BLE001
        raise ConfigError(f"gate {name} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(gate, "run", None)):
        raise ConfigError(f"gate {name} has no run(context) method")
    return gate
