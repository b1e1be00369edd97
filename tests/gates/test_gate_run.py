"""`assay gate run` end to end on real registered models: results signed, stored, shown, and
required by the policy before known-good."""

from __future__ import annotations

import gate_fixtures as gf
import pytest
import registry_fixtures as fx

from assay.core.errors import ConfigError, FormatError, IntegrityError, RefusedError

world = fx.home_fixture()

TORCH_ALLOW = {"allow_globals": ["torch.nn.modules.*"]}
SK_ALLOW = {"allow_globals": ["sklearn.*", "numpy.*", "numpy._core.*", "_codecs.encode"]}


def _set_policy(registry, text: str) -> None:
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    set_policy(registry, parse_policy_text(text))


@pytest.fixture(autouse=True)
def _no_gate_policy(world):
    _set_policy(world[1], "enforcement: enforce\n")
    yield


@pytest.fixture(scope="module")
def sk(world, tmp_path_factory):
    """A registered sklearn logistic regression trained on a registered table."""
    registry = world[1]
    root = tmp_path_factory.mktemp("sk")
    path, frame = gf.table(root)
    ds_name = fx.unique("tab")
    data = gf.register_table(registry, ds_name, path)
    name = fx.unique("sk")
    version = gf.register(registry, name, gf.sklearn_model(root, frame), f"{ds_name}@1")
    return name, version, f"dataset:{data}"


