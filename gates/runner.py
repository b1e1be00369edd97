"""``assay gate run``: run gates on a version's verified bytes and record each result, signed.

Order: resolve the version; check every gate name and its parameters (the policy's over the
gate's defaults) before anything runs; download the version's files into a private folder and
verify them there against its signature (``IntegrityError``, exit 3, and nothing recorded if they
do not verify); likewise the dataset, read as a table; run each gate; record every result in one
transaction. A gate that raises, or cannot run on this model, is recorded as ``error``: never
as passed.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, ConfigError, FormatError, IntegrityError

if TYPE_CHECKING:
    from assay.gates.tables import Table
    from assay.registry.facade import Registry
    from assay.registry.gate_evidence import GateResult

__all__ = ["GateRun", "run_gates", "version_gates"]


@dataclass
class GateRun:
    """What one ``assay gate run`` measured and recorded."""

    subject: str
    manifest_root: str
    data: str | None
    results: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "manifest_root": self.manifest_root,
            "data": self.data,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }


def _one_line(text: Any, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON for a signed statement: numpy scalars unwrapped, floats rounded,
    NaN and infinities as None; ``ValueError`` on anything else."""
    if depth > 20:
        raise ValueError("metrics nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return jsonable(value.item(), depth + 1)
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    raise ValueError(f"metric of type {type(value).__name__} is not JSON")


def _dataset_for(registry: Registry, name: str, version: str, data: str | None) -> str | None:
    """The dataset to measure with: ``data``, else the version's one trained-on dataset."""
    from assay.registry.versions import record_of, require_artifact

    if data is not None:
        return data
    with registry.store.session(readonly=True) as session:
        record = record_of(session, require_artifact(session, "model", name, version))
    return f"dataset:{record.datasets[0]}" if len(record.datasets) == 1 else None


def _read_dataset(
    registry: Registry, text: str, label_column: str, root: Path
) -> tuple[str, str, Table]:
    """(display, manifest root, table) of a verified copy of the dataset version ``text``."""
    from assay.core.refs import parse_dataset_ref
    from assay.gates.tables import read_dataset
    from assay.registry.uri_verify import verify_local_dataset
    from assay.registry.versions import display, require_artifact

    ref = parse_dataset_ref(text)
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "dataset", ref.name, ref.version)
        version, uri, digest = str(artifact.version), artifact.uri, artifact.manifest_root
    subject = display("dataset", ref.name, version)
    if not uri:
        raise IntegrityError(f"{subject}: assay holds no artifact location for it")
    local = registry.backend.download_uri(uri, root / "data")
    report = verify_local_dataset(registry, ref.name, version, local)
    if not report.ok:
        raise IntegrityError(f"{subject} does not verify: {_one_line(report.summary())}")
    return subject, digest, read_dataset(local, label_column)


def _plan(registry: Registry, name: str, gates: list[str]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(gate name, gate instance or the exception loading it raised, parameters)."""
    from assay.gates.base import merge_params
    from assay.gates.plugins import available, load_gate

    required = registry.policy().gates.for_model(name)
    names = list(dict.fromkeys(gates)) or sorted(required)
    if not names:
        raise ConfigError(
            f"the policy requires no gates of {name}: name them with --gate "
            f"(available: {', '.join(available())})"
        )
    known = set(available())
    planned = []
    for gate_name in names:
        if gate_name not in known:
            raise ConfigError(
                f"no gate named {gate_name!r} (available: {', '.join(sorted(known))})"
            )
        try:
            gate: Any = load_gate(gate_name)
        except ConfigError as exc:  # a plugin that fails to load is recorded as an error
            planned.append((gate_name, exc, dict(required.get(gate_name, {}))))
            continue
        defaults = dict(getattr(gate, "defaults", {}) or {})
        params = merge_params(gate_name, defaults, required.get(gate_name, {}))
        planned.append((gate_name, gate, params))
    return planned


def run_gates(
    registry: Registry,
    uri: str,
    gates: list[str],
    *,
    data: str | None = None,
    label_column: str = "label",
) -> GateRun:
    """Run ``gates`` (default: those the policy requires) on ``uri``'s verified bytes."""
    from assay.gates.base import CannotRun, GateContext
    from assay.registry.gate_evidence import GateResult, record_result
    from assay.registry.uri_verify import resolve_model_version, verify_local_copy
    from assay.registry.versions import display, record_of, require_artifact

    name, version = resolve_model_version(registry, uri)
    subject = display("model", name, version)
    with registry.store.session(readonly=True) as session:
        record = record_of(session, require_artifact(session, "model", name, version))
    if record.status != "complete" or not record.manifest_root:
        raise AssayError(f"{subject} is a registration that never completed: nothing to measure")
    planned = _plan(registry, name, gates)
    pickle_allow = registry.policy().gates.for_model(name).get("pickle-scan", {})
    pickle_allow = [str(g) for g in pickle_allow.get("allow_globals", [])]
    explicit = data is not None
    data = _dataset_for(registry, name, version, data)
    root = Path(tempfile.mkdtemp(prefix="assay-gate-"))
    try:
        local = registry.backend.download_version(name, version, root / "model")
        report = verify_local_copy(registry, name, version, local)
        if not report.ok:
            raise IntegrityError(f"{subject} does not verify: {_one_line(report.summary())}")
        table, data_subject, data_root, data_error = None, None, None, None
        if data is not None:
            try:
                data_subject, data_root, table = _read_dataset(registry, data, label_column, root)
            except FormatError as exc:
                if explicit:  # --data names a table: a bad one is the caller's error
                    raise
                # the model's own trained-on dataset: only the gates that need a table fail
                data_subject, data_error = data, _one_line(exc)
        run = GateRun(subject, record.manifest_root, data_subject)
        for gate_name, gate, params in planned:
            status, metrics, detail = "error", {}, ""
            if isinstance(gate, Exception):
                detail = _one_line(gate)
            else:
                context = GateContext(
                    subject,
                    name,
                    version,
                    record.manifest_root,
                    local,
                    dict(params),
                    table,
                    data_subject,
                    pickle_allow,
                    data_error,
                )
                try:
                    outcome = gate.run(context)
                    metrics = jsonable(dict(outcome.metrics))
                    status = "passed" if outcome.passed is True else "failed"
                    detail = _one_line(outcome.detail)
                except CannotRun as exc:
                    detail = _one_line(exc)
                except Exception as exc:  # a gate that raises is recorded, never as passed  # noqa: BLE001
                    detail = _one_line(f"gate {gate_name} raised {type(exc).__name__}: {exc}")
                    metrics = {}
            run.results.append(
                GateResult(
                    gate=gate_name,
                    status=status,
                    subject=subject,
                    manifest_root=record.manifest_root,
                    params=jsonable(params),
                    metrics=metrics,
                    detail=detail,
                    data=data_subject,
                    data_root=data_root,
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    with registry.store.session() as session:
        artifact = require_artifact(session, "model", name, version)
        for result in run.results:
            record_result(registry, session, artifact, result)
    return run


def version_gates(registry: Registry, name: str, version: str) -> dict[str, Any]:
    """The newest verifying result of each gate for the version's bytes, and what the policy
    still requires (what ``assay gate show`` and ``assay status`` print)."""
    from assay.registry.gate_evidence import gate_results, latest_by_gate, missing_gates
    from assay.registry.versions import require_artifact

    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "model", name, str(version))
        results, ignored = gate_results(registry, session, artifact)
        missing = missing_gates(registry, session, artifact)
    return {
        "results": [r.to_dict() for r in latest_by_gate(results).values()],
        "ignored": ignored,
        "missing_for_known_good": missing,
    }
