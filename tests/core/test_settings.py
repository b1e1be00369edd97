"""core/settings.py needs only the standard library; its default home is click's app folder."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import click
import pytest

from assay.core import settings


@pytest.mark.parametrize("xdg", [None, "/tmp/xdg-config"])
def test_default_home_is_clicks_app_dir(monkeypatch, tmp_path, xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert settings.default_home() == Path(click.get_app_dir("assay"))


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_default_home_on_other_platforms(monkeypatch, tmp_path, platform):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    monkeypatch.setattr(sys, "platform", platform)
    expected = (
        tmp_path / "Roaming" / "assay"
        if platform == "win32"
        else tmp_path / "Library" / "Application Support" / "assay"
    )
    assert settings.default_home() == expected


def test_core_imports_only_the_standard_library():
    core = Path(settings.__file__).parent
    for module in core.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith("assay.core"), (
                    module.name,
                    name,
                )
