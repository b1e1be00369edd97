"""The playbook actions, implemented on the real registry.

Each action is idempotent: running it again after a crash gives the same end state (a state that
is already set, an alias already moved, a key already revoked are no-ops reported with
``changed: false``). Versions are passed as ``NAME/V``, datasets as ``NAME@V``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError
from assay.core.refs import parse_dataset_ref
from assay.incident.actions import SPECS, ActionContext, ActionRegistry, SpecAction, builtin_actions

if TYPE_CHECKING:
    from assay.registry.facade import Registry


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _split_version(ref: str) -> tuple[str, str]:
    text = str(ref).removeprefix("models:/").removeprefix("model:")
    name, sep, version = text.rpartition("/")
    if not sep or not name or not version:
        raise AssayError(f"not a model version: {ref!r} (expected NAME/VERSION)")
    return name, version


class _RegistryAction(SpecAction):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry


class BlastRadius(_RegistryAction):
    spec = SPECS["lineage.blast_radius"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.lineage import blast_radius

        source = str(params["source"])
        report = blast_radius(self.registry, source).to_dict()
        versions = report.get("versions", [])
        return {
            **report,
            "versions": versions,
            "models": report.get("models", sorted({_split_version(v)[0] for v in versions})),
            "aliases": report.get("aliases", []),
            "summary": f"{len(versions)} affected version(s), {len(report.get('aliases', []))} serving alias(es)",
            "changed": False,
        }


class QuarantineDataset(_RegistryAction):
    spec = SPECS["dataset.quarantine"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.versions import require_artifact, set_state

        ref = parse_dataset_ref(
            str(params["dataset"]).removeprefix("dataset:"), require_version=True
        )
        with self.registry.store.session() as session:
            artifact = require_artifact(session, "dataset", ref.name, ref.version)
            changed = set_state(
                self.registry,
                session,
                artifact,
                "quarantined",
                reason=params.get("reason"),
                incident_id=ctx.incident_id,
            )
        return {
            "dataset": f"{ref.name}@{ref.version}",
            "changed": changed,
            "summary": f"dataset {ref.name}@{ref.version} quarantined",
        }


class Freeze(_RegistryAction):
    spec = SPECS["registry.freeze"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.states import freeze

        models = _as_list(params.get("models"))
        for name in models:
            freeze(
                self.registry,
                name,
                reason=params.get("reason") or f"incident {ctx.incident_id}",
                incident_id=ctx.incident_id,
            )
        return {
            "frozen": models,
            "changed": bool(models),
            "summary": f"frozen: {', '.join(models) or 'none'}",
        }


class Verify(_RegistryAction):
    spec = SPECS["registry.verify"]

    def _targets(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        from sqlalchemy import select

        from assay.store.models import Artifact, Signature

        versions = _as_list(params.get("versions"))
        if versions:
            return [_split_version(v) for v in versions]
        model, key_id = params.get("model"), params.get("key_id")
        with self.registry.store.session(readonly=True) as session:
            query = select(Artifact).where(Artifact.kind == "model")
            if model:
                query = query.where(Artifact.name == str(model))
            targets = []
            for artifact in session.scalars(query):
                if key_id:
                    signers = set(
                        session.scalars(
                            select(Signature.key_id).where(Signature.artifact_id == artifact.id)
                        )
                    )
                    if not any(k.startswith(str(key_id).lower()) for k in signers):
                        continue
                targets.append((artifact.name, artifact.version or ""))
        return sorted(targets, key=lambda t: (t[0], int(t[1]) if t[1].isdigit() else 0))

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.uri_verify import verify_version

        results, passed, failed = [], [], []
        for name, version in self._targets(params):
            report = verify_version(self.registry, name, version)
            ref = f"{name}/{version}"
            (passed if report.ok else failed).append(ref)
            results.append(
                {"version": ref, "ok": report.ok, "reason": None if report.ok else report.summary()}
            )
        aliases = []
        for name in sorted({_split_version(f)[0] for f in failed}):
            for alias, version in self.registry.backend.aliases(name).items():
                if f"{name}/{version}" in failed:
                    aliases.append({"model": name, "alias": alias, "version": version})
        return {
            "passed": passed,
            "failed": failed,
            "results": results,
            "aliases": aliases,
            "checked": len(results),
            "ok": not failed,
            "changed": False,
            "summary": f"{len(passed)} verified, {len(failed)} failed"
            + (f": {', '.join(failed)}" if failed else ""),
        }


class Mark(_RegistryAction):
    spec = SPECS["registry.mark"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.states import mark

        state = str(params["state"])
        versions = _as_list(params.get("versions"))
        for ref in versions:
            name, version = _split_version(ref)
            mark(
                self.registry,
                name,
                version,
                state,
                reason=params.get("reason"),
                incident_id=ctx.incident_id,
            )
        return {
            "versions": versions,
            "state": state,
            "changed": bool(versions),
            "summary": f"{state}: {', '.join(versions) or 'none'}",
        }


class Rollback(_RegistryAction):
    spec = SPECS["registry.rollback"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.rollback.execute import rollback

        result = rollback(
            self.registry,
            str(params["model"]),
            alias=str(params.get("alias") or "production"),
            reason=str(params.get("reason") or f"incident {ctx.incident_id}"),
            require_label=params.get("require_tag") or None,
            avoid=tuple(_as_list(params.get("avoid"))),
            incident_id=ctx.incident_id,
        )
        out = result.to_dict()
        out.pop("plan", None)
        verb = "moved" if result.moved else "left"
        out["summary"] = (
            result.note
            or f"{result.model}@{result.alias} {verb} {result.from_version} -> {result.to_version}"
        )
        if result.not_quarantined:
            out["summary"] += f" ({result.not_quarantined})"
        return out


class RevokeKey(_RegistryAction):
    spec = SPECS["keys.revoke"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        since = params.get("compromised_since")
        if isinstance(since, str):
            since = datetime.fromisoformat(since.replace("Z", "+00:00"))
        if isinstance(since, datetime) and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        before = self.registry.keys.get(str(params["key_id"]))
        record = self.registry.keys.revoke(
            str(params["key_id"]),
            reason=str(params.get("reason") or f"incident {ctx.incident_id}"),
            compromised_since=since,
        )
        return {
            "key_id": record.key_id,
            "status": record.status,
            "changed": before.to_dict() != record.to_dict(),
            "summary": f"key {record.key_id[:16]} {record.status}",
        }


class Resign(_RegistryAction):
    spec = SPECS["keys.resign"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.resign import resign_version

        resigned, skipped = [], []
        for ref in _as_list(params.get("versions")):
            name, version = _split_version(ref)
            outcome = resign_version(
                self.registry,
                name,
                version,
                key=params.get("key_id") or None,
                reason=f"incident {ctx.incident_id}",
            )
            (resigned if outcome.resigned else skipped).append(ref)
        return {
            "resigned": resigned,
            "skipped": skipped,
            "changed": bool(resigned),
            "summary": f"re-signed {len(resigned)} version(s)"
            + (f", {len(skipped)} already signed" if skipped else ""),
        }


class Trace(_RegistryAction):
    spec = SPECS["watermark.trace"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.tracing.trace import trace_suspect

        report = trace_suspect(
            self.registry, str(params["path"]), models=_as_list(params.get("models")) or None
        )
        best = report.best()
        return {
            **report.to_dict(),
            "match": bool(best and best.verdict == "match"),
            "version": best.ref if best else None,
            "p_value": best.p_corrected if best else None,
            "method": best.method if best else None,
            "changed": False,
            "summary": report.summary(),
        }


class RestrictClient(_RegistryAction):
    """Block or throttle an API client of ``assay serve`` (running servers apply it on their
    next alias check)."""

    spec = SPECS["serve.restrict"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        from assay.registry.serving_clients import block_client, list_clients, throttle_client

        client, mode = str(params["client"]), str(params["mode"])
        reason = params.get("reason") or f"incident {ctx.incident_id}"
        before = next((c for c in list_clients(self.registry) if c.name == client), None)
        if mode == "block":
            if before is not None and before.blocked_at is not None:
                return {
                    "client": client,
                    "mode": mode,
                    "changed": False,
                    "summary": f"{client} already blocked",
                }
            block_client(self.registry, client, reason)
        elif mode == "throttle":
            rate, burst = float(params.get("rate") or 0.1), int(params.get("burst") or 1)
            throttle_client(self.registry, client, rate, burst, reason)
        else:
            raise AssayError(f"serve.restrict mode must be block or throttle, not {mode!r}")
        return {"client": client, "mode": mode, "changed": True, "summary": f"{mode}: {client}"}


_ACTIONS = (
    BlastRadius,
    QuarantineDataset,
    Freeze,
    Verify,
    Mark,
    Rollback,
    RevokeKey,
    Resign,
    Trace,
    RestrictClient,
)


def build_actions(registry: Registry) -> ActionRegistry:
    """Every playbook action, bound to ``registry`` (plus ``notify`` and ``report.write``)."""
    actions = builtin_actions()
    for cls in _ACTIONS:
        actions.register(cls(registry), replace=True)
    return actions
