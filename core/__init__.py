"""Dependency-free foundation shared by every assay layer: the error hierarchy, settings, state
names, refs, canonical and bounded JSON, atomic and bounded file I/O, lazy exports.

It sits below every other package so that each can raise ``AssayError`` subclasses without
importing a layer above it. Names are imported lazily, like every package's.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "AssayError": "assay.core.errors",
    "ConfigError": "assay.core.errors",
    "FormatError": "assay.core.errors",
    "IntegrityError": "assay.core.errors",
    "NotFoundError": "assay.core.errors",
    "Refusal": "assay.core.errors",
    "RefusedError": "assay.core.errors",
    "UnsafeInputError": "assay.core.errors",
    "Settings": "assay.core.settings",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
