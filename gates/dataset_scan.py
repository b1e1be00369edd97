"""``assay dataset scan``: label issues, duplicates and shift of a dataset version's table.

The version's files are downloaded into a private folder and verified against its signature
before they are read (``IntegrityError`` otherwise). The scan reports cleanlab's label-issue rate
with the suspect rows (row number, label, quality score; lower is more suspect), exact duplicate
feature rows (and those among them with conflicting labels), near-duplicates (equal after
standardising and rounding to ``NEAR_DECIMALS`` decimals), and the shift against the previous
version: the largest per-feature two-sample Kolmogorov-Smirnov statistic and the total-variation
distance of the label distributions, and BadNets-style trigger rows
(``assay.gates._triggers_data``). Each scan is recorded as a ``dataset.scan`` audit event.

A scan has a *finding* when its label-issue rate is above the policy's ``max_issue_rate`` or it
holds more trigger rows than ``max_trigger_rows``: the policy's ``gates:`` entry ``dataset:NAME``
(or ``dataset:*``) names them under ``dataset-scan`` (defaults :data:`SCAN_DEFAULTS`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import IntegrityError

if TYPE_CHECKING:
    from assay.gates.tables import Table
    from assay.registry.facade import Registry

__all__ = ["SCAN_DEFAULTS", "DatasetScan", "scan_dataset", "scan_table", "scan_thresholds"]

NEAR_DECIMALS = 2
MAX_SUSPECTS = 1000
SCAN_DEFAULTS: dict[str, Any] = {"max_issue_rate": 0.05, "max_trigger_rows": 0}


@dataclass
class DatasetScan:
    subject: str
    manifest_root: str
    label_column: str
    rows: int
    label_issue_rate: float
    suspect_rows: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    conflicting_duplicates: int = 0
    near_duplicates: int = 0
    shift: dict[str, Any] | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def judge(self, thresholds: dict[str, Any]) -> None:
        """Fill ``findings`` (one line each) against ``thresholds`` (``SCAN_DEFAULTS`` keys)."""
        self.thresholds = dict(thresholds)
        self.findings = []
        ceiling = float(thresholds["max_issue_rate"])
        if self.label_issue_rate > ceiling:
            self.findings.append(
                f"label issues {self.label_issue_rate:.1%} > {ceiling:.1%} of rows"
            )
        rows = sum(int(t["row_count"]) for t in self.triggers)
        if rows > int(thresholds["max_trigger_rows"]):
            first = self.triggers[0]
            self.findings.append(
                f"{rows} rows carry a trigger ({', '.join(first['features'][:4])} at their "
                f"maximum, labelled {first['label']}) > {int(thresholds['max_trigger_rows'])}"
            )

    def summary(self) -> dict[str, Any]:
        """What the audit event keeps (not the rows)."""
        out = self.to_dict()
        out["suspect_rows"] = len(self.suspect_rows)
        out["triggers"] = [{k: v for k, v in t.items() if k != "rows"} for t in self.triggers]
        return out


def _duplicates(table: Table) -> tuple[int, int, int]:
    import numpy as np
    import pandas as pd

    features = pd.DataFrame(table.x)
    dup = features.duplicated(keep="first")
    keyed = features.assign(_y=table.y)
    distinct_labels = keyed.groupby(list(range(table.x.shape[1])))["_y"].transform("nunique")
    conflicting = int((dup & (distinct_labels > 1)).sum())
    std = table.x.std(axis=0)
    scaled = (table.x - table.x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    near = pd.DataFrame(np.round(scaled, NEAR_DECIMALS)).duplicated(keep="first")
    return int(dup.sum()), conflicting, int((near & ~dup).sum())


def _shift(previous: Table, current: Table) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import ks_2samp

    common = [c for c in current.feature_columns if c in previous.feature_columns]
    worst, worst_col = 0.0, None
    for column in common:
        a = previous.x[:, previous.feature_columns.index(column)]
        b = current.x[:, current.feature_columns.index(column)]
        stat = float(ks_2samp(a, b).statistic)
        if stat > worst:
            worst, worst_col = stat, column
    labels = sorted({str(c) for c in previous.classes} | {str(c) for c in current.classes})

    def dist(t: Table) -> Any:
        counts = t.frame[t.label_column].astype(str).value_counts()
        return np.asarray([counts.get(lbl, 0) for lbl in labels], dtype=float) / t.rows

    return {
        "max_ks": round(worst, 6),
        "max_ks_column": worst_col,
        "label_tvd": round(float(0.5 * np.abs(dist(previous) - dist(current)).sum()), 6),
        "columns_added": sorted(set(current.feature_columns) - set(previous.feature_columns)),
        "columns_removed": sorted(set(previous.feature_columns) - set(current.feature_columns)),
    }


def scan_table(table: Table, *, subject: str = "", manifest_root: str = "") -> DatasetScan:
    """The scan of one table (no shift)."""
    from assay.gates._labels import find_label_issues
    from assay.gates._triggers_data import find_trigger_rows

    issues = find_label_issues(table.x, table.y)
    labels = table.frame[table.label_column].tolist()
    named = len(table.files) == table.rows  # an image folder: each row's CLASS/FILE
    suspects = [
        {
            "row": r,
            "label": str(labels[r]),
            "score": s,
            **({"file": table.files[r]} if named else {}),
        }
        for r, s in zip(issues.issues[:MAX_SUSPECTS], issues.scores[:MAX_SUSPECTS], strict=True)
    ]
    dup, conflicting, near = _duplicates(table)
    return DatasetScan(
        subject,
        manifest_root,
        table.label_column,
        table.rows,
        round(issues.rate, 6),
        suspects,
        dup,
        conflicting,
        near,
        triggers=[t.to_dict() for t in find_trigger_rows(table)],
    )


def _verified_table(
    registry: Registry, name: str, version: str, label_column: str, root: Path
) -> tuple[str, str, Table]:
    from assay.gates.tables import read_dataset
    from assay.registry.uri_verify import verify_local_dataset
    from assay.registry.versions import display, require_artifact

    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "dataset", name, version)
        uri, digest = artifact.uri, artifact.manifest_root
    subject = display("dataset", name, version)
    if not uri:
        raise IntegrityError(f"{subject}: assay holds no artifact location for it")
    local = registry.backend.download_uri(uri, root / f"v{version}")
    report = verify_local_dataset(registry, name, version, local)
    if not report.ok:
        raise IntegrityError(f"{subject} does not verify: {' '.join(report.summary().split())}")
    return subject, digest, read_dataset(local, label_column)


def scan_thresholds(registry: Registry, name: str) -> dict[str, Any]:
    """The policy's ``dataset-scan`` thresholds for dataset ``name`` over the defaults."""
    from assay.gates.base import merge_params

    required = registry.policy().gates.required
    given = {
        **required.get("dataset:*", {}).get("dataset-scan", {}),
        **required.get(f"dataset:{name}", {}).get("dataset-scan", {}),
    }
    return merge_params("dataset-scan", SCAN_DEFAULTS, given)


