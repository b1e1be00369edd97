"""Incidents over the real registry: run, resume, list, show and report playbook runs.

The playbook text as started is stored with the incident, so ``resume`` re-runs exactly that
procedure (a built-in id or a file path alike). Audit evidence for the report (the latest signed
checkpoint and an inclusion proof of every event the incident appended) comes from the store.
"""

from __future__ import annotations

import base64
import importlib.resources
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import NotFoundError
from assay.incident._records import Incident, StepRecord
from assay.incident._store_recorder import SqlRecorder
from assay.incident.engine import IncidentResult, resume_incident, run_incident
from assay.incident.playbook import (
    Playbook,
    builtin_playbooks,
    parse_playbook,
    read_playbook_file,
)

if TYPE_CHECKING:
    from assay.incident.actions import ActionRegistry
    from assay.registry.facade import Registry


def playbook_source(ref: str) -> tuple[str, str]:
    """(text, label) of a built-in playbook id or a YAML file path."""
    path = Path(ref).expanduser()
    if path.is_file():
        return read_playbook_file(path), str(ref)
    resource = importlib.resources.files("assay.playbooks") / f"{ref}.yaml"
    if "/" not in ref and resource.is_file():
        return resource.read_text(encoding="utf-8"), f"{ref}.yaml"
    raise NotFoundError(
        f"no playbook {ref!r}: not a file nor a built-in ({', '.join(builtin_playbooks())})"
    )


def actions_for(registry: Registry) -> ActionRegistry:
    from assay.incident._registry_actions import build_actions

    return build_actions(registry)


def load(registry: Registry, ref: str) -> tuple[Playbook, str]:
    text, label = playbook_source(ref)
    return parse_playbook(text, label, actions_for(registry)), text


def _evidence(registry: Registry) -> Callable[[str], dict[str, Any]]:
    """Audit evidence for a report: checkpoint and inclusion proofs of the incident's events."""

    def collect(incident_id: str) -> dict[str, Any]:
        subject = f"incident:{incident_id}"
        size = registry.audit.tree_size()
        events = [
            e
            for e in registry.audit.events(0)
            if e.subject == subject or f'"{incident_id}"' in e.payload
        ]
        proofs = [
            {
                "seq": e.seq,
                "action": e.action,
                "leaf_hash": e.leaf_hash,
                "inclusion_proof": [
                    base64.b64encode(p).decode()
                    for p in registry.audit.inclusion_proof(e.seq, size)
                ],
            }
            for e in events
        ]
        checkpoint = registry.latest_checkpoint()
        return {
            "gate_results": _gate_evidence(registry, incident_id),
            "audit": {
                "tree_size": size,
                "root_hash": registry.audit.root(size).hex(),
                "events": proofs,
                "latest_checkpoint": (
                    {
                        "tree_size": checkpoint.tree_size,
                        "root_hash": checkpoint.root_hash.hex(),
                        "key_id": checkpoint.key_id,
                    }
                    if checkpoint
                    else None
                ),
            },
        }

    return collect


def _gate_evidence(registry: Registry, incident_id: str) -> list[dict[str, Any]]:
    """The gate results recorded for the bytes of the versions the incident's steps name
    (blast radius ``versions``, ``version``/``versions`` inputs); [] without the gates extra."""
    recorder = SqlRecorder(registry)
    named: list[str] = []
    for rec in recorder.get_steps(incident_id):
        out = rec.outputs or {}
        named += [str(v) for v in out.get("versions") or [] if isinstance(v, str)]
    inputs = recorder.get_incident(incident_id).inputs or {}
    for key in ("version", "versions", "model"):
        value = inputs.get(key)
        named += [str(v) for v in (value if isinstance(value, list) else [value]) if v]
    versions = []
    for ref in dict.fromkeys(named):
        name, sep, version = ref.removeprefix("models:/").rpartition("/")
        if sep and name and version.isdigit():
            versions.append((name, version))
    if not versions:
        return []
    try:
        from assay.registry.gate_evidence import report_rows
    except ImportError:  # pragma: no cover - assay.gates is part of every install
        return []
    return report_rows(registry, versions)


def _services(registry: Registry) -> dict[str, Any]:
    return {"registry": registry, "report_evidence": _evidence(registry)}


def run(
    registry: Registry,
    ref: str,
    inputs: Mapping[str, Any],
    *,
    dry_run: bool = False,
    assume_yes: bool = False,
    approve: Callable[..., bool] | None = None,
) -> IncidentResult:
    """Run playbook ``ref`` (built-in id or path) as a new incident, or only plan it."""
    playbook, text = load(registry, ref)
    recorder = SqlRecorder(registry, playbook_source=text)
    return run_incident(
        playbook,
        dict(inputs),
        actions_for(registry),
        recorder,
        dry_run=dry_run,
        approve=approve,
        assume_yes=assume_yes,
        services=_services(registry),
        actor=registry.settings.actor,
    )


def resume(
    registry: Registry,
    incident_id: str,
    *,
    assume_yes: bool = False,
    approve: Callable[..., bool] | None = None,
) -> IncidentResult:
    """Go on from the first unfinished step, with the playbook exactly as it was started."""
    recorder = SqlRecorder(registry)
    incident = recorder.get_incident(incident_id)
    playbook = parse_playbook(
        recorder.playbook_text(incident_id), f"{incident.playbook_id}.yaml", actions_for(registry)
    )
    return resume_incident(
        incident_id,
        actions_for(registry),
        recorder,
        playbook=playbook,
        approve=approve,
        assume_yes=assume_yes,
        services=_services(registry),
        actor=registry.settings.actor,
    )


def list_incidents(registry: Registry) -> list[Incident]:
    return SqlRecorder(registry).list_incidents()


def show(registry: Registry, incident_id: str) -> tuple[Incident, list[StepRecord]]:
    recorder = SqlRecorder(registry)
    return recorder.get_incident(incident_id), recorder.get_steps(incident_id)


def report(registry: Registry, incident_id: str, fmt: str = "md") -> str:
    from assay.incident.report import render_report

    recorder = SqlRecorder(registry)
    incident = recorder.get_incident(incident_id)
    playbook = parse_playbook(recorder.playbook_text(incident_id), f"{incident.playbook_id}.yaml")
    return render_report(
        incident, recorder.get_steps(incident_id), playbook, _evidence(registry)(incident_id), fmt
    )
