"""Incidents: the YAML playbook schema and templates, the engine that runs and resumes them, its
recorders, the actions (registry, rollback, notify, report) and the incident report.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "Playbook": "assay.incident.playbook",
    "builtin_playbooks": "assay.incident.playbook",
    "load_playbook": "assay.incident.playbook",
    "run_incident": "assay.incident.engine",
    "resume_incident": "assay.incident.engine",
    "build_report": "assay.incident.report",
    "render_report": "assay.incident.report",
    "list_incidents": "assay.incident.service",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
