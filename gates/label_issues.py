"""``label-issues``: the share of rows of the training table whose label cleanlab doubts.

Parameters: ``max_issue_rate`` (the gate passes at or below it) and ``max_suspects`` (how many
suspect rows the result lists).
"""

from __future__ import annotations

from typing import Any

from assay.gates.base import GateContext, Outcome

__all__ = ["LabelIssuesGate"]


class LabelIssuesGate:
    name = "label-issues"
    defaults: dict[str, Any] = {"max_issue_rate": 0.05, "max_suspects": 20}

    def run(self, context: GateContext) -> Outcome:
        from assay.gates._labels import find_label_issues

        table = context.need_data(self.name)
        found = find_label_issues(table.x, table.y)
        limit = int(context.params["max_suspects"])
        metrics = {
            "rows": found.rows,
            "issues": len(found.issues),
            "issue_rate": round(found.rate, 6),
            "suspect_rows": [
                {"row": r, "score": s}
                for r, s in zip(found.issues[:limit], found.scores[:limit], strict=True)
            ],
        }
        ceiling = float(context.params["max_issue_rate"])
        passed = found.rate <= ceiling
        detail = (
            f"{len(found.issues)} of {found.rows} labels doubted ({found.rate:.1%}, "
            f"{'<=' if passed else '>'} {ceiling:.1%})"
        )
        return Outcome(passed, metrics, detail)
