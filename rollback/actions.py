"""Playbook actions: the protocol, the registry of names, ``notify``, and in-memory fakes for tests.

Every step of a playbook names an action. An action declares the parameters it takes (``required``
and ``optional``; the validator refuses others), says in one line what it would do (``describe``, for
``--dry-run``), and does it (``run``), returning its outputs as a JSON-able dict. ``run`` must be
idempotent: after a crash the engine runs an unfinished step again, and the end state must be the same
as if it had run once. Actions that change state set ``mutates = True``. By convention outputs carry
a one-line ``summary``; the report shows it under "what changed".

The names and parameters of all built-in actions are fixed here in ``SPECS`` so that playbooks can be
validated before the real implementations (registry, keys, watermark) are wired in; the fakes at the
bottom implement the same specs over an in-memory registry (``FakeRegistry``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from assay.core.errors import NotFoundError, RefusedError
from assay.rollback import notify as _notify

__all__ = [
    "SPECS",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "ActionSpec",
    "FakeRegistry",
    "NotifyAction",
    "SpecAction",
    "builtin_actions",
    "describe_params",
    "fake_actions",
]


@dataclass
class ActionContext:
    """What an action knows about the run it is part of.

    ``services`` carries whatever the caller wires in (the registry facade, settings...): actions look
    their dependencies up there. ``warn()`` marks the step ``succeeded-with-warnings``.
    """

    incident_id: str
    playbook_id: str
    step_id: str
    item_index: int | None = None
    item: Any = None
    actor: str = "unknown"
    services: Mapping[str, Any] = field(default_factory=dict)
    recorder: Any = None  # the engine's IncidentRecorder (report.write reads the timeline)
    playbook: Any = None  # the Playbook being run
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def delivery_id(self) -> str:
        """Stable id of this step (and item) in this incident: same value when re-run."""
        suffix = "" if self.item_index is None else f"#{self.item_index}"
        return f"{self.incident_id}:{self.step_id}{suffix}"


@runtime_checkable
class Action(Protocol):
    name: str
    required: frozenset[str]
    optional: frozenset[str]
    mutates: bool

    def describe(self, params: Mapping[str, Any]) -> str: ...

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ActionSpec:
    """Name, parameters and dry-run text of an action; ``summary`` is formatted with the params."""

    name: str
    required: frozenset[str]
    optional: frozenset[str]
    mutates: bool
    summary: str


def _spec(name: str, required: str, optional: str, mutates: bool, summary: str) -> ActionSpec:
    return ActionSpec(
        name, frozenset(required.split()), frozenset(optional.split()), mutates, summary
    )


# The contract between playbooks and the real implementations. Parameter meanings:
#   dataset: "NAME@V"; model: "NAME"; versions: list of "NAME/V"; source: "dataset:NAME@V" or
#   "model:NAME/V"; state: known-good | quarantined | compromised; key_id: a key id (or unique prefix);
#   compromised_since: ISO 8601 time; alias: serving alias (default "production").
# Outputs the playbooks read (besides ``summary``):
#   lineage.blast_radius -> versions, direct, descendants (lists of "NAME/V"), models (names),
#                           aliases ([{model, alias, version}] serving an affected version)
#   registry.verify      -> passed, failed (lists of "NAME/V"), results ([{version, ok, reason}]),
#                           aliases ([{model, alias, version}] serving a failed version), checked, ok
#   registry.rollback    -> model, alias, from_version, to_version, changed
#   watermark.trace      -> match (bool), version ("NAME/V"), p_value, method
#   serve.restrict       -> client, mode (block | throttle), changed  (assay serve's API clients)
SPECS: dict[str, ActionSpec] = {
    s.name: s
    for s in (
        _spec(
            "lineage.blast_radius",
            "source",
            "",
            False,
            "find every model version trained on or derived from {source}",
        ),
        _spec("dataset.quarantine", "dataset reason", "", True, "quarantine dataset {dataset}"),
        _spec("registry.freeze", "models", "reason", True, "freeze model(s) {models}"),
        _spec(
            "registry.verify",
            "",
            "model versions key_id",
            False,
            "re-hash and verify signatures of {scope}",
        ),
        _spec(
            "registry.mark",
            "versions state",
            "reason",
            True,
            "mark {versions} as {state}",
        ),
        _spec(
            "registry.rollback",
            "model",
            "alias require_tag avoid reason",
            True,
            "move {model}@{alias} to the newest known-good version{tag}",
        ),
        _spec(
            "keys.revoke",
            "key_id compromised_since",
            "reason",
            True,
            "revoke key {key_id} as compromised since {compromised_since}",
        ),
        _spec(
            "keys.resign",
            "versions",
            "key_id",
            True,
            "re-sign {versions} with key {key_id}",
        ),
        _spec(
            "watermark.trace",
            "path",
            "models",
            False,
            "trace {path} against the registry (hash, watermark, similarity)",
        ),
        _spec(
            "serve.restrict",
            "client mode",
            "rate burst reason",
            True,
            "{mode} serving client {client}",
        ),
        _spec(
            "notify",
            "message",
            "webhook secret_env file timeout severity data",
            False,
            "notify {channels}: {message}",
        ),
        _spec(
            "report.write",
            "",
            "formats directory",
            False,
            "write the incident report ({formats}) to {directory}",
        ),
    )
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return "<unset>" if value is None else str(value)


def describe_params(spec: ActionSpec, params: Mapping[str, Any]) -> str:
    """The spec's dry-run line filled in with (possibly partly rendered) params."""
    values = _Blank({k: _fmt(v) for k, v in params.items() if v is not None})
    values.setdefault("alias", "production")
    values["tag"] = f" tagged {params['require_tag']}" if params.get("require_tag") else ""
    values.setdefault("formats", "md, json")
    values.setdefault("directory", "the incident folder")
    values.setdefault("key_id", "the active signing key")
    if "model" in params:
        scope = f"every version of {params['model']}"
    elif "versions" in params:
        scope = _fmt(params["versions"])
    else:
        scope = "every registered version"
    if params.get("key_id"):
        scope += f" signed by key {params['key_id']}"
    values["scope"] = scope
    channels = [c for c in ("webhook", "file") if params.get(c)]
    values["channels"] = " and ".join(channels) if channels else "(no channel)"
    return spec.summary.format_map(values)


