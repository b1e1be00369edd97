"""``assay dataset scan``: label issues, duplicates and shift of a dataset version's table.

The version's files are downloaded into a private folder and verified against its signature
before they are read (``IntegrityError`` otherwise). The scan reports cleanlab's label-issue rate
with the suspect rows (row number, label, quality score; lower is more suspect), exact duplicate
feature rows (and those among them with conflicting labels), near-duplicates (equal after
standardising and rounding to ``NEAR_DECIMALS`` decimals), and the shift against the previous
version: the largest per-feature two-sample Kolmogorov-Smirnov statistic and the total-variation
distance of the label distributions. Each scan is recorded as a ``dataset.scan`` audit event.
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

__all__ = ["DatasetScan", "scan_dataset", "scan_table"]

NEAR_DECIMALS = 2
MAX_SUSPECTS = 1000


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What the audit event keeps (not the rows)."""
        out = self.to_dict()
        out["suspect_rows"] = len(self.suspect_rows)
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
    from assay.gates.labels import find_label_issues

    issues = find_label_issues(table.x, table.y)
    labels = table.frame[table.label_column].tolist()
    suspects = [
        {"row": r, "label": str(labels[r]), "score": s}
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
    )


def _verified_table(
    registry: Registry, name: str, version: str, label_column: str, root: Path
) -> tuple[str, str, Table]:
    from assay.gates.tables import read_table
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
    return subject, digest, read_table(local, label_column)


def scan_dataset(registry: Registry, ref: str, label_column: str) -> DatasetScan:
    """Scan ``dataset:NAME@V`` (newest when @V is left out) and record the scan."""
    from assay.core.errors import FormatError
    from assay.registry.refs import parse_dataset_ref
    from assay.registry.versions import require_artifact, version_key

    parsed = parse_dataset_ref(ref)
    with registry.store.session(readonly=True) as session:
        artifact = require_artifact(session, "dataset", parsed.name, parsed.version)
        version = str(artifact.version)
        from sqlalchemy import select

        from assay.registry.models import Artifact

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
