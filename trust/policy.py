"""The store's policy: what assay enforces, versioned in the store and signed by an admin key.

A policy is a small YAML (or JSON) document::

    enforcement: enforce          # default ASSAY_ENFORCE: enforce | warn | off
    protected_aliases: [production]
    allow_unmanaged: false        # may models assay does not manage at all load under enforce?
    roles:                        # which role each action needs (admin holds every role)
      register: signer
      mark-known-good: approver
      mark-bad: responder         # quarantined, compromised
      mark-other: approver        # back to registered
      promote: approver
      rollback: responder
      label: approver
      freeze: responder
      serve-clients: responder    # assay serve's API clients (add, revoke, block, throttle)
    signing:                      # how `assay sign` hashes unless told otherwise
      hash: sha256                # sha256 | blake2b | blake3
      shard_size: null            # bytes: OMS shard serialization (not with blake3)
    gates:                        # measured checks known-good needs, per model name or "*"
      "*": {pickle-scan: {}}
      fraud: {robustness: {eps: 0.1, min_accuracy: 0.7}, privacy: {max_auc: 0.6}}

``assay policy set FILE`` stores it as a signed statement (``urn:assay:policy:v1``) whose signer
must hold the ``admin`` role in the trust list; a policy row that does not verify is tampering and
refuses everything (``IntegrityError``). With no policy set, :data:`DEFAULT_POLICY` applies.
YAML anchors and aliases are refused (no expansion bombs), and so are unknown keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from assay.core.canonical import iso_utc, parse_iso_utc
from assay.core.errors import FormatError, IntegrityError
from assay.trust.key_records import signature_time_problem
from assay.trust.serving_policy import DEFAULT_SERVING, ServingPolicy, parse_serving
from assay.trust.statements import (
    digest_of,
    open_statement,
    sign_statement,
    statement_signed_by,
)
from assay.trust.trust_list import ROLES

if TYPE_CHECKING:
    from assay.integrity.keys import SigningKey
    from assay.trust.trust_list import TrustList

__all__ = [
    "ACTIONS",
    "DEFAULT_POLICY",
    "GatesPolicy",
    "MODES",
    "POLICY_SUBJECT",
    "PREDICATE_TYPE",
    "Policy",
    "SigningPolicy",
    "evaluate_policy",
    "load_policy",
    "parse_policy_text",
]

PREDICATE_TYPE = "urn:assay:policy:v1"
POLICY_SUBJECT = "urn:assay:policy"
MODES = ("enforce", "warn", "off")
#: Actions whose role the policy names, with the default role of each.
ACTIONS: dict[str, str] = {
    "register": "signer",
    "mark-known-good": "approver",
    "mark-bad": "responder",
    "mark-other": "approver",
    "promote": "approver",
    "rollback": "responder",
    "label": "approver",
    "freeze": "responder",
    "serve-clients": "responder",  # assay serve's API clients: add, revoke, block, throttle
}
MAX_POLICY_BYTES = 64 * 1024
_KEYS = {
    "enforcement",
    "protected_aliases",
    "allow_unmanaged",
    "roles",
    "signing",
    "serving",
    "gates",
}
#: Hash types a policy may name for signing (OMS / model_signing 1.1.1 names).
SIGNING_HASHES = ("sha256", "blake2b", "blake3")
_SIGNING_KEYS = {"hash", "shard_size"}


@dataclass(frozen=True)
class SigningPolicy:
    """The registry-wide default OMS serialization for ``assay sign``."""

    hash: str = "sha256"
    shard_size: int | None = None

    def document(self) -> dict[str, Any]:
        return {"hash": self.hash, "shard_size": self.shard_size}

    @classmethod
    def parse(cls, data: Any) -> SigningPolicy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise FormatError("policy: signing must be a mapping (hash, shard_size)")
        unknown = sorted(set(map(str, data)) - _SIGNING_KEYS)
        if unknown:
            raise FormatError(f"policy: unknown key {unknown[0]!r} under signing")
        algorithm = data.get("hash", "sha256")
        if algorithm not in SIGNING_HASHES:
            raise FormatError(f"policy: signing.hash must be one of {', '.join(SIGNING_HASHES)}")
        size = data.get("shard_size")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1 << 53
        ):
            raise FormatError("policy: signing.shard_size must be a positive number of bytes")
        if size is not None and algorithm == "blake3":
            raise FormatError("policy: signing.shard_size does not apply to blake3")
        return cls(hash=algorithm, shard_size=size)


_GATE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_GATE_PARAMS = 32


@dataclass(frozen=True)
class GatesPolicy:
    """``gates:``: the gates (with their thresholds) ``known-good`` needs, per model or ``*``.

    A model needs the gates of ``*`` and of its own entry (its own parameters win for a gate
    both name). Parameters are scalars or lists of strings; each gate checks its own.
    """

    required: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def for_model(self, name: str) -> dict[str, dict[str, Any]]:
        """Gate name -> parameters that ``name`` must pass."""
        return {**self.required.get("*", {}), **self.required.get(name, {})}

    def document(self) -> dict[str, Any]:
        return {m: {g: dict(p) for g, p in sorted(gs.items())} for m, gs in self.required.items()}


def _gate_param(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise FormatError(f"policy: {where} must be a finite number")
    if isinstance(value, bool | int | float | str) and not (
        isinstance(value, str) and len(value) > 200
    ):
        return value
    if isinstance(value, list) and len(value) <= 100 and all(isinstance(v, str) for v in value):
        return list(value)
    raise FormatError(f"policy: {where} must be a number, true/false, text or a list of names")


def gates_from_document(data: Any) -> GatesPolicy:
    """The ``gates:`` section, parsed strictly (``FormatError`` naming the first problem)."""
    if data is None:
        return GatesPolicy()
    if not isinstance(data, dict) or len(data) > 1000:
        raise FormatError("policy: gates must map model names (or '*') to gates")
    required: dict[str, dict[str, dict[str, Any]]] = {}
    for model, gates in data.items():
        if not isinstance(model, str) or not model.strip():
            raise FormatError("policy: gates: model names must be text")
        if gates is None:
            gates = {}
        if isinstance(gates, list):
            gates = {g: {} for g in _strings(gates, f"gates: {model}")}
        if not isinstance(gates, dict) or len(gates) > 50:
            raise FormatError(f"policy: gates: {model} must map gate names to parameters")
        entry: dict[str, dict[str, Any]] = {}
        for gate, params in gates.items():
            if not isinstance(gate, str) or not _GATE_NAME.fullmatch(gate):
                raise FormatError(f"policy: gates: {model}: {str(gate)[:40]!r} is not a gate name")
            params = {} if params is None else params
            if not isinstance(params, dict) or len(params) > _MAX_GATE_PARAMS:
                raise FormatError(f"policy: gates: {model}: {gate} needs a mapping of parameters")
            checked = {}
            for key, value in params.items():
                if not isinstance(key, str) or not _GATE_NAME.fullmatch(key.replace("_", "-")):
                    raise FormatError(f"policy: gates: {model}: {gate}: bad parameter name")
                checked[key] = _gate_param(value, f"gates: {model}: {gate}: {key}")
            entry[gate] = checked
        required[model.strip()] = entry
    return GatesPolicy(required)


def protected_spelling(protected: Iterable[str], alias: str | None) -> str | None:
    """The entry of ``protected`` that ``alias`` names, compared case-insensitively: MLflow keeps
    ``production``, ``Production`` and ``PRODUCTION`` as three aliases (and ``Production`` is also
    a stage), and each of them is the protected one. None when ``alias`` is not protected."""
    if not alias:
        return None
    folded = alias.casefold()
    return next((a for a in protected if a.casefold() == folded), None)


@dataclass(frozen=True)
class Policy:
    """The policy in force; ``serial`` 0 is the built-in default."""

    enforcement: str = "enforce"
    protected_aliases: tuple[str, ...] = ("production",)
    allow_unmanaged: bool = False
    roles: dict[str, str] = field(default_factory=lambda: dict(ACTIONS))
    signing: SigningPolicy = field(default_factory=SigningPolicy)
    serving: ServingPolicy = DEFAULT_SERVING  # assay serve (trust/serving_policy.py)
    gates: GatesPolicy = field(default_factory=GatesPolicy)
    serial: int = 0
    signed_by: str | None = None
    issued_at: datetime | None = None

    def role_for(self, action: str) -> str:
        return self.roles.get(action, ACTIONS[action])

    def protected_as(self, alias: str | None) -> str | None:
        """The policy's spelling of ``alias`` (or of a stage name) if it is protected, else None."""
        return protected_spelling(self.protected_aliases, alias)

    def is_protected(self, alias: str | None) -> bool:
        return self.protected_as(alias) is not None

    def document(self) -> dict[str, Any]:
        """The policy's content (what is signed and what ``assay policy show`` prints)."""
        doc = {
            "enforcement": self.enforcement,
            "protected_aliases": list(self.protected_aliases),
            "allow_unmanaged": self.allow_unmanaged,
            "roles": dict(sorted(self.roles.items())),
            "signing": self.signing.document(),
        }
        if self.serving != DEFAULT_SERVING:  # absent when default: older documents unchanged
            doc["serving"] = self.serving.document()
        if self.gates.required:  # absent when empty: older policies keep their digest
            doc["gates"] = self.gates.document()
        return doc

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.document(),
            "serial": self.serial,
            "signed_by": self.signed_by,
            "issued_at": iso_utc(self.issued_at) if self.issued_at else None,
        }

    def sign(self, key: SigningKey, serial: int, issued_at: datetime) -> str:
        predicate = {"serial": serial, "issued_at": iso_utc(issued_at), "policy": self.document()}
        return sign_statement(
            key,
            predicate_type=PREDICATE_TYPE,
            subject=POLICY_SUBJECT,
            digest=digest_of(predicate),
            predicate=predicate,
        )


