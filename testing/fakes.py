"""Supported in-memory fakes of the playbook actions, for tests, demos and playbook authors.

``fake_actions(FakeRegistry())`` gives every action name in :data:`assay.incident.actions.SPECS`:
fakes over an in-memory registry (lineage, states, aliases, keys, suspect files) plus the real
``notify`` and ``report.write``. The fakes follow the same specs (parameters, outputs, idempotent
re-runs) as the registry-backed actions, so a playbook can be run end to end without a store or
MLflow. ``FakeRegistry.events`` lists every state change, for idempotency checks. Nothing here is
used in production code paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import NotFoundError, RefusedError
from assay.incident.actions import (
    ActionContext,
    ActionRegistry,
    SpecAction,
    builtin_actions,
    format_value,
)

__all__ = ["FakeRegistry", "FakeVersion", "fake_actions"]

_VERSION_RE = re.compile(r"^(?P<name>[^/@\s]+)/(?P<version>\d+)$")


@dataclass
class FakeVersion:
    version: int
    state: str = "known-good"
    datasets: list[str] = field(default_factory=list)
    parent: str | None = None  # "NAME/V" it was fine-tuned from
    tags: set[str] = field(default_factory=set)
    key_id: str = "key-1"
    signed_at: str = "2024-01-01T00:00:00+00:00"
    bytes_ok: bool = True


@dataclass
class FakeRegistry:
    """An in-memory registry with just enough behaviour for the playbooks: lineage, states, aliases,
    keys and suspect files. ``events`` lists every state change (for idempotency checks)."""

    models: dict[str, dict[int, FakeVersion]] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    restricted: dict[str, str] = field(default_factory=dict)  # serving client -> block|throttle
    datasets: dict[str, str] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # key id -> compromised_since
    suspects: dict[str, tuple[str, float]] = field(default_factory=dict)  # path -> ("m/v", p)
    events: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, model: str, version: int, **kw: Any) -> FakeVersion:
        v = FakeVersion(version, **kw)
        self.models.setdefault(model, {})[version] = v
        for ds in v.datasets:
            self.datasets.setdefault(ds, "registered")
        return v

    def version(self, ref: str) -> tuple[str, FakeVersion]:
        m = _VERSION_RE.match(str(ref))
        if not m or m["name"] not in self.models:
            raise NotFoundError(f"no model version '{ref}'")
        try:
            return m["name"], self.models[m["name"]][int(m["version"])]
        except KeyError:
            raise NotFoundError(f"no model version '{ref}'") from None

    def refs(self) -> list[str]:
        return [f"{n}/{v}" for n, vs in sorted(self.models.items()) for v in sorted(vs)]

    def signature_ok(self, v: FakeVersion) -> bool:
        since = self.revoked.get(v.key_id)
        return v.bytes_ok and (since is None or v.signed_at < since)

    def clean(self, name: str, v: FakeVersion, avoid: set[str], tag: str | None) -> bool:
        if v.state != "known-good" or f"{name}/{v.version}" in avoid:
            return False
        if any(self.datasets.get(d) == "quarantined" for d in v.datasets):
            return False
        if v.parent and self.version(v.parent)[1].state in ("quarantined", "compromised"):
            return False
        return self.signature_ok(v) and (tag is None or tag in v.tags)

    def radius(self, source: str) -> tuple[list[str], list[str]]:
        """(direct, descendants) of ``dataset:NAME@V`` or ``model:NAME/V``."""
        kind, _, ref = str(source).partition(":")
        if kind == "dataset":
            if ref not in self.datasets:
                raise NotFoundError(f"no dataset version '{ref}'")
            direct = {r for r in self.refs() if ref in self.version(r)[1].datasets}
        elif kind == "model":
            self.version(ref)
            direct = {ref}
        else:
            raise RefusedError(
                f"blast radius source must be dataset:NAME@V or model:NAME/V: {source}"
            )
        hit, grew = set(direct), True
        while grew:  # descendants, transitively
            more = {r for r in self.refs() if self.version(r)[1].parent in hit} - hit
            hit |= more
            grew = bool(more)
        return sorted(direct), sorted(hit - direct)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _FakeAction(SpecAction):
    def __init__(self, name: str, fn: Callable[..., dict[str, Any]], reg: FakeRegistry) -> None:
        super().__init__(name)
        self._fn, self._reg = fn, reg
        self.calls: list[dict[str, Any]] = []

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(dict(params))
        return self._fn(self._reg, ctx, dict(params))


def _blast_radius(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    direct, descendants = reg.radius(p["source"])
    versions = sorted(direct + descendants)
    models = sorted({v.split("/")[0] for v in versions})
    aliases = [
        {"model": m, "alias": a, "version": n}
        for (m, a), n in sorted(reg.aliases.items())
        if f"{m}/{n}" in versions
    ]
    return {
        "versions": versions,
        "direct": direct,
        "descendants": descendants,
        "models": models,
        "aliases": aliases,
        "summary": f"{len(versions)} version(s) of {len(models)} model(s) affected",
    }


def _quarantine(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    changed = reg.datasets.get(p["dataset"]) != "quarantined"
    if changed:
        reg.datasets[p["dataset"]] = "quarantined"
        reg.events.append(("quarantine", p["dataset"], ctx.incident_id))
    return {
        "dataset": p["dataset"],
        "state": "quarantined",
        "changed": changed,
        "summary": f"dataset {p['dataset']} quarantined",
    }


def _freeze(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    models = _as_list(p["models"])
    new = [m for m in models if m not in reg.frozen]
    for m in new:
        reg.frozen.add(m)
        reg.events.append(("freeze", m))
    return {"frozen": models, "changed": bool(new), "summary": f"frozen: {format_value(models)}"}


def _restrict(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    client, mode = str(p["client"]), str(p["mode"])
    changed = reg.restricted.get(client) != mode
    if changed:
        reg.restricted[client] = mode
        reg.events.append(("restrict", client, mode))
    return {"client": client, "mode": mode, "changed": changed, "summary": f"{mode}: {client}"}


def _verify(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    refs = reg.refs()
    if p.get("model"):
        refs = [r for r in refs if r.split("/")[0] == p["model"]]
    if p.get("versions") is not None:
        refs = [r for r in refs if r in _as_list(p["versions"])]
    if p.get("key_id"):
        refs = [r for r in refs if reg.version(r)[1].key_id == p["key_id"]]
    results = []
    for r in refs:
        v = reg.version(r)[1]
        reason = (
            None
            if reg.signature_ok(v)
            else ("bytes changed" if not v.bytes_ok else "signed after key compromise")
        )
        results.append({"version": r, "ok": reason is None, "reason": reason})
    failed = [x["version"] for x in results if not x["ok"]]
    aliases = [
        {"model": m, "alias": a, "version": n}
        for (m, a), n in sorted(reg.aliases.items())
        if f"{m}/{n}" in failed
    ]
    return {
        "checked": len(results),
        "passed": [x["version"] for x in results if x["ok"]],
        "failed": failed,
        "results": results,
        "aliases": aliases,
        "ok": not failed,
        "summary": f"{len(results) - len(failed)}/{len(results)} version(s) verify",
    }


def _mark(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    versions = _as_list(p["versions"])
    state = p["state"]
    if state not in ("known-good", "quarantined", "compromised"):
        raise RefusedError(f"unknown state '{state}'")
    changed = []
    for ref in versions:
        v = reg.version(ref)[1]
        if v.state != state:
            v.state = state
            changed.append(ref)
            reg.events.append(("mark", ref, state))
    return {
        "versions": versions,
        "state": state,
        "changed": bool(changed),
        "summary": f"{format_value(versions)} marked {state}",
    }


def _rollback(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    model, alias = p["model"], p.get("alias") or "production"
    avoid = {str(a) for a in _as_list(p.get("avoid"))}
    tag = p.get("require_tag")
    if (model, alias) not in reg.aliases:
        raise NotFoundError(f"model '{model}' has no alias '{alias}'")
    current = reg.aliases[(model, alias)]
    versions = reg.models[model]
    if reg.clean(model, versions[current], avoid, tag):
        return {
            "model": model,
            "alias": alias,
            "from_version": current,
            "to_version": current,
            "changed": False,
            "summary": f"{model}@{alias} already on clean v{current}",
        }
    good = [
        n
        for n in sorted(versions, reverse=True)
        if n < current and reg.clean(model, versions[n], avoid, tag)
    ]
    if not good:
        raise RefusedError(
            f"no known-good version of {model} older than v{current} to roll back to"
        )
    reg.aliases[(model, alias)] = good[0]
    reg.events.append(("rollback", model, alias, str(good[0])))
    return {
        "model": model,
        "alias": alias,
        "from_version": current,
        "to_version": good[0],
        "changed": True,
        "summary": f"{model}@{alias}: v{current} -> v{good[0]}",
    }


def _revoke(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    changed = reg.revoked.get(p["key_id"]) != p["compromised_since"]
    if changed:
        reg.revoked[p["key_id"]] = p["compromised_since"]
        reg.events.append(("revoke", p["key_id"]))
    return {
        "key_id": p["key_id"],
        "compromised_since": p["compromised_since"],
        "changed": changed,
        "summary": f"key {p['key_id']} revoked",
    }


def _resign(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    key = p.get("key_id") or "key-new"
    done = []
    for ref in _as_list(p["versions"]):
        v = reg.version(ref)[1]
        if not v.bytes_ok:
            raise RefusedError(f"{ref} does not verify: refusing to re-sign it")
        if v.key_id != key:
            v.key_id, v.signed_at = key, "2099-01-01T00:00:00+00:00"
            reg.events.append(("resign", ref, key))
        done.append(ref)
    return {"resigned": done, "key_id": key, "summary": f"re-signed {len(done)} version(s)"}


def _trace(reg: FakeRegistry, ctx: ActionContext, p: dict[str, Any]) -> dict[str, Any]:
    hit = reg.suspects.get(str(p["path"]))
    if hit is None:
        return {"path": p["path"], "match": False, "p_value": 1.0, "summary": "no match"}
    ref, p_value = hit
    return {
        "path": p["path"],
        "match": True,
        "version": ref,
        "p_value": p_value,
        "method": "watermark",
        "summary": f"matches {ref} (p={p_value:.2e})",
    }


_FAKES: dict[str, Callable[..., dict[str, Any]]] = {
    "lineage.blast_radius": _blast_radius,
    "dataset.quarantine": _quarantine,
    "registry.freeze": _freeze,
    "registry.verify": _verify,
    "registry.mark": _mark,
    "registry.rollback": _rollback,
    "keys.revoke": _revoke,
    "keys.resign": _resign,
    "watermark.trace": _trace,
    "serve.restrict": _restrict,
}


def fake_actions(registry: FakeRegistry | None = None) -> ActionRegistry:
    """Every action name in ``SPECS``: in-memory fakes over ``registry`` plus the real ``notify``
    and ``report.write``. For tests and demos only."""
    reg = registry if registry is not None else FakeRegistry()
    actions = builtin_actions()
    for name, fn in _FAKES.items():
        actions.register(_FakeAction(name, fn, reg))
    return actions
