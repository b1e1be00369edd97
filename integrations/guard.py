"""The guard's rules: which registry writes an MLflow server refuses, decided from assay's store.

:class:`Guard` answers one question per guarded MLflow call (set or delete an alias, delete a
version or a registered model, rename a model, transition a stage) with ``None`` (let it through)
or a :class:`Refusal` (one line, a machine-readable code). ``assay.integrations.mlflow_guard`` is the
server glue that calls it; this module never imports mlflow, so its rules are tested against a
real store without a server.

Rules (protected aliases come from the policy, compared case-insensitively):

* setting a protected alias needs the target to pass the enforcement decision
  (``assay.registry.enforcement.decide`` with that alias);
* a protected alias is never deleted (move it with ``assay promote`` or ``assay rollback``);
* no alias of a frozen model moves, except the move an open ``assay rollback`` committed its
  intent for (same model, alias and target, recorded in the store before MLflow is touched);
* a version that is known-good (its state row, or its newest signed state statement) or behind
  any alias is not deleted, nor a registered model that has such a version, an alias, or a freeze;
* a model assay manages is not renamed, and no model is renamed to a name assay manages;
* a stage transition into a stage named like a protected alias (``Production``) is decided like
  setting that alias, and none leaves such a stage or touches a frozen model.

The guard only reads the store (the caller of an alias move may hold the store's write lock while
it waits for MLflow's answer). Any failure to read it refuses: fail closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from assay.core.errors import AssayError, NotFoundError, Refusal
from assay.registry.states import ALIAS_ABANDONED, ALIAS_INTENT, ALIAS_MOVE, FREEZE_EXEMPT
from assay.store.models import Artifact, ArtifactState, AuditEvent, Freeze

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.registry.facade import Registry

__all__ = ["Guard", "MlflowView", "normalise_version"]

#: Audit actions of ``assay rollback`` (rollback/execute.py): its intent is committed before the
#: alias moves, and closed by ``done`` or ``abandoned``.
ROLLBACK_INTENT, ROLLBACK_DONE, ROLLBACK_ABANDONED = (
    "rollback.intent",
    "rollback.done",
    "rollback.abandoned",
)
_INTENT_ACTIONS = (
    ALIAS_INTENT,
    ALIAS_MOVE,
    ALIAS_ABANDONED,
    ROLLBACK_INTENT,
    ROLLBACK_DONE,
    ROLLBACK_ABANDONED,
)


class MlflowView(Protocol):
    """What the guard reads from MLflow's own registry (the server's store, in process)."""

    def canonical_name(self, name: str) -> str | None:
        """The registered model's name as MLflow stores it, None if there is no such model."""
        ...

    def aliases(self, name: str) -> Mapping[str, str]:
        """Alias -> version of the registered model ``name``."""
        ...

    def stage(self, name: str, version: str) -> str | None:
        """The version's stage (``None``/``Staging``/``Production``/``Archived``), None if absent."""
        ...


def normalise_version(version: object) -> str | None:
    """The version number MLflow will act on (it applies ``int()``), or None if it is not one."""
    try:
        number = int(str(version))
    except ValueError:
        return None
    return str(number) if number > 0 else None


def _refuse(code: str, text: str) -> Refusal:
    return Refusal(code, "assay guard: " + " ".join(text.split()))


