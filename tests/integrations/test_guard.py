"""The guard's rules (``assay.integrations.guard``) against a real store, SQLite and PostgreSQL.

MLflow's side is a small in-memory view; the enforcement decision is stubbed where a rule asks it
(its own tests live in test_enforcement.py). The server glue is tested against a real
``mlflow server --app-name assay-guard`` in test_mlflow_guard.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import AssayError
from assay.core.settings import Settings
from assay.integrations.guard import Guard, normalise_version
from assay.registry import enforcement
from assay.registry.facade import Registry
from assay.store.models import Artifact, ArtifactState, Freeze, utcnow
from assay.store.store import Store


@dataclass
class View:
    """MLflow's registry as the guard reads it: model -> alias -> version, stages."""

    models: dict[str, dict[str, str]] = field(default_factory=dict)
    stages: dict[tuple[str, str], str] = field(default_factory=dict)

    def canonical_name(self, name: str) -> str | None:
        return name if name in self.models else None

    def aliases(self, name: str) -> Mapping[str, str]:
        return self.models[name]

    def stage(self, name: str, version: str) -> str | None:
        return self.stages.get((name, version), "None")


@dataclass(frozen=True)
class FakeDecision:
    allowed: bool
    subject: str
    reason: str
    code: str


@pytest.fixture
def registry(settings: Settings, store: Store) -> Registry:
    from trust_helpers import bootstrap_admin

    registry = Registry(settings, store)
    bootstrap_admin(registry)  # audit events are signed by the acting key
    return registry


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str | None]]:
    """Stub the decision: allowed unless the version is "6" (then "compromised"); records calls."""
    calls: list[tuple[str, str, str | None]] = []

    def fake(registry: Any, name: str, version: str, *, alias: str | None = None, **_: Any) -> Any:
        calls.append((name, version, alias))
        subject = f"models:/{name}/{version}"
        if version == "6":
            return FakeDecision(False, subject, f"{subject} is compromised", "compromised")
        return FakeDecision(True, subject, "ok", "ok")

    monkeypatch.setattr(enforcement, "decide", fake, raising=False)
    return calls


def add_version(registry: Registry, name: str, version: str, state: str = "registered") -> None:
    with registry.store.session() as session:
        artifact = Artifact(kind="model", name=name, version=version, uri=f"file:///m/{version}")
        session.add(artifact)
        session.flush()
        session.add(
            ArtifactState(artifact_id=artifact.id, state=state, status="complete", labels="[]")
        )


def freeze(registry: Registry, name: str) -> None:
    with registry.store.session() as session:
        session.add(Freeze(model_name=name, reason="INC-1 under way", actor="t", at=utcnow()))


def intent(registry: Registry, action: str, name: str, alias: str, payload: dict[str, Any]) -> None:
    with registry.store.session() as session:
        registry.record(session, action, f"models:/{name}@{alias}", payload)


def guard(registry: Registry, view: View) -> Guard:
    return Guard(registry, view, protected=lambda: ("production",))


# --- aliases ---------------------------------------------------------------------------------


def test_protected_alias_is_set_only_when_the_decision_allows(
    registry: Registry, decisions: list[Any]
) -> None:
    view = View({"m": {}})
    g = guard(registry, view)
    assert g.set_alias("m", "production", "5") is None
    refused = g.set_alias("m", "Production", "6")  # case does not make another alias
    assert refused is not None and refused.code == "compromised"
    assert refused.message == (
        "assay guard: refusing to point m@Production at version 6: models:/m/6 is compromised"
    )
    assert decisions == [("m", "5", "production"), ("m", "6", "production")]
    assert g.set_alias("m", "staging", "6") is None  # not protected: no decision asked
    assert len(decisions) == 2


def test_version_is_read_the_way_mlflow_reads_it(registry: Registry, decisions: list[Any]) -> None:
    g = guard(registry, View({"m": {}}))
    refused = g.set_alias("m", "production", "06")
    assert refused is not None and refused.code == "compromised"  # decided as version 6
    assert decisions[-1] == ("m", "6", "production")
    bad = g.set_alias("m", "production", "six")
    assert bad is not None and bad.code == "invalid"


@given(st.text(max_size=12))
def test_normalise_version_agrees_with_int(text: str) -> None:
    try:
        number = int(text)
    except ValueError:
        assert normalise_version(text) is None
    else:
        assert normalise_version(text) == (str(number) if number > 0 else None)


def test_protected_alias_is_never_deleted(registry: Registry, decisions: list[Any]) -> None:
    g = guard(registry, View({"m": {"production": "1", "staging": "1"}}))
    refused = g.delete_alias("m", "production")
    assert refused is not None and refused.code == "protected-alias"
    assert "never deleted" in refused.message
    assert g.delete_alias("m", "staging") is None


