"""``assay trace``: is this model file one of ours, which version, and how sure are we?

Three kinds of evidence, cheapest first, every candidate reported with its method and p-value:

1. **exact hash**: a weight file of the suspect is byte-identical to a file of a registered version
   (files under 64 KiB, such as configs and tokenizers, are ignored: they are shared by design);
2. **watermark, non-blind**: the suspect is paired with a registered (marked) reference tensor by
   shape and content, re-aligned (permutation, scaling, dummy neurons), and the residual is tested
   against the keyed pattern: a p-value that holds without assuming a weight distribution,
   Sidak-corrected for every hypothesis searched (each candidate version, each blind test);
3. **watermark, blind**: the suspect's own weights against each secret's pattern.

Candidate versions are indexed by the shapes they marked, then ranked by a cheap content score
(correlation with the sketch of marked values stored at registration), so only the ``top`` best references are
loaded and tested in full: tracing against hundreds of versions stays quick, and memory stays
around two copies of the suspect. Verdicts: ``match`` at corrected p <= 1e-9, ``inconclusive`` at
<= 1e-3, else ``no-match``. Tracing reports; it never fails because a suspect is not ours.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assay.core.errors import FormatError, NotFoundError
from assay.registry.artifact_access import artifact_files
from assay.registry.hashing import hash_files
from assay.registry.models import Artifact, ArtifactState, Signature, WatermarkRow
from assay.registry.oms import parse_bundle
from assay.registry.versions import display, version_key

if TYPE_CHECKING:
    import numpy as np

    from assay.registry.facade import Registry

MATCH, WEAK = 1e-9, 1e-3
MIN_EXACT_BYTES = 64 * 1024
_SAMPLE = 4096


@dataclass
class TraceCandidate:
    """One registered version and the evidence that the suspect derives from it."""

    model: str
    version: str
    method: str
    verdict: str
    statistic: float | None = None
    p_value: float | None = None
    p_corrected: float | None = None
    log10_p_corrected: float | None = None
    tensors_matched: int = 0
    similarity: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ref": self.ref}


@dataclass
class TraceReport:
    """Ranked candidates, strongest evidence first."""

    suspect: str
    candidates: list[TraceCandidate]
    searched: int
    hypotheses: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def best(self) -> TraceCandidate | None:
        return self.candidates[0] if self.candidates else None

    def summary(self) -> str:
        best = self.best()
        if best is None or best.verdict == "no-match":
            return f"{self.suspect}: no registered version matches ({self.searched} searched)"
        p = (
            "exact copy"
            if best.method == "exact-hash"
            else f"corrected p = 10^{best.log10_p_corrected:.0f}"
        )
        return f"{self.suspect}: {best.verdict} {best.ref} by {best.method} ({p})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suspect": self.suspect,
            "candidates": [c.to_dict() for c in self.candidates],
            "searched": self.searched,
            "hypotheses": self.hypotheses,
            "seconds": self.seconds,
            "notes": self.notes,
            "summary": self.summary(),
        }


def _verdict(log10_p: float) -> str:
    if log10_p <= math.log10(MATCH):
        return "match"
    return "inconclusive" if log10_p <= math.log10(WEAK) else "no-match"


@dataclass
class _Version:
    artifact_id: int
    name: str
    version: str
    uri: str
    bundle: str | None
    record: dict[str, Any] | None
    fingerprint: str | None
    shapes: list[tuple[int, ...]]


def _registered(registry: Registry, models: list[str] | None) -> list[_Version]:
    with registry.store.session(readonly=True) as session:
        query = (
            select(Artifact, WatermarkRow)
            .join(ArtifactState, ArtifactState.artifact_id == Artifact.id)
            .join(WatermarkRow, WatermarkRow.artifact_id == Artifact.id, isouter=True)
            .where(Artifact.kind == "model", ArtifactState.status == "complete")
        )
        if models:
            query = query.where(Artifact.name.in_(models))
        found = []
        for artifact, wm in session.execute(query).all():
            subject = display("model", artifact.name, artifact.version)
            bundle = session.scalar(
                select(Signature.bundle)
                .where(Signature.artifact_id == artifact.id, Signature.subject == subject)
                .order_by(Signature.id.desc())
            )
            found.append(
                _Version(
                    artifact.id,
                    artifact.name,
                    artifact.version or "",
                    artifact.uri or "",
                    bundle,
                    json.loads(wm.record) if wm else None,
                    wm.secret_fingerprint if wm else None,
                    [tuple(s) for s in json.loads(wm.shapes)] if wm else [],
                )
            )
    return found


def _suspect_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    raise NotFoundError(f"{path} does not exist")


def _exact_matches(path: Path, versions: list[_Version]) -> list[TraceCandidate]:
    files = [p for p in _suspect_files(path) if p.stat().st_size >= MIN_EXACT_BYTES]
    if not files:
        return []
    digests = {d.digest: d.path.name for d in hash_files(files)}
    found = []
    for v in versions:
        if not v.bundle:
            continue
        same = [r.name for r in parse_bundle(v.bundle).resources if r.digest in digests]
        if same:
            found.append(
                TraceCandidate(
                    v.name,
                    v.version,
                    "exact-hash",
                    "match",
                    p_corrected=0.0,
                    log10_p_corrected=-math.inf,
                    notes=[f"identical file(s): {', '.join(sorted(same))}"],
                )
            )
    return found


def _canon(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(shape))


def _compatible(suspect: tuple[int, ...], marked: tuple[int, ...]) -> bool:
    """Same rank and every dimension between the reference's and twice it (dummy neurons)."""
    s, m = _canon(suspect), _canon(marked)
    return len(s) == len(m) and all(b <= a <= 2 * b for a, b in zip(s, m, strict=True))


