"""Behavioural trace: does a suspect model answer the recorded answer marks?

``assay trace --behaviour SUSPECT`` replays the inputs of every recorded answer mark
(``serve_marks``, each distinct input once) through SUSPECT and scores its answers with the exact
binomial tests of :mod:`assay.serving._mark_stats`: label marks (a label answer that differs from
the served model's own answer agrees with the keyed marked label with chance ``1 / (K - 1)``; a
score row's top label other than the own answer, on every mark, likewise) and perturbation marks
of regression / embedding answers (the sign of the suspect's deviation from the own answer along
the keyed perturbation: chance 1/2). p-values are one-sided, in log space, Bonferroni-corrected
over the versions tested. Binary classifiers give no evidence by label marks and are reported as
such.

SUSPECT is loaded in a sandboxed way: an ``.onnx`` file through onnxruntime (no custom operators;
no Python code runs). A pyfunc folder would run the suspect's own code, so it is loaded only with
``trust_suspect_code`` (``--trust-suspect-code``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError, FormatError, UnsafeInputError
from assay.serving._mark_stats import is_perturbation, log10_binom_tail, score_marks, unique_marks

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = [
    "BehaviourCandidate",
    "BehaviourReport",
    "behaviour_trace",
    "log10_binom_tail",
    "score_marks",
]

MATCH, WEAK = 1e-9, 1e-3
MAX_SUSPECT_BYTES = 4 * 1024**3
MAX_MARKS = 100_000
BATCH = 512
#: the whole replay of the marked inputs through an ONNX suspect (its graph is attacker-made)
RUN_DEADLINE_S = 600.0


@dataclass(frozen=True)
class BehaviourCandidate:
    model: str
    version: str
    marks: int
    agreed: int
    labels: int
    log10_p: float
    log10_p_corrected: float
    verdict: str
    test: str = "label"  # mark_stats: "label", "scores" or "direction"
    trials: int = 0
    p0: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "method": "answer-marks",
            "test": self.test,
            "marks": self.marks,
            "trials": self.trials,
            "agreed": self.agreed,
            "p0": self.p0,
            "labels": self.labels,
            "log10_p": self.log10_p,
            "log10_p_corrected": self.log10_p_corrected,
            "p_corrected": 10**self.log10_p_corrected,
            "verdict": self.verdict,
        }


@dataclass
class BehaviourReport:
    suspect: str
    candidates: list[BehaviourCandidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suspect": self.suspect,
            "method": "behaviour",
            "candidates": [c.to_dict() for c in self.candidates],
            "notes": self.notes,
        }

    def summary(self) -> str:
        best = self.candidates[0] if self.candidates else None
        if best is None or best.verdict == "no-match":
            return f"{self.suspect}: no-match (no version's answer marks are reproduced)"
        return (
            f"{self.suspect}: {best.verdict} {best.model}/{best.version} by answer marks "
            f"({best.agreed}/{best.trials} agreed, p = 10^{best.log10_p_corrected:.1f})"
        )


def _verdict(log10_p: float) -> str:
    if log10_p <= math.log10(MATCH):
        return "match"
    return "inconclusive" if log10_p <= math.log10(WEAK) else "no-match"


def _answers(result: Any) -> list[Any]:
    """Raw answers of a batch: a label or number per row (1-D) or a list of floats (2-D)."""
    import numpy as np

    result = np.asarray(result)
    if result.ndim == 2:
        return [[float(v) for v in row] for row in result.tolist()]
    return [v.item() if hasattr(v, "item") else v for v in result.reshape(-1)]


def _labels(answers: list[Any]) -> list[Any]:
    return [max(range(len(a)), key=a.__getitem__) if isinstance(a, list) else a for a in answers]


class OnnxSuspect:
    """An ONNX model run by onnxruntime: first input fed float32 rows, first output read as
    labels or numbers (1-D) or score / embedding rows (2-D)."""

    def __init__(self, path: Path, *, deadline_s: float = RUN_DEADLINE_S) -> None:
        import onnxruntime as ort

        self.deadline = time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        if path.stat().st_size > MAX_SUSPECT_BYTES:
            raise FormatError(f"{path} is larger than {MAX_SUSPECT_BYTES // 1024**3} GiB")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            raise FormatError(
                f"{path.name}: not a loadable ONNX model: {' '.join(str(exc).split())[:200]}"
            ) from exc
        self.input = self.session.get_inputs()[0]

    def predict(self, rows: Any) -> list[Any]:
        """Labels (score rows read by argmax)."""
        return _labels(self.outputs(rows))

    def outputs(self, rows: Any) -> list[Any]:
        """Raw answers, one per row (see :func:`_answers`)."""
        import numpy as np

        shape = [d if isinstance(d, int) else -1 for d in self.input.shape]
        out: list[Any] = []
        for start in range(0, len(rows), BATCH):
            batch = np.asarray(rows[start : start + BATCH], dtype=np.float32)
            if len(shape) > 2:
                batch = batch.reshape([len(batch), *[abs(d) for d in shape[1:]]])
            result = self._run(batch)
            out.extend(_answers(result))
        return out

    def _run(self, batch: Any) -> Any:
        """One ``session.run`` under the replay's deadline: a suspect's graph is attacker-made
        (a ``Loop`` of 10^12 turns is valid ONNX), so a timer sets onnxruntime's own
        ``RunOptions.terminate`` when the time is up."""
        import onnxruntime as ort

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssayError(self._late())
        options = ort.RunOptions()
        timer = threading.Timer(left, setattr, (options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return self.session.run(None, {self.input.name: batch}, options)[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            if options.terminate:
                raise AssayError(self._late()) from None
            raise FormatError(
                f"the suspect cannot evaluate the marked inputs: {' '.join(str(exc).split())[:200]}"
            ) from exc
        finally:
            timer.cancel()

    def _late(self) -> str:
        return (
            f"the suspect did not answer the marked inputs within {self.deadline_s:g} s "
            "(its graph may loop); nothing was scored"
        )


class PyfuncSuspect:
    def __init__(self, path: Path) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(str(path))

    def predict(self, rows: Any) -> list[Any]:
        return _labels(self.outputs(rows))

    def outputs(self, rows: Any) -> list[Any]:
        import numpy as np

        return _answers(self.model.predict(np.asarray(rows)))


def open_suspect(path: Path, *, trust_suspect_code: bool = False) -> Any:
    if path.is_file() and path.suffix.lower() == ".onnx":
        return OnnxSuspect(path)
    if path.is_dir() and (path / "MLmodel").is_file():
        if not trust_suspect_code:
            raise UnsafeInputError(
                f"{path} is an MLflow pyfunc folder: loading it runs the suspect's code; "
                "pass --trust-suspect-code to do that (in a sandbox), or export it to ONNX"
            )
        return PyfuncSuspect(path)
    raise FormatError(f"{path}: a behavioural trace takes an .onnx file or an MLflow model folder")


def _marks(registry: Registry, models: list[str] | None) -> dict[tuple[str, str], list[Any]]:
    from sqlalchemy import select

    from assay.store.models import ServeMark

    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    with registry.store.session(readonly=True) as session:
        query = select(ServeMark).order_by(ServeMark.id).limit(MAX_MARKS)
        if models:
            query = query.where(ServeMark.model_name.in_(models))
        for row in session.scalars(query):
            given = json.loads(row.input)
            if not isinstance(given, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in given
            ):
                continue  # a non-numeric input (string features): suspects are fed float rows
            groups[(row.model_name, row.version)].append(
                (given, json.loads(row.answer), json.loads(row.original))
            )
    return {k: unique_marks(v) for k, v in groups.items()}


def behaviour_trace(
    registry: Registry,
    suspect_path: Path | str,
    *,
    models: list[str] | None = None,
    trust_suspect_code: bool = False,
    suspect: Any | None = None,
    max_queries: int | None = None,
) -> BehaviourReport:
    """Replay the recorded answer marks through the suspect; candidates best first.

    ``suspect``: an opened suspect (``outputs(rows) -> raw answers``, or ``predict(rows) ->
    labels``; e.g. an :class:`~assay.serving.endpoint.EndpointSuspect`) instead of the file
    ``suspect_path``.
    ``max_queries``: replay at most this many marks in all (split evenly over the versions).
    """
    report = BehaviourReport(str(suspect_path))
    groups = _marks(registry, models)
    if not groups:
        report.notes.append("no answer marks are recorded (assay serve records them as it answers)")
        return report
    if suspect is None:
        suspect = open_suspect(Path(suspect_path), trust_suspect_code=trust_suspect_code)
    tested = len(groups)
    share = None if max_queries is None else max(1, max_queries // tested)
    for (model, version), marks in groups.items():
        if share is not None and len(marks) > share:
            report.notes.append(
                f"{model}/{version}: {share} of its {len(marks)} marks replayed (--max-queries)"
            )
            marks = marks[:share]
        widths = {len(m[0]) for m in marks}
        if len(widths) != 1:
            raise AssayError(f"{model}/{version}: marked inputs of different widths")
        run = getattr(suspect, "outputs", None) or suspect.predict
        answers = run([m[0] for m in marks])
        kinds = [is_perturbation(m) for m in marks]
        if any(kinds) and not all(kinds):  # label and perturbation marks: the label ones
            answers = [a for a, k in zip(answers, kinds, strict=True) if not k]
            marks = [m for m, k in zip(marks, kinds, strict=True) if not k]
        score = score_marks(answers, marks)
        if score.test != "direction" and score.labels <= 2:
            report.notes.append(
                f"{model}/{version}: {score.labels} labels seen in its marks: label marks carry "
                "no evidence for a binary classifier"
            )
        corrected = min(0.0, score.log10_p + math.log10(tested))
        report.candidates.append(
            BehaviourCandidate(
                model,
                version,
                score.marks,
                score.agreed,
                score.labels,
                score.log10_p,
                corrected,
                _verdict(corrected),
                test=score.test,
                trials=score.trials,
                p0=score.p0,
            )
        )
    report.candidates.sort(key=lambda c: c.log10_p_corrected)
    return report
