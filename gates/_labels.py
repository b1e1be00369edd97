"""Label issues in a table with cleanlab, from out-of-sample predicted probabilities.

The probabilities come from a cross-validated classifier fitted on the table itself (standardised
logistic regression; the model under test is not used, so a poisoned model cannot hide its own
training set's errors). Shared by the ``label-issues`` gate and ``assay dataset scan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assay.core.errors import FormatError

__all__ = ["LabelIssues", "find_label_issues"]


@dataclass
class LabelIssues:
    rows: int
    issues: list[int]  # row numbers, most suspect first
    scores: list[float]  # cleanlab label-quality score of each (lower: more suspect)

    @property
    def rate(self) -> float:
        return len(self.issues) / self.rows if self.rows else 0.0


def find_label_issues(x: Any, y: Any, *, folds: int = 5, seed: int = 0) -> LabelIssues:
    """cleanlab's label issues of (x, y), ranked by self-confidence."""
    import numpy as np
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        raise FormatError("label issues need at least two classes in the label column")
    folds = int(min(folds, present.min()))
    if folds < 2:
        raise FormatError("label issues need at least two rows of every class")
    classes, y_dense = np.unique(y, return_inverse=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, x, y_dense, cv=cv, method="predict_proba")
    ranked = cl_find(labels=y_dense, pred_probs=probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(y_dense, probs)
    ranked = [int(i) for i in ranked]
    return LabelIssues(len(y), ranked, [round(float(scores[i]), 6) for i in ranked])