class Guard:
    """The rules over one registry (store reads) and one view of MLflow's registry."""

    def __init__(
        self,
        registry: Registry,
        mlflow: MlflowView,
        *,
        protected: Callable[[], tuple[str, ...]] | None = None,
    ) -> None:
        self.registry = registry
        self.mlflow = mlflow
        self._protected = protected or self._policy_aliases

    # -- the guarded calls -------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> Refusal | None:
        return self._checked(lambda: self._set_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> Refusal | None:
        return self._checked(lambda: self._delete_alias(name, alias))

    def delete_version(self, name: str, version: str) -> Refusal | None:
        return self._checked(lambda: self._delete_version(name, version))

    def delete_model(self, name: str) -> Refusal | None:
        return self._checked(lambda: self._delete_model(name))

    def rename_model(self, name: str, new_name: str) -> Refusal | None:
        return self._checked(lambda: self._rename_model(name, new_name))

    def transition_stage(self, name: str, version: str, stage: str) -> Refusal | None:
        return self._checked(lambda: self._transition_stage(name, version, stage))

    # -- rules -------------------------------------------------------------------------------

    def _set_alias(self, name: str, alias: str, version: str) -> Refusal | None:
        checked = self._unfrozen_move(
            name, version, lambda n, v: f"refusing to point {n}@{alias} at version {v}", alias=alias
        )
        if isinstance(checked, Refusal):
            return checked
        name, number, target = checked
        protected = self._protected_as(alias)
        if protected is not None:
            return self._decision(name, number, protected, target)
        return None

    def _delete_alias(self, name: str, alias: str) -> Refusal | None:
        name = self.mlflow.canonical_name(name) or name
        if self._is_protected(alias):
            return _refuse(
                "protected-alias",
                f"{name}@{alias} is a protected alias and is never deleted; move it with "
                "`assay promote` or `assay rollback`",
            )
        with self.registry.store.session(readonly=True) as session:
            freeze = session.get(Freeze, name)
        if freeze is not None:
            return self._frozen(name, freeze, f"refusing to delete {name}@{alias}")
        return None

    def _delete_version(self, name: str, version: str) -> Refusal | None:
        number = normalise_version(version)
        if number is None:
            return _refuse("invalid", f"{version!r} is not a version number")
        name = self.mlflow.canonical_name(name)
        if name is None:
            return None  # MLflow answers RESOURCE_DOES_NOT_EXIST itself
        subject = f"models:/{name}/{number}"
        serving = sorted(a for a, v in self.mlflow.aliases(name).items() if str(v) == number)
        if serving:
            return _refuse(
                "serving",
                f"refusing to delete {subject}: it serves behind alias {', '.join(serving)}",
            )
        with self.registry.store.session(readonly=True) as session:
            good = self._known_good(session, name)
        if number in good or self._signed_known_good(name, [number]):
            return _refuse("known-good", f"refusing to delete {subject}: it is known-good")
        return None

    def _delete_model(self, name: str) -> Refusal | None:
        name = self.mlflow.canonical_name(name)
        if name is None:
            return None
        what = f"refusing to delete model {name}"
        aliases = self.mlflow.aliases(name)
        with self.registry.store.session(readonly=True) as session:
            freeze = session.get(Freeze, name)
            if freeze is not None:
                return self._frozen(name, freeze, what)
            good = self._known_good(session, name)
            versions = self._versions(session, name)
        good |= self._signed_known_good(name, sorted(versions - good))
        if aliases:
            listed = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items()))
            return _refuse("serving", f"{what}: it has aliases ({listed})")
        if good:
            listed = ", ".join(sorted(good, key=int))
            verb = "version {} is" if len(good) == 1 else "versions {} are"
            return _refuse("known-good", f"{what}: {verb.format(listed)} known-good")
        return None

    def _rename_model(self, name: str, new_name: str) -> Refusal | None:
        name = self.mlflow.canonical_name(name) or name
        with self.registry.store.session(readonly=True) as session:
            for candidate in (name, new_name):
                if self._managed(session, candidate):
                    return _refuse(
                        "managed",
                        f"refusing to rename model {name} to {new_name}: assay manages "
                        f"{candidate!r} (its signatures and states are bound to that name)",
                    )
        return None

    def _transition_stage(self, name: str, version: str, stage: str) -> Refusal | None:
        checked = self._unfrozen_move(
            name, version, lambda n, v: f"refusing to move models:/{n}/{v} to stage {stage}"
        )
        if isinstance(checked, Refusal):
            return checked
        name, number, target = checked
        current = self.mlflow.stage(name, number)
        if current and current.lower() != stage.lower() and self._is_protected(current):
            return _refuse(
                "protected-alias",
                f"{target}: it serves in the protected stage {current}; only a version that "
                f"passes assay's decision, moved into {current}, replaces it",
            )
        protected = self._protected_as(stage)
        if protected is not None:
            return self._decision(name, number, protected, target)
        return None

    # -- helpers -----------------------------------------------------------------------------

    def _unfrozen_move(
        self,
        name: str,
        version: str,
        target: Callable[[str, str], str],
        *,
        alias: str | None = None,
    ) -> tuple[str, str, str] | Refusal:
        """(canonical name, version number, refusal prefix) of a move onto ``version``, or its
        refusal: not a version number, or the model is frozen (a rollback in progress that moves
        ``alias`` to that version is the one move a freeze lets through)."""
        number = normalise_version(version)
        if number is None:
            return _refuse("invalid", f"{version!r} is not a version number")
        name = self.mlflow.canonical_name(name) or name
        text = target(name, number)
        with self.registry.store.session(readonly=True) as session:
            freeze = session.get(Freeze, name)
            if freeze is not None and not (
                alias is not None and self._rollback_in_progress(session, name, alias, number)
            ):
                return self._frozen(name, freeze, text)
        return name, number, text

    def _checked(self, check: Callable[[], Refusal | None]) -> Refusal | None:
        """Run one rule; a failure to read the store or MLflow refuses (fail closed)."""
        try:
            return check()
        except NotFoundError as exc:  # e.g. MLflow has no such version: nothing to decide on
            return _refuse("not-found", f"refusing: {exc}")
        except AssayError as exc:
            return _refuse(
                "store-unreachable", f"cannot read assay's store ({exc}); refusing (fail closed)"
            )
        except Exception as exc:  # noqa: BLE001 - any failure must refuse, never let through
            return _refuse(
                "guard-error", f"could not check this call ({type(exc).__name__}: {exc})"
            )

    def _policy_aliases(self) -> tuple[str, ...]:
        from assay.trust.policy import load_policy

        return tuple(load_policy(self.registry).protected_aliases)

    def _protected_as(self, alias: str) -> str | None:
        """The policy's spelling of ``alias`` if it is protected (case-insensitively), else None."""
        from assay.trust.policy import protected_spelling

        return protected_spelling(self._protected(), alias)

    def _is_protected(self, alias: str) -> bool:
        return self._protected_as(alias) is not None

    def _decision(self, name: str, version: str, alias: str, what: str) -> Refusal | None:
        from assay.registry.enforcement import decide

        decision = decide(self.registry, name, version, alias=alias)
        if decision.allowed:
            return None
        return _refuse(decision.code, f"{what}: {decision.reason}")

    @staticmethod
    def _frozen(name: str, freeze: Freeze, what: str) -> Refusal:
        return _refuse(
            "frozen",
            f"{what}: model {name} is frozen ({freeze.reason}); only `assay rollback` may move its "
            f"aliases (`assay unfreeze {name}` first)",
        )

    @staticmethod
    def _managed(session: Session, name: str) -> bool:
        return (
            session.scalar(
                select(Artifact.id).where(Artifact.kind == "model", Artifact.name == name).limit(1)
            )
            is not None
        )

    @staticmethod
    def _known_good(session: Session, name: str) -> set[str]:
        rows = session.scalars(
            select(Artifact.version)
            .join(ArtifactState, ArtifactState.artifact_id == Artifact.id)
            .where(
                Artifact.kind == "model",
                Artifact.name == name,
                ArtifactState.state == "known-good",
            )
        )
        return {str(v) for v in rows if v}

    @staticmethod
    def _versions(session: Session, name: str) -> set[str]:
        rows = session.scalars(
            select(Artifact.version).where(Artifact.kind == "model", Artifact.name == name)
        )
        return {str(v) for v in rows if v}

    def _signed_known_good(self, name: str, versions: list[str]) -> set[str]:
        """Versions whose newest signed state statement says known-good, whatever the state row
        says (a row edited in the database does not make a known-good version deletable)."""
        if not versions:
            return set()
        from assay.registry.uri_verify import RegistryReads
        from assay.trust.signed_changes import signed_state

        reads = RegistryReads(self.registry)
        trust = reads.trust.trust_list()
        found = set()
        for version in versions:
            subject = f"models:/{name}/{version}"
            change = signed_state(
                reads.change_envelopes(subject),
                trust,
                subject=subject,
                manifest_root=reads.manifest_root("model", name, version),
                not_before=reads.registered_at("model", name, version),
            )
            if change is not None and change.payload.get("to") == "known-good":
                found.add(version)
        return found

    @staticmethod
    def _rollback_in_progress(session: Session, name: str, alias: str, version: str) -> bool:
        """Whether an open rollback intent (committed, not yet done or abandoned) moves
        ``name@alias`` to ``version``: the one move a freeze lets through."""
        from assay.registry.states import alias_subject, open_intents

        events = list(
            session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.subject == alias_subject(name, alias),
                    AuditEvent.action.in_(_INTENT_ACTIONS),
                )
                .order_by(AuditEvent.seq)
            )
        )
        rollbacks = [e for e in events if e.action.startswith("rollback.")]
        moves = [e for e in events if e.action.startswith("alias.")]
        for intent in open_intents(rollbacks, ROLLBACK_INTENT):
            if str(intent.get("to")) == version:
                return True
        return any(
            str(intent.get("to")) == version and intent.get("via") in FREEZE_EXEMPT
            for intent in open_intents(moves, ALIAS_INTENT)
        )
