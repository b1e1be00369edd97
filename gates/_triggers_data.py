"""Trigger rows in a dataset without a model: a BadNets-style stamp seen from the data alone.

A BadNets trigger sets a few features (a pixel patch) to one extreme value on rows relabelled to
one target class. For every feature, the rows at its maximum value are a candidate when there
are at least ``min_rows`` of them (and at most half the table) and at least ``purity`` of them
carry one label; the candidate is confirmed when a classifier fitted on the *other* rows
(nearest class centroid: cheap, and blind to a few features), shown the candidate rows with that feature set to its median,
gives another label to at least ``min_relabelled`` of them: their label rests on the one feature.
A legitimate feature (a pixel only one digit lights) keeps its rows' label without it. Candidates
whose rows overlap (Jaccard >= 0.5) are reported as one trigger with all their features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Trigger", "find_trigger_rows"]

MAX_FEATURES = 4096


@dataclass
class Trigger:
    features: list[str]
    label: str
    rows: list[int] = field(default_factory=list)
    purity: float = 0.0
    relabelled_share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["row_count"] = len(self.rows)
        out["rows"] = self.rows[:200]
        return out


def find_trigger_rows(
    table: Any,
    *,
    min_rows: int = 10,
    purity: float = 0.9,
    min_relabelled: float = 0.5,
) -> list[Trigger]:
    """The confirmed triggers of ``table`` (an ``assay.gates.tables.Table``)."""
    import warnings

    import numpy as np
    from sklearn.neighbors import NearestCentroid

    x, y = table.x, table.y
    n, features = x.shape
    if n < 2 * min_rows or features > MAX_FEATURES or len(np.unique(y)) < 2:
        return []
    top = x.max(axis=0)
    found: list[tuple[set[int], list[int], int, float, float]] = []
    for j in range(features):
        rows = np.flatnonzero(x[:, j] >= top[j])
        if len(rows) < max(min_rows, int(0.005 * n)) or len(rows) > n // 2:
            continue
        labels, counts = np.unique(y[rows], return_counts=True)
        share = float(counts.max() / len(rows))
        if share < purity:
            continue
        label = int(labels[counts.argmax()])
        rest = np.setdiff1d(np.arange(n), rows)
        if len(np.unique(y[rest])) < 2:
            continue
        with warnings.catch_warnings():  # constant features within a class are expected
            warnings.simplefilter("ignore", UserWarning)
            model = NearestCentroid().fit(x[rest], y[rest])
        probe = x[rows].copy()
        probe[:, j] = np.median(x[rest, j])
        relabelled = float(np.mean(model.predict(probe) != y[rows]))
        if relabelled >= min_relabelled:
            found.append(({int(r) for r in rows}, [j], label, share, relabelled))
    merged: list[tuple[set[int], list[int], int, float, float]] = []
    for rows, cols, label, share, relabelled in found:
        for i, (m_rows, m_cols, m_label, m_share, m_rel) in enumerate(merged):
            if m_label == label and len(rows & m_rows) / len(rows | m_rows) >= 0.5:
                merged[i] = (
                    m_rows | rows,
                    m_cols + cols,
                    label,
                    max(share, m_share),
                    max(relabelled, m_rel),
                )
                break
        else:
            merged.append((rows, cols, label, share, relabelled))
    return [
        Trigger(
            [table.feature_columns[c] for c in cols],
            str(table.classes[label]),
            sorted(rows),
            round(share, 4),
            round(relabelled, 4),
        )
        for rows, cols, label, share, relabelled in merged
    ]
