"""Gate plugins: found through the assay.gates entry-point group, refused when unknown."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from assay.core.errors import ConfigError
from assay.gates import plugins
from assay.gates.base import merge_params


class TeamGate:
    name = "team"
    defaults: dict = {"limit": 1.0}

    def run(self, context):  # pragma: no cover - not run here
        raise NotImplementedError


def test_entry_point_plugins_are_listed_and_loaded(monkeypatch):
    ep = EntryPoint("team", f"{__name__}:TeamGate", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: {"team": ep})
    assert "team" in plugins.available() and "pickle-scan" in plugins.available()
    assert isinstance(plugins.load_gate("team"), TeamGate)
    with pytest.raises(ConfigError, match="no gate named 'other'"):
        plugins.load_gate("other")


def test_installed_distribution_registers_the_builtins():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert set(plugins.BUILTIN) <= names


def test_params_are_checked_against_defaults():
    assert merge_params("g", {"eps": 0.1, "allow": []}, {"eps": 1, "allow": "x"}) == {
        "eps": 1,
        "allow": ["x"],
    }
    with pytest.raises(ConfigError, match="unknown parameter 'epz'"):
        merge_params("g", {"eps": 0.1}, {"epz": 0.2})
    with pytest.raises(ConfigError, match="must be like"):
        merge_params("g", {"eps": 0.1}, {"eps": "big"})
    with pytest.raises(ConfigError, match="must be like"):
        merge_params("g", {"strict": True}, {"strict": 1})
