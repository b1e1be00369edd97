"""ARCHITECTURE.md stays true to the code: each package's public API (``__all__``) is what the map
lists, every exported name resolves, no folder grows past 20 modules, and the CLI imports no
private (underscore) module or name of another package."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULES = 20


def _package_dirs() -> dict[str, str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-dir"]


def _documented_api() -> dict[str, set[str]]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- public-api:begin -->", 1)[1].split("<!-- public-api:end -->", 1)[0]
    api: dict[str, set[str]] = {}
    for line in block.strip().splitlines():
        match = re.match(r"- `(assay\.\w+)`: (.*)$", line)
        assert match, f"unparsed public-API line: {line!r}"
        api[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return api


DOCUMENTED = _documented_api()


@pytest.mark.parametrize("package", sorted(DOCUMENTED))
def test_public_api_is_what_architecture_lists(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    if package == "assay.watermark":  # documented by reference to its __init__
        assert exported
    else:
        assert exported == DOCUMENTED[package]
    for name in exported:
        assert getattr(module, name) is not None, f"{package}.{name} does not resolve"


def test_every_library_package_is_documented() -> None:
    libraries = {name for name in _package_dirs() if name not in ("assay.cli", "assay.playbooks")}
    documented = set(DOCUMENTED)
    assert libraries - {"assay.testing"} <= documented, libraries - documented


@pytest.mark.parametrize("folder", sorted(set(_package_dirs().values())))
def test_no_folder_holds_more_than_twenty_modules(folder: str) -> None:
    modules = [p for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES, f"{folder}/ holds {len(modules)} modules"


def test_the_cli_imports_no_private_name_of_another_package() -> None:
    offenders = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if not node.module.startswith("assay.") or node.module.startswith("assay.cli"):
                continue
            parts = node.module.split(".")
            private = [p for p in parts if p.startswith("_")]
            private += [a.name for a in node.names if a.name.startswith("_")]
            if private:
                offenders.append(f"{path.name}:{node.lineno} {node.module} {private}")
    assert not offenders, offenders
