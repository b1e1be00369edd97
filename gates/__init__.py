"""Measured pre-deployment gates, dataset scans and the ML-BOM (``assay.gates``).

Nothing heavy is imported here: ART, cleanlab, pandas and cyclonedx load inside the gate or
command that needs them.
"""