class _SuspectSampler:
    """The suspect's values at the sketch positions of each shape, computed once per shape.

    Ranking compares these few thousand values per tensor with each version's sketch, so tracing
    against hundreds of versions never copies or converts a whole tensor. A 2-D tensor is also
    offered transposed (exporters store linear layers either way), by index arithmetic on a view.
    """

    def __init__(self, suspect: dict[str, np.ndarray]) -> None:
        self._by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
        for arr in suspect.values():
            self._by_shape.setdefault(tuple(arr.shape), []).append(arr)
            if arr.ndim == 2:
                self._by_shape.setdefault(tuple(arr.shape[::-1]), []).append(arr.T)
        self._samples: dict[tuple[int, ...], np.ndarray | None] = {}

    def standardized(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """(peers x sketch size) z-scores of the suspect's tensors of ``shape``; None if none."""
        if shape not in self._samples:
            import numpy as np

            from assay.registry.watermarking import sketch_indices

            peers = self._by_shape.get(shape, [])
            if not peers:
                self._samples[shape] = None
            else:
                where = np.unravel_index(sketch_indices(shape), shape)
                self._samples[shape] = _zscores(
                    np.stack([np.asarray(p[where], dtype=np.float64) for p in peers])
                )
        return self._samples[shape]


def _zscores(rows: np.ndarray) -> np.ndarray:
    """Each row minus its mean over its standard deviation; constant rows become zeros."""
    import numpy as np

    centred = rows - rows.mean(axis=-1, keepdims=True)
    std = centred.std(axis=-1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def _sketch_score(sampler: _SuspectSampler, record: dict[str, Any]) -> float:
    """Mean over sketched tensors of the best |correlation| between a version's registration
    sketch and any suspect tensor of that shape (ranking only)."""
    import numpy as np

    scores = []
    for entry in record.get("files", {}).values():
        for item in entry.get("sketch", {}).values():
            peers = sampler.standardized(tuple(item["shape"]))
            r = np.asarray(item["values"], dtype=np.float64)
            if peers is None or peers.shape[1] != r.size:
                continue
            scores.append(float(np.max(np.abs(peers @ _zscores(r)))) / r.size)
    return float(np.mean(scores)) if scores else 0.0


def _load_suspect(path: Path) -> dict[str, np.ndarray]:
    from assay.watermark.formats import find_weight_files, load_weights

    if path.is_dir():
        files = find_weight_files(path)
        if not files:
            raise FormatError(f"no weight files (safetensors, torch, ONNX) in {path}")
        path = max(files, key=lambda p: p.stat().st_size)
    return load_weights(path).tensors


def _reference(registry: Registry, v: _Version) -> tuple[dict[str, np.ndarray], Any]:
    """The marked weights of ``v`` (its largest marked file) and that file's record."""
    from assay.watermark.formats import load_weights
    from assay.watermark.scheme import WatermarkRecord

    files = (v.record or {}).get("files", {})
    name = max(files, key=lambda f: sum(t.get("marked", 0) for t in files[f]["tensors"]))
    with artifact_files(registry.backend, v.uri, display("model", v.name, v.version)) as folder:
        tensors = dict(load_weights(Path(folder) / name).tensors)
    return tensors, WatermarkRecord.from_dict(files[name])


def trace_suspect(
    registry: Registry, path: str | Path, *, models: list[str] | None = None, top: int = 3
) -> TraceReport:
    """Trace the model file or folder at ``path`` against every registered version."""
    from assay.registry.watermark_secrets import all_secrets
    from assay.watermark.detect import detect

    started = time.perf_counter()
    path = Path(path)
    versions = _registered(registry, models)
    candidates = _exact_matches(path, versions)
    notes: list[str] = []
    suspect = _load_suspect(path)
    shapes = [tuple(a.shape) for a in suspect.values()]
    marked = [
        v for v in versions if v.record and any(_compatible(s, m) for s in shapes for m in v.shapes)
    ]
    secrets = all_secrets(registry)
    marked = [v for v in marked if v.fingerprint in secrets]
    sampler = _SuspectSampler(suspect)
    ranked = [(_sketch_score(sampler, v.record or {}), version_key(v.version), v) for v in marked]
    ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)
    chosen = [v for _, _, v in ranked[: max(1, top)]]
    used_secrets = sorted({v.fingerprint for v in chosen if v.fingerprint} or secrets)
    hypotheses = max(1, len(chosen) + len(used_secrets))
    for v in chosen:
        try:
            reference, record = _reference(registry, v)
        except Exception as exc:  # noqa: BLE001 - an unreadable reference is reported, not fatal
            notes.append(f"{v.name}/{v.version}: reference unreadable ({exc})")
            continue
        result = detect(
            suspect,
            secrets[v.fingerprint or ""],
            reference=reference,
            record=record,
            candidates=hypotheses,
        )
        cosines = [t.cosine for t in result.tensors if t.cosine is not None]
        candidates.append(
            TraceCandidate(
                v.name,
                v.version,
                "watermark",
                _verdict(result.log10_p_corrected),
                statistic=result.z,
                p_value=result.p_value,
                p_corrected=result.p_corrected,
                log10_p_corrected=result.log10_p_corrected,
                tensors_matched=result.tensors_matched,
                similarity=sum(cosines) / len(cosines) if cosines else None,
                notes=list(result.notes),
            )
        )
        del reference
    for fp in used_secrets:
        result = detect(suspect, secrets[fp], candidates=hypotheses)
        owner = next((v for v in chosen if v.fingerprint == fp), None)
        candidates.append(
            TraceCandidate(
                owner.name if owner else "(any)",
                owner.version if owner else "-",
                "watermark-blind",
                _verdict(result.log10_p_corrected),
                statistic=result.z,
                p_value=result.p_value,
                p_corrected=result.p_corrected,
                log10_p_corrected=result.log10_p_corrected,
                tensors_matched=result.tensors_matched,
                notes=[f"secret {fp[:16]}", *result.notes],
            )
        )
    order = {"exact-hash": 0, "watermark": 1, "watermark-blind": 2}
    candidates.sort(
        key=lambda c: (
            c.log10_p_corrected if c.log10_p_corrected is not None else 0.0,
            order[c.method],
        )
    )
    if not marked:
        notes.append("no registered version has a watermark on tensors of these shapes")
    return TraceReport(
        str(path), candidates, len(versions), hypotheses, time.perf_counter() - started, notes
    )
