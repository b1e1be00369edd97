"""Parsing the names users type for models and datasets.

* models: ``models:/NAME/V``, ``models:/NAME@ALIAS``, ``NAME/V``, ``NAME@ALIAS``;
* datasets: ``dataset:NAME@V``, ``NAME@V`` (``@latest`` allowed where a version is optional).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assay.core.errors import AssayError

_NAME = r"[A-Za-z0-9][A-Za-z0-9._\-]{0,199}"
_MODEL_RE = re.compile(
    rf"^(?:models:/)?(?P<name>{_NAME})(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_\-]+))$"
)
_DATASET_RE = re.compile(rf"^(?:dataset:)?(?P<name>{_NAME})(?:@(?P<version>\d+|latest))?$")
NAME_RE = re.compile(rf"^{_NAME}$")


def check_name(name: str, what: str = "model") -> str:
    """A registry name: letters, digits, '.', '_', '-' (max 200)."""
    if not NAME_RE.match(name or ""):
        raise AssayError(f"invalid {what} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class ModelRef:
    """A model version by number or by alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return (
            f"models:/{self.name}/{self.version}"
            if self.version
            else f"models:/{self.name}@{self.alias}"
        )


@dataclass(frozen=True)
class DatasetRef:
    """A dataset version; ``version`` None means the newest."""

    name: str
    version: str | None = None

    def __str__(self) -> str:
        return f"dataset:{self.name}@{self.version or 'latest'}"


def is_model_uri(text: str) -> bool:
    return text.startswith("models:/")


def is_dataset_uri(text: str) -> bool:
    return text.startswith("dataset:")


def model_name(text: str) -> str:
    """A model's name given as ``NAME`` or ``models:/NAME`` (not checked: the store decides)."""
    return text.removeprefix("models:/")


def split_subject(text: str) -> tuple[str, str]:
    """(kind, name) of ``dataset:NAME`` (a dataset) or ``NAME`` / ``models:/NAME`` (a model)."""
    if is_dataset_uri(text):
        return "dataset", text[len("dataset:") :]
    return "model", model_name(text)


def parse_model_ref(text: str) -> ModelRef:
    match = _MODEL_RE.match(text.strip())
    if not match:
        raise AssayError(
            f"not a model version: {text!r} (expected models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    return ModelRef(match["name"], match["version"], match["alias"])


def parse_dataset_ref(text: str, *, require_version: bool = False) -> DatasetRef:
    match = _DATASET_RE.match(text.strip())
    if not match:
        raise AssayError(f"not a dataset version: {text!r} (expected NAME@VERSION)")
    version = match["version"]
    if version == "latest":
        version = None
    if require_version and version is None:
        raise AssayError(f"{text!r} needs a version: NAME@VERSION")
    return DatasetRef(match["name"], version)