def scan_dataset(registry: Registry, ref: str, label_column: str) -> DatasetScan:
    """Scan ``dataset:NAME@V`` (newest when @V is left out), judge it against the policy's
    thresholds and record the scan."""
    from assay.core.errors import FormatError
    from assay.core.refs import parse_dataset_ref
    from assay.registry.versions import require_artifact, version_key

    parsed = parse_dataset_ref(ref)
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "dataset", parsed.name, parsed.version)
        version = str(artifact.version)
        from sqlalchemy import select

        from assay.store.models import Artifact

        earlier = [
            v
            for v in session.scalars(
                select(Artifact.version).where(
                    Artifact.kind == "dataset", Artifact.name == parsed.name
                )
            )
            if v and version_key(v) < version_key(version)
        ]
    root = Path(tempfile.mkdtemp(prefix="assay-scan-"))
    try:
        subject, digest, table = _verified_table(registry, parsed.name, version, label_column, root)
        scan = scan_table(table, subject=subject, manifest_root=digest)
        scan.judge(scan_thresholds(registry, parsed.name))
        if earlier:
            previous = max(earlier, key=version_key)
            try:
                _, _, before = _verified_table(registry, parsed.name, previous, label_column, root)
                scan.shift = {"against": f"{parsed.name}@{previous}", **_shift(before, table)}
            except FormatError as exc:
                scan.shift = {"against": f"{parsed.name}@{previous}", "error": str(exc)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    with registry.store.session() as session:
        registry.record(session, "dataset.scan", scan.subject, scan.summary())
    return scan


def open_incident(registry: Registry, scan: DatasetScan) -> Any:
    """Start the built-in ``data-poisoning`` playbook for the scanned version (a scan with
    findings): the dataset is quarantined, models trained on it frozen, marked and rolled back
    as the playbook says. An approval step stops it in waiting-approval (``incident resume``)."""
    from assay.incident import service as incidents

    dataset = scan.subject.removeprefix("dataset:")
    reason = f"assay dataset scan: {'; '.join(scan.findings)}"[:500]
    return incidents.run(registry, "data-poisoning", {"dataset": dataset, "reason": reason})
