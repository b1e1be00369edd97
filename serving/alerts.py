"""Serving alerts: stored through the writer, listed by `assay serve alerts`, optionally
starting the ``model-extraction`` playbook."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.registry.facade import Registry
    from assay.serving._follower import Service

__all__ = ["list_alerts", "queue_alert"]

log = logging.getLogger(__name__)


def queue_alert(service: Service, client: str, kind: str, detail: dict[str, Any]) -> None:
    """Record an alert (row + ``serve.alert`` audit event) through the service's writer."""
    from assay.store.models import ServeAlert

    name = service.name
    version = service.current.version if service.current else None
    evidence = {**detail, "model": name, "version": version}
    log.warning("serving: %s alert for client %r: %s", kind, client, evidence)

    def job(session: Any) -> None:
        session.add(
            ServeAlert(client=client, model_name=name, kind=kind, detail=json.dumps(evidence))
        )
        service.registry.record(
            session, "serve.alert", f"serve-client:{client}", {"kind": kind, **evidence}
        )

    service.writer.put(job, important=True)
    if kind == "extraction" and service.policy.extraction.playbook:
        import threading

        threading.Thread(
            target=_start_playbook, args=(service.registry, client, name, evidence), daemon=True
        ).start()


def _start_playbook(registry: Registry, client: str, model: str, evidence: dict[str, Any]) -> None:
    try:
        from assay.incident.service import run

        result = run(
            registry,
            "model-extraction",
            {"client": client, "model": model, "evidence": json.dumps(evidence, sort_keys=True)},
            assume_yes=True,
        )
        log.warning("serving: model-extraction incident %s: %s", result.incident_id, result.status)
    except Exception as exc:  # noqa: BLE001 - the alert is recorded either way
        log.warning("serving: could not start the model-extraction playbook: %s", exc)


def list_alerts(
    registry: Registry, *, limit: int = 100, client: str | None = None
) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from assay.core.canonical import iso_utc
    from assay.store.models import ServeAlert

    with registry.store.session(readonly=True) as session:
        query = select(ServeAlert).order_by(ServeAlert.id.desc()).limit(limit)
        if client:
            query = query.where(ServeAlert.client == client)
        return [
            {
                "id": r.id,
                "at": iso_utc(r.at),
                "client": r.client,
                "model": r.model_name,
                "kind": r.kind,
                "status": r.status,
                "detail": json.loads(r.detail),
            }
            for r in session.scalars(query)
        ]
