"""``assay trace`` and ``assay watermark embed/detect``: registry glue around ``assay.watermark``
(which registered version is this suspect, and how sure).
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "TraceReport": "assay.tracing.trace",
    "trace_suspect": "assay.tracing.trace",
    "detect_file": "assay.tracing.watermark_ops",
    "embed_file": "assay.tracing.watermark_ops",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
