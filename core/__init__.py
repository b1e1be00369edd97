"""Dependency-free foundation shared by every assay layer: the error hierarchy and settings.

It sits below ``assay.watermark`` and ``assay.registry`` so that every layer can raise
``AssayError`` subclasses without importing a layer above it.
"""

from assay.core.errors import (
    AssayError,
    ConfigError,
    FormatError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    UnsafeInputError,
)
from assay.core.settings import Settings

__all__ = [
    "AssayError",
    "ConfigError",
    "FormatError",
    "IntegrityError",
    "NotFoundError",
    "RefusedError",
    "Settings",
    "UnsafeInputError",
]