DEFAULT_POLICY = Policy()


def load_policy(registry: Any) -> Policy:
    """The policy in force in ``registry``'s store (``Registry.policy()``)."""
    return registry.policy()


def _no_aliases(text: str) -> None:
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise FormatError("policy: YAML anchors and aliases are not allowed")
    except yaml.YAMLError as exc:
        raise FormatError(f"policy: not valid YAML: {' '.join(str(exc).split())}") from exc


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise FormatError(f"policy: {what} must be a list of names")
    if len(value) > 100:
        raise FormatError(f"policy: {what} lists more than 100 names")
    return tuple(dict.fromkeys(v.strip() for v in value))


def policy_from_document(data: Any) -> Policy:
    """A ``Policy`` from a parsed document; ``FormatError`` naming the first problem."""
    if not isinstance(data, dict):
        raise FormatError("policy: the document must be a mapping")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise FormatError(f"policy: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    mode = data.get("enforcement", "enforce")
    if mode not in MODES:
        raise FormatError(f"policy: enforcement must be one of {', '.join(MODES)}")
    allow = data.get("allow_unmanaged", False)
    if not isinstance(allow, bool):
        raise FormatError("policy: allow_unmanaged must be true or false")
    roles_in = data.get("roles") or {}
    if not isinstance(roles_in, dict):
        raise FormatError("policy: roles must map actions to roles")
    roles = dict(ACTIONS)
    for action, role in roles_in.items():
        if action not in ACTIONS:
            raise FormatError(
                f"policy: unknown action {action!r} under roles (known: {', '.join(ACTIONS)})"
            )
        if role not in ROLES:
            raise FormatError(f"policy: unknown role {role!r} (use one of {', '.join(ROLES)})")
        roles[action] = role
    protected = _strings(data.get("protected_aliases", ["production"]), "protected_aliases")
    serving = parse_serving(data.get("serving"))
    gates = gates_from_document(data.get("gates"))
    return Policy(
        enforcement=mode,
        protected_aliases=protected,
        allow_unmanaged=allow,
        roles=roles,
        signing=SigningPolicy.parse(data.get("signing")),
        serving=serving,
        gates=gates,
    )


def parse_policy_text(text: str) -> Policy:
    """Parse a policy file's text (YAML or JSON), bounded and without YAML aliases."""
    import yaml

    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise FormatError(f"policy: larger than {MAX_POLICY_BYTES // 1024} KiB")
    _no_aliases(text)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise FormatError(f"policy: not valid YAML: {' '.join(str(exc).split())}") from exc
    return policy_from_document(data)


def evaluate_policy(envelopes: Iterable[str], trust: TrustList) -> Policy:
    """The newest stored policy, each checked: signed by a key that held ``admin`` when it was
    issued. No envelope: :data:`DEFAULT_POLICY`; any envelope that fails: ``IntegrityError``."""
    best: Policy | None = None
    for text in envelopes:
        statement = open_statement(text, PREDICATE_TYPE, what="policy")
        predicate = statement.predicate
        if statement.subject != POLICY_SUBJECT or statement.digest != digest_of(predicate):
            raise IntegrityError("the stored policy's digest does not match: tampered")
        try:
            serial = int(predicate["serial"])
            issued = parse_iso_utc(predicate["issued_at"])
        except (KeyError, TypeError, ValueError, FormatError) as exc:
            raise IntegrityError("corrupt policy in the store") from exc
        signer = next((trust.get(k) for k in statement.key_ids if trust.get(k) is not None), None)
        if signer is None or not signer.has_role("admin"):
            raise IntegrityError(
                f"policy {serial} is not signed by an admin key of the trust list: it was "
                "written outside assay; ask an admin to run `assay policy set FILE`"
            )
        problem = signature_time_problem(signer.record(), issued)
        if problem or not statement_signed_by(statement, signer.public_key):
            raise IntegrityError(f"policy {serial} does not verify: {problem or 'bad signature'}")
        try:
            policy = policy_from_document(predicate.get("policy"))
        except FormatError as exc:
            raise IntegrityError(f"the stored policy {serial} is malformed: {exc}") from exc
        policy = replace(policy, serial=serial, signed_by=signer.key_id, issued_at=issued)
        if best is None or policy.serial > best.serial:
            best = policy
    return best or DEFAULT_POLICY
