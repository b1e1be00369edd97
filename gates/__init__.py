"""Measured pre-deployment gates, dataset scans and the ML-BOM (``assay.gates``).

Nothing heavy is imported here: ART, cleanlab, pandas and cyclonedx load inside the gate or
command that needs them.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "GateRun": "assay.gates.runner",
    "run_gates": "assay.gates.runner",
    "DatasetScan": "assay.gates.dataset_scan",
    "scan_dataset": "assay.gates.dataset_scan",
    "BomResult": "assay.gates.bom",
    "build_bom": "assay.gates.bom",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