def test_frozen_model_moves_no_alias_but_the_open_rollback(
    registry: Registry, decisions: list[Any]
) -> None:
    add_version(registry, "m", "1", "known-good")
    add_version(registry, "m", "2", "known-good")
    freeze(registry, "m")
    g = guard(registry, View({"m": {"production": "2", "staging": "2"}}))
    for refused in (
        g.set_alias("m", "staging", "1"),
        g.delete_alias("m", "staging"),
        g.set_alias("m", "production", "1"),
        g.transition_stage("m", "1", "Staging"),
    ):
        assert refused is not None and refused.code == "frozen"
        assert "model m is frozen (INC-1 under way)" in refused.message

    intent(registry, "rollback.intent", "m", "production", {"id": "r1", "from": "2", "to": "1"})
    assert g.set_alias("m", "production", "1") is None  # the rollback's own move
    assert g.set_alias("m", "production", "2") is not None  # not what the rollback planned
    assert g.set_alias("m", "staging", "1") is not None  # nor another alias
    intent(registry, "rollback.done", "m", "production", {"id": "r1", "from": "2", "to": "1"})
    assert g.set_alias("m", "production", "1") is not None  # closed: the freeze holds again

    # move_alias(via="rollback") records alias.intent events; other vias are not exempt.
    intent(registry, "alias.intent", "m", "staging", {"id": "a1", "to": "1", "via": "promote"})
    assert g.set_alias("m", "staging", "1") is not None
    intent(registry, "alias.intent", "m", "staging", {"id": "a2", "to": "1", "via": "rollback"})
    assert g.set_alias("m", "staging", "1") is None


# --- deletions and renames -------------------------------------------------------------------


def test_known_good_or_serving_versions_are_not_deleted(
    registry: Registry, decisions: list[Any]
) -> None:
    add_version(registry, "m", "1", "known-good")
    add_version(registry, "m", "2")
    add_version(registry, "m", "3", "compromised")
    g = guard(registry, View({"m": {"staging": "2"}}))
    good = g.delete_version("m", "01")
    assert good is not None and good.code == "known-good"
    assert good.message == "assay guard: refusing to delete models:/m/1: it is known-good"
    serving = g.delete_version("m", "2")
    assert serving is not None and serving.code == "serving"
    assert "it serves behind alias staging" in serving.message
    assert g.delete_version("m", "3") is None
    assert g.delete_version("gone", "1") is None  # MLflow answers "does not exist" itself


def test_a_model_with_serving_known_good_or_frozen_versions_is_not_deleted(
    registry: Registry, decisions: list[Any]
) -> None:
    add_version(registry, "a", "1", "known-good")
    add_version(registry, "b", "1")
    add_version(registry, "c", "1")
    add_version(registry, "d", "1")
    freeze(registry, "d")
    g = guard(registry, View({"a": {}, "b": {"production": "1"}, "c": {}, "d": {}}))
    assert [r.code if r else None for r in map(g.delete_model, "abcd")] == [
        "known-good",
        "serving",
        None,
        "frozen",
    ]


def test_managed_names_are_not_renamed_from_or_to(registry: Registry, decisions: list[Any]) -> None:
    add_version(registry, "managed", "1")
    g = guard(registry, View({"managed": {}, "plain": {}}))
    assert g.rename_model("managed", "other").code == "managed"  # type: ignore[union-attr]
    refused = g.rename_model("plain", "managed")
    assert refused is not None and "assay manages 'managed'" in refused.message
    assert g.rename_model("plain", "plain2") is None


def test_stage_transitions_are_decided_like_the_protected_alias(
    registry: Registry, decisions: list[Any]
) -> None:
    view = View({"m": {}}, stages={("m", "5"): "Production"})
    g = guard(registry, view)
    refused = g.transition_stage("m", "6", "production")
    assert refused is not None and refused.code == "compromised"
    assert decisions[-1] == ("m", "6", "production")
    assert g.transition_stage("m", "7", "Production") is None
    leaving = g.transition_stage("m", "5", "Archived")
    assert leaving is not None and leaving.code == "protected-alias"
    assert g.transition_stage("m", "7", "Staging") is None


# --- fail closed -----------------------------------------------------------------------------


def test_a_store_that_cannot_be_read_refuses(
    registry: Registry, decisions: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> Any:
        raise AssayError("store error (sqlite): unable to open database file")

    monkeypatch.setattr(registry.store, "session", broken)
    g = guard(registry, View({"m": {"staging": "1"}}))
    for refused in (
        g.set_alias("m", "staging", "1"),
        g.delete_alias("m", "staging"),
        g.delete_version("m", "2"),
        g.delete_model("m"),
        g.rename_model("m", "n"),
        g.transition_stage("m", "1", "Staging"),
    ):
        assert refused is not None and refused.code == "store-unreachable"
        assert refused.message.startswith("assay guard: cannot read assay's store (store error")


def test_a_version_mlflow_does_not_have_is_refused(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.core.errors import NotFoundError

    def missing(*_: Any, **__: Any) -> Any:
        raise NotFoundError("model 'm' has no version 9")

    monkeypatch.setattr(enforcement, "decide", missing, raising=False)
    refused = guard(registry, View({"m": {}})).set_alias("m", "production", "9")
    assert refused is not None and refused.code == "not-found"
    assert refused.message == "assay guard: refusing: model 'm' has no version 9"


def test_any_failure_refuses(registry: Registry, decisions: list[Any]) -> None:
    class Broken(View):
        def aliases(self, name: str) -> Mapping[str, str]:
            raise RuntimeError("mlflow store down")

    refused = guard(registry, Broken({"m": {}})).delete_model("m")
    assert refused is not None and refused.code == "guard-error"
    assert refused.message == (
        "assay guard: could not check this call (RuntimeError: mlflow store down)"
    )
