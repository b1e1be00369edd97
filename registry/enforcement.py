"""The enforcement decision: may this model version load (or serve, or sit behind this alias)?

One decision, used everywhere a model is used: the MLflow ``models:`` plugin
(:func:`verify_download`), ``assay.registry.load_model``, ``assay verify models:/...``, the
MLflow server guard and ``assay serve``. A version is loadable only if

1. assay's store, trust list and policy can be read and verify (else: refused, fail closed);
2. it was registered through assay (a version assay never recorded is ``unsigned``; a model
   name assay does not manage at all is ``unmanaged``, allowed only when the policy says so);
3. its registration completed (``pending``) and its state is not quarantined or compromised;
4. its state row agrees with its newest signed state statement, and that statement with the
   audit log's newest state event of the version (a row edited in the database, or the newest
   statement deleted, does not: ``tampered-state``);
5. its bytes verify against the recorded bundle and binding, signed by a trusted key holding the
   role the policy names for registering (``tampered``, ``untrusted-signer``);
6. behind a protected alias (policy, default ``production``) it is ``known-good``, and that
   state is signed by a key holding the role for marking known-good (``not-known-good``).

:func:`decide` never raises for a trust failure: it returns a refused :class:`Decision` whose
``reason`` is one line saying why and what to do. A version MLflow does not have at all raises
``NotFoundError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, ConfigError, IntegrityError, NotFoundError, Refusal
from assay.core.settings import Settings
from assay.core.states import BAD_STATES
from assay.core.tags import PENDING_TAG

if TYPE_CHECKING:
    from assay.integrity.hashing import ProgressCallback
    from assay.registry.facade import Registry
    from assay.trust.verification import VerifyReport

__all__ = [
    "ENFORCE_ENV",
    "Decision",
    "decide",
    "decide_from_settings",
    "verify_download",
]

log = logging.getLogger(__name__)

ENFORCE_ENV = "ASSAY_ENFORCE"


@dataclass(frozen=True)
class Decision:
    """The answer for one version: ``allowed`` or refused with a one-line ``reason``."""

    allowed: bool
    subject: str
    reason: str
    code: str
    state: str | None = None
    report: VerifyReport | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "subject": self.subject,
            "code": self.code,
            "reason": self.reason,
            "state": self.state,
        }

    @property
    def refusal(self) -> Refusal | None:
        """The refusal record (``None`` when allowed), as the guard and ``assay serve`` use it."""
        return None if self.allowed else Refusal(self.code, self.reason)

    @property
    def why(self) -> str:
        """The reason without a repeated "verification failed for SUBJECT:" prefix."""
        return self.reason.removeprefix(f"verification failed for {self.subject}: ")

    def raise_if_refused(self) -> None:
        """``IntegrityError`` (exit 3) carrying the reason when refused."""
        if not self.allowed:
            raise IntegrityError(f"refusing {self.subject}: {self.why}")


def _refuse(subject: str, code: str, reason: str, state: str | None = None, report=None):
    return Decision(False, subject, reason, code, state, report)


def decide(
    registry: Registry,
    name: str,
    version: str,
    *,
    alias: str | None = None,
    local_path: Path | None = None,
    progress: ProgressCallback | None = None,
    check_bytes: bool = True,
) -> Decision:
    """The decision for ``models:/NAME/VERSION`` (reached through ``alias``, if any).

    ``local_path``: verify these already-downloaded files instead of re-reading the artifact
    store (verify-before-load: the checked bytes are the loaded bytes).
    ``check_bytes=False``: every step but reading the bytes (state, signed state, protected
    alias, the signatures and their signer's trust and role): for a version already loaded
    from verified bytes, as ``assay serve`` re-checks the version it is serving.
    """
    from assay.registry.uri_verify import RegistryReads

    return decide_with(
        RegistryReads(registry),
        name,
        version,
        alias=alias,
        local_path=local_path,
        progress=progress,
        check_bytes=check_bytes,
    )


def decide_with(
    reads: Any,
    name: str,
    version: str,
    *,
    alias: str | None = None,
    local_path: Path | None = None,
    progress: ProgressCallback | None = None,
    check_bytes: bool = True,
) -> Decision:
    """:func:`decide` over any ``uri_verify`` reads (SQLAlchemy or the ``sqlite3`` view)."""
    from assay.store.version_record import display
    from assay.trust.signed_changes import audit_disagreement, role_holds, signed_state

    version = str(version)
    subject = display("model", name, version)
    try:
        trust = reads.trust.trust_list()
        policy = reads.policy(trust)
        state = reads.state("model", name, version)
    except AssayError as exc:
        return _refuse(subject, "store-unreadable", f"{exc} (fail closed)")
    if state is None:
        return _unregistered(reads, subject, name, version, policy)
    current, status = state
    if status != "complete":
        return _refuse(
            subject,
            "pending",
            f"{subject} is pending registration (interrupted): re-run `assay register` to finish it",
            current,
        )
    if current in BAD_STATES:
        return _refuse(
            subject,
            current,
            f"{subject} is {current}: roll back with `assay rollback {name}` or load another version",
            current,
        )
    try:
        signed_root = reads.manifest_root("model", name, version)
        change = signed_state(
            reads.change_envelopes(subject),
            trust,
            subject=subject,
            manifest_root=signed_root,
            not_before=reads.registered_at("model", name, version),
        )
        event = reads.state_event("model", subject)
    except AssayError as exc:
        return _refuse(subject, "store-unreadable", f"{exc} (fail closed)", current)
    signed = change.payload.get("to") if change else "registered"
    if signed != current:
        return _refuse(
            subject,
            "tampered-state",
            f"{subject} is {current} in the store but its newest signed state is {signed}: "
            "the store was edited outside assay (run `assay audit verify`)",
            current,
        )
    disagreement = audit_disagreement(change, event)
    if disagreement is not None:
        return _refuse(
            subject,
            "tampered-state",
            f"{subject}: {disagreement}: the store was edited outside assay "
            "(run `assay audit verify`)",
            current,
        )
    protected = policy.is_protected(alias)
    if protected and current != "known-good":
        return _refuse(
            subject,
            "not-known-good",
            f"{alias} is a protected alias and {subject} is {current}, not known-good: "
            f"mark it with `assay mark {name} {version} known-good` or roll back",
            current,
        )
    if protected and (change is None or not role_holds(change, trust, policy, "mark-known-good")):
        return _refuse(
            subject,
            "not-known-good",
            f"the known-good state of {subject} is not signed by a key holding the "
            f"{policy.role_for('mark-known-good')!r} role needed behind {alias}",
            current,
        )
    try:
        report = reads.verify(
            "model",
            name,
            version,
            local_path=local_path,
            progress=progress,
            check_bytes=check_bytes,
        )
    except AssayError as exc:
        return _refuse(subject, "tampered", f"{exc}", current)
    if not report.ok:
        return _refuse(subject, "tampered", report.summary(), current, report)
    signer = trust.get(report.key_id or "")
    role = policy.role_for("register")
    if signer is None or not signer.has_role(role):
        return _refuse(
            subject,
            "untrusted-signer",
            f"{subject} is signed by key {str(report.key_id)[:16]}, which does not hold the "
            f"{role!r} role: ask an admin to grant it or re-sign the version",
            current,
            report,
        )
    return Decision(True, subject, "verified", "ok", current, report)


def _unregistered(reads: Any, subject: str, name: str, version: str, policy: Any) -> Decision:
    try:
        managed = reads.is_managed("model", name)
    except AssayError as exc:
        return _refuse(subject, "store-unreadable", f"{exc} (fail closed)")
    try:
        tags = reads.backend.get_version(name, version).tags
    except NotFoundError:
        raise  # no such version at all: nothing to decide on
    except (AssayError, ImportError, OSError) as exc:
        log.debug("cannot read MLflow tags of %s: %s", subject, exc)
        tags = {}
    if PENDING_TAG in tags:
        return _refuse(
            subject,
            "pending",
            f"{subject} is pending registration (interrupted): re-run `assay register` to finish it",
        )
    if managed:
        return _refuse(
            subject,
            "unsigned",
            f"{subject} was not registered through assay (no signature): register it with "
            f"`assay register`, or move the alias back with `assay rollback {name}`",
        )
    if policy.allow_unmanaged:
        return Decision(True, subject, "not managed by assay; the policy allows it", "unmanaged")
    return _refuse(
        subject,
        "unmanaged",
        f"assay does not manage model {name!r} and the policy refuses unmanaged models: "
        "register it with `assay register`",
    )


def decide_from_settings(
    settings: Settings, name: str, version: str, *, alias: str | None = None
) -> Decision:
    """:func:`decide` opening the store of ``settings``; an unreachable store refuses."""
    from assay.registry.facade import Registry
    from assay.store.version_record import display

    try:
        registry = Registry.open(settings)
    except AssayError as exc:
        return _refuse(display("model", name, str(version)), "store-unreachable", f"{exc}")
    return decide(registry, name, version, alias=alias)


def verify_download(name: str, version: str, local_path: str, alias: str | None = None) -> None:
    """The ``models:`` plugin's hook: raise unless the decision allows the downloaded files.

    The plugin applies ``ASSAY_ENFORCE`` (``warn`` logs and loads; ``off`` never calls this).
    """
    from assay.registry.facade import Registry
    from assay.store.version_record import display

    subject = display("model", name, str(version))
    try:
        registry = Registry.open(Settings.from_env())
    except ConfigError as exc:
        raise IntegrityError(
            f"refusing {subject}: assay cannot read its store ({exc}); fail closed "
            f"(set {ENFORCE_ENV}=warn or off to opt out explicitly)"
        ) from exc
    except AssayError as exc:
        raise IntegrityError(f"refusing {subject}: assay's store is unreachable ({exc})") from exc
    decision = decide(registry, name, version, alias=alias, local_path=Path(local_path))
    if decision.allowed:
        return
    import os

    if os.environ.get(ENFORCE_ENV, "").strip():  # the plugin applies an explicit ASSAY_ENFORCE
        decision.raise_if_refused()
    try:
        mode = registry.policy().enforcement
    except AssayError:
        mode = "enforce"
    if mode != "enforce":  # the policy's explicit opt-out
        log.warning(
            "%s: %s (policy enforcement=%s: loading anyway)", subject, decision.reason, mode
        )
        record_unverified_load(subject, mode, decision.reason)
        return
    decision.raise_if_refused()


def record_unverified_load(subject: str, mode: str, reason: str) -> None:
    """Best effort: an audit event for a load that ``warn``/``off`` let through unverified."""
    from assay.registry.facade import Registry

    try:
        registry = Registry.open(Settings.from_env())
        with registry.store.session() as session:
            registry.record(
                session, "model.load-unverified", subject, {"mode": mode, "reason": reason}
            )
    except (AssayError, NotFoundError, OSError) as exc:
        log.warning("could not record the unverified load of %s: %s", subject, exc)