class SpecAction:
    """Base for actions that follow a spec in ``SPECS``: subclass and implement ``run``."""

    spec: ActionSpec

    def __init__(self, spec: ActionSpec | str | None = None) -> None:
        if spec is not None:
            self.spec = SPECS[spec] if isinstance(spec, str) else spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def required(self) -> frozenset[str]:
        return self.spec.required

    @property
    def optional(self) -> frozenset[str]:
        return self.spec.optional

    @property
    def mutates(self) -> bool:
        return self.spec.mutates

    def describe(self, params: Mapping[str, Any]) -> str:
        return describe_params(self.spec, params)

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ActionRegistry:
    """Actions by name."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[str, Action] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action, *, replace: bool = False) -> None:
        if action.name in self._actions and not replace:
            raise RefusedError(f"action '{action.name}' is already registered")
        self._actions[action.name] = action

    def get(self, name: str) -> Action:
        try:
            return self._actions[name]
        except KeyError:
            raise NotFoundError(f"unknown action '{name}'{self.suggest(name)}") from None

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._actions, n=1)
        return f" (did you mean '{close[0]}'?)" if close else ""

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self):
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)


# --------------------------------------------------------------------------- notify


class NotifyAction(SpecAction):
    """POST signed canonical JSON to a webhook and/or append a JSON line to a file.

    Params: ``message`` (required); ``webhook`` (http(s) URL), ``secret_env`` (name of the environment
    variable holding the HMAC secret), ``file`` (JSON-lines path), ``timeout`` (seconds, default 5),
    ``severity`` (default: the playbook's), ``data`` (extra JSON-able mapping). Never raises on delivery
    failure: outputs ``delivered: false`` and ``error``, and the step gets a warning.
    """

    spec = SPECS["notify"]

    def run(self, ctx: ActionContext, params: Mapping[str, Any]) -> dict[str, Any]:
        playbook = ctx.playbook
        payload = {
            "incident": ctx.incident_id,
            "playbook": ctx.playbook_id,
            "step": ctx.step_id,
            "severity": params.get("severity") or getattr(playbook, "severity", None),
            "threats": list(getattr(playbook, "threats", ()) or ()),
            "message": str(params.get("message", "")),
            "data": params.get("data") or {},
        }
        try:
            timeout = float(params.get("timeout") or _notify.DEFAULT_TIMEOUT)
        except (TypeError, ValueError):
            timeout = _notify.DEFAULT_TIMEOUT
        out = _notify.send_notification(
            payload,
            delivery_id=ctx.delivery_id,
            webhook=params.get("webhook") or None,
            secret_env=params.get("secret_env") or None,
            file=params.get("file") or None,
            timeout=timeout,
        )
        if not out["delivered"]:
            ctx.warn(f"notification not delivered: {out['error']}")
            out["summary"] = f"notification NOT delivered: {out['error']}"
        else:
            out["summary"] = "notification delivered"
        return out


def builtin_actions() -> ActionRegistry:
    """The actions implemented in this package: ``notify`` and ``report.write``.

    The registry-backed actions (quarantine, freeze, verify, mark, rollback, keys, trace) are added by
    the caller with ``register``.
    """
    from assay.rollback.report import ReportWriteAction

    return ActionRegistry([NotifyAction(), ReportWriteAction()])


# --------------------------------------------------------------------------- fakes for tests

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
    return {"frozen": models, "changed": bool(new), "summary": f"frozen: {_fmt(models)}"}


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
        "summary": f"{_fmt(versions)} marked {state}",
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
