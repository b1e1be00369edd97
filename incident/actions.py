"""Playbook actions: the protocol, the registry of names and ``notify``.

Every step of a playbook names an action. An action declares the parameters it takes (``required``
and ``optional``; the validator refuses others), says in one line what it would do (``describe``, for
``--dry-run``), and does it (``run``), returning its outputs as a JSON-able dict. ``run`` must be
idempotent: after a crash the engine runs an unfinished step again, and the end state must be the same
as if it had run once. Actions that change state set ``mutates = True``. By convention outputs carry
a one-line ``summary``; the report shows it under "what changed".

The names and parameters of all built-in actions are fixed here in ``SPECS`` so that playbooks can be
validated before the real implementations (registry, keys, watermark) are wired in
(:func:`spec_actions`); supported in-memory fakes of the same specs live in :mod:`assay.testing.fakes`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from assay.core.errors import NotFoundError, RefusedError
from assay.incident import _notify

__all__ = [
    "SPECS",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "ActionSpec",
    "NotifyAction",
    "SpecAction",
    "builtin_actions",
    "describe_params",
    "format_value",
    "spec_actions",
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


def format_value(value: Any) -> str:
    """A parameter value as summaries show it: lists joined, ``(none)`` / ``<unset>``."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return "<unset>" if value is None else str(value)


def describe_params(spec: ActionSpec, params: Mapping[str, Any]) -> str:
    """The spec's dry-run line filled in with (possibly partly rendered) params."""
    values = _Blank({k: format_value(v) for k, v in params.items() if v is not None})
    values.setdefault("alias", "production")
    values["tag"] = f" tagged {params['require_tag']}" if params.get("require_tag") else ""
    values.setdefault("formats", "md, json")
    values.setdefault("directory", "the incident folder")
    values.setdefault("key_id", "the active signing key")
    if "model" in params:
        scope = f"every version of {params['model']}"
    elif "versions" in params:
        scope = format_value(params["versions"])
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
    from assay.incident.report import ReportWriteAction

    return ActionRegistry([NotifyAction(), ReportWriteAction()])


def spec_actions() -> ActionRegistry:
    """Every action name in ``SPECS``: the real ``notify`` and ``report.write``, the others as their
    specs only (nothing to run). What validating a playbook needs (``assay playbook validate``)."""
    actions = builtin_actions()
    for name in SPECS:
        if name not in actions:
            actions.register(SpecAction(name))
    return actions