def test_pickle_scan_lists_cloudpickle_globals_and_fails_without_allow(world, sk, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    # MLflow's default sklearn format (skops) holds no pickle: the scan passes with none.
    (result,) = run_gates(registry, f"models:/{sk[0]}/{sk[1]}", ["pickle-scan"]).results
    assert result.status == "passed" and result.metrics["pickle_count"] == 0
    _, frame = gf.table(tmp_path)
    name = fx.unique("pickled")
    version = gf.register(registry, name, gf.sklearn_model(tmp_path, frame, fmt="cloudpickle"))
    (result,) = run_gates(registry, f"models:/{name}/{version}", ["pickle-scan"]).results
    assert result.status == "failed"
    (pickle,) = result.metrics["pickles"]
    assert pickle["path"] == "model.pkl"
    assert any(g.startswith("sklearn.linear_model") for g in pickle["globals"])
    assert "outside the allow-list" in result.detail
    _set_policy(registry, f"gates:\n  {name}: {{pickle-scan: {SK_ALLOW}}}\n")
    (result,) = run_gates(registry, f"models:/{name}/{version}", []).results
    assert result.status == "passed", result.detail


def test_gates_pass_and_are_signed_evidence(world, sk):
    from assay.gates.runner import run_gates, version_gates

    registry = world[1]
    name, version, data = sk
    _set_policy(
        registry,
        "gates:\n"
        f"  {name}:\n"
        "    pickle-scan: {}\n"
        "    robustness: {eps: 0.05, min_accuracy: 0.5}\n"
        "    label-issues: {max_issue_rate: 0.2}\n"
        "    privacy: {max_auc: 0.75}\n",
    )
    run = run_gates(registry, f"models:/{name}/{version}", [], data=data)
    by = {r.gate: r for r in run.results}
    assert set(by) == {"pickle-scan", "robustness", "label-issues", "privacy"}
    assert all(r.status == "passed" for r in run.results), [(r.gate, r.detail) for r in run.results]
    assert (
        0.0
        <= by["robustness"].metrics["pgd_accuracy"]
        <= by["robustness"].metrics["clean_accuracy"]
    )
    assert 0.0 <= by["privacy"].metrics["attack_auc"] <= 1.0
    shown = version_gates(registry, name, version)
    assert {r["gate"] for r in shown["results"]} == set(by)
    assert shown["missing_for_known_good"] == []
    assert all(r["key_id"] for r in shown["results"])

    from assay.registry.states import mark
    from assay.registry.status import status

    record = mark(registry, name, version, "known-good", reason="gates passed")
    assert record.state == "known-good"
    (model,) = status(registry, name).models
    assert model.versions[0].gates["robustness"] == "passed"


def test_known_good_refused_without_results_and_force_is_recorded(world, tmp_path):
    from assay.registry.states import mark

    registry = world[1]
    name = fx.unique("nogates")
    version = fx.model(registry, name, tmp_path)
    _set_policy(registry, "gates:\n  '*': [pickle-scan]\n")
    with pytest.raises(RefusedError, match="pickle-scan .no result for these bytes"):
        mark(registry, name, version, "known-good", reason="trust me")
    with pytest.raises(Exception, match="--force needs --reason"):
        mark(registry, name, version, "known-good", reason=" ", force=True)
    record = mark(registry, name, version, "known-good", reason="emergency", force=True)
    assert record.state == "known-good"
    overrides = [e for e in registry.audit_events() if e["action"] == "gate.override"]
    assert overrides[-1]["subject"] == f"models:/{name}/{version}"
    assert overrides[-1]["payload"]["reason"] == "emergency"


def test_results_for_other_bytes_are_refused(world, tmp_path):
    """A gate statement copied from version 1 onto version 2 does not count for version 2."""
    from sqlalchemy import select

    from assay.gates.runner import run_gates
    from assay.registry.gate_evidence import GATE_PREFIX
    from assay.registry.states import mark
    from assay.store.models import Artifact, Signature

    registry = world[1]
    name = fx.unique("copied")
    v1 = fx.model(registry, name, tmp_path)
    v2 = fx.model(registry, name, tmp_path)
    assert run_gates(registry, f"models:/{name}/{v1}", ["pickle-scan"]).passed
    with registry.store.session() as session:
        a1, a2 = (
            session.scalar(select(Artifact).where(Artifact.name == name, Artifact.version == v))
            for v in (v1, v2)
        )
        row = session.scalar(
            select(Signature).where(Signature.subject == f"{GATE_PREFIX}models:/{name}/{v1}")
        )
        session.add(
            Signature(
                artifact_id=a2.id,
                subject=f"{GATE_PREFIX}models:/{name}/{v2}",
                manifest_root=a2.manifest_root,
                key_id=row.key_id,
                bundle=row.bundle,
                recorded_at=row.recorded_at,
            )
        )
        assert a1.manifest_root != a2.manifest_root
    _set_policy(registry, "gates:\n  '*': [pickle-scan]\n")
    with pytest.raises(
        RefusedError, match="1 stored result.s. do not verify or are for other bytes"
    ):
        mark(registry, name, v2, "known-good", reason="copied evidence")
    assert mark(registry, name, v1, "known-good", reason="own evidence").state == "known-good"


def test_record_refuses_a_result_over_other_bytes(world, tmp_path):
    from assay.registry.gate_evidence import GateResult, record_result
    from assay.registry.versions import require_artifact

    registry = world[1]
    name = fx.unique("other")
    version = fx.model(registry, name, tmp_path)
    result = GateResult("pickle-scan", "passed", f"models:/{name}/{version}", "0" * 64, {}, {}, "")
    with registry.store.session() as session, pytest.raises(IntegrityError, match="other bytes"):
        record_result(registry, session, require_artifact(session, "model", name, version), result)


def test_tampered_version_is_not_measured(world, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    name = fx.unique("tampered")
    version = fx.model(registry, name, tmp_path)
    fx.tamper(registry, name, version)
    before = len(registry.audit_events())
    with pytest.raises(IntegrityError, match="does not verify"):
        run_gates(registry, f"models:/{name}/{version}", ["pickle-scan"])
    assert len(registry.audit_events()) == before


def test_model_the_gate_cannot_run_on_is_an_error_result(world, sk, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    _, _, data = sk
    name = fx.unique("plain")
    version = fx.model(registry, name, tmp_path)  # bytes, not an MLflow model
    run = run_gates(registry, f"models:/{name}/{version}", ["robustness"], data=data)
    (result,) = run.results
    assert result.status == "error"
    assert result.detail == "gate robustness: the model has no MLmodel file (not an MLflow model)"


def test_backdoor_needs_torch_and_knn_has_no_gradients(world, sk, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    name, version, data = sk
    (result,) = run_gates(registry, f"models:/{name}/{version}", ["backdoor"], data=data).results
    assert result.status == "error" and "needs a neural network" in result.detail
    assert "LogisticRegression" in result.detail
    path, frame = gf.table(tmp_path)
    forest = fx.unique("knn")
    fv = gf.register(registry, forest, gf.sklearn_model(tmp_path, frame, kind="knn"))
    (result,) = run_gates(registry, f"models:/{forest}/{fv}", ["robustness"], data=data).results
    assert result.status == "error" and "no loss gradients" in result.detail


@pytest.mark.slow
def test_torch_classifier_robustness_and_backdoor(world, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    path, frame = gf.table(tmp_path)
    ds = fx.unique("ttab")
    data = gf.register_table(registry, ds, path)
    name = fx.unique("torch")
    version = gf.register(registry, name, gf.torch_model(tmp_path, frame), data)
    uri = f"models:/{name}/{version}"
    # The pickled module names torch.nn classes: without the policy accepting them the model
    # is not even loaded (loading would unpickle it).
    (result,) = run_gates(registry, uri, ["robustness"]).results
    assert result.status == "error" and "will not load the model" in result.detail
    assert "torch.nn.modules" in result.detail
    _set_policy(registry, f"gates:\n  {name}: {{pickle-scan: {TORCH_ALLOW}}}\n")
    run = run_gates(registry, uri, ["robustness", "backdoor", "pickle-scan"])
    by = {r.gate: r for r in run.results}
    assert by["robustness"].status in ("passed", "failed"), by["robustness"].detail
    assert by["robustness"].metrics["clean_accuracy"] > 0.8
    assert by["backdoor"].status in ("passed", "failed"), by["backdoor"].detail
    metrics = by["backdoor"].metrics
    assert len(metrics["trigger_scan"]["mask_l1"]) == 2 and metrics["penultimate_units"] == 16
    assert set(metrics["activation_clustering"]["per_class"]) == {"0", "1"}
    assert by["pickle-scan"].status == "passed", by["pickle-scan"].detail
    globals_ = {g for p in by["pickle-scan"].metrics["pickles"] for g in p["globals"]}
    assert "torch.nn.modules.linear.Linear" in globals_
    # MLflow's pt2 format (an exported program) is measured too.
    exported = fx.unique("pt2")
    ev = gf.register(registry, exported, gf.torch_model(tmp_path, frame, fmt="pt2"), data)
    (result,) = run_gates(registry, f"models:/{exported}/{ev}", ["robustness"]).results
    assert result.status in ("passed", "failed"), result.detail
    assert result.metrics["clean_accuracy"] > 0.8


class _Raises:
    name = "raises"
    defaults: dict = {}

    def run(self, context):
        raise RuntimeError("plugin bug")


class _Lies:
    name = "lies"
    defaults: dict = {}

    def run(self, context):
        from assay.gates.base import Outcome

        return Outcome(passed="yes", metrics={"x": float("nan")})  # type: ignore[arg-type]


def test_plugin_that_raises_is_recorded_as_error(world, tmp_path, monkeypatch):
    from assay.gates import plugins
    from assay.gates.runner import run_gates, version_gates

    registry = world[1]
    name = fx.unique("plugin")
    version = fx.model(registry, name, tmp_path)
    monkeypatch.setitem(plugins.BUILTIN, "raises", f"{__name__}:_Raises")
    monkeypatch.setitem(plugins.BUILTIN, "lies", f"{__name__}:_Lies")
    monkeypatch.setitem(plugins.BUILTIN, "broken", "no.such.module:Gate")
    run = run_gates(registry, f"models:/{name}/{version}", ["raises", "lies", "broken"])
    by = {r.gate: r for r in run.results}
    assert by["raises"].status == "error"
    assert by["raises"].detail == "gate raises raised RuntimeError: plugin bug"
    assert by["lies"].status == "failed" and by["lies"].metrics == {"x": None}
    assert by["broken"].status == "error" and "cannot be loaded" in by["broken"].detail
    stored = {r["gate"]: r["status"] for r in version_gates(registry, name, version)["results"]}
    assert stored == {"raises": "error", "lies": "failed", "broken": "error"}


def test_bad_input_is_one_line_and_records_nothing(world, sk, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    name, version, data = sk
    uri = f"models:/{name}/{version}"
    before = len(registry.audit_events())
    with pytest.raises(FormatError, match="no label column 'target'"):
        run_gates(registry, uri, ["label-issues"], data=data, label_column="target")
    text = tmp_path / "notes"
    text.mkdir()
    (text / "readme.txt").write_text("not a table")
    ds = fx.unique("txt")
    bad = gf.register_table(registry, ds, text / "readme.txt")
    with pytest.raises(FormatError, match="not a table: readme.txt"):
        run_gates(registry, uri, ["label-issues"], data=f"dataset:{bad}")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    ds2 = fx.unique("empty")
    bad2 = gf.register_table(registry, ds2, empty)
    with pytest.raises(FormatError, match="empty"):
        run_gates(registry, uri, ["label-issues"], data=f"dataset:{bad2}")
    with pytest.raises(ConfigError, match="no gate named 'nope'"):
        run_gates(registry, uri, ["nope"])
    _set_policy(registry, f"gates:\n  {name}: {{robustness: {{epsilon: 0.1}}}}\n")
    with pytest.raises(ConfigError, match="unknown parameter 'epsilon'"):
        run_gates(registry, uri, ["robustness"], data=data)
    gate_events = [e for e in registry.audit_events()[before:] if e["action"] == "gate.result"]
    assert gate_events == []


def test_a_non_table_trained_on_dataset_fails_only_the_gates_that_need_it(world, tmp_path):
    from assay.gates.runner import run_gates

    registry = world[1]
    ds = fx.unique("files")
    ds_version = fx.dataset(registry, ds, tmp_path)  # a folder of bytes, not a table
    name = fx.unique("lineage")
    version = fx.model(registry, name, tmp_path, datasets=(f"{ds}@{ds_version}",))
    run = run_gates(registry, f"models:/{name}/{version}", ["pickle-scan", "label-issues"])
    by = {r.gate: r for r in run.results}
    assert by["pickle-scan"].status == "passed"
    assert by["label-issues"].status == "error"
    assert "is neither CSV nor Parquet" in by["label-issues"].detail
    assert by["label-issues"].data == f"dataset:{ds}@{ds_version}"
