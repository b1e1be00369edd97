"""``assay trace``: is this model file one of ours, which version, and how sure are we?

Three kinds of evidence, cheapest first, every candidate reported with its method and p-value:

1. **exact hash**: the model files (weights, model payloads) of a registered version are
   byte-identical in the suspect (``match`` when all are, ``inconclusive`` when some are);
   tokenizers, vocabularies and configs are shared by independent models by design and are only
   noted;
2. **watermark, non-blind**: each marked reference tensor is paired with a suspect tensor of its
   shape (either orientation) by the correlation of the registration sketch, and the residual
   against the reconstructed original is tested against the keyed pattern, position by position,
   one tensor pair in memory at a time (``assay.watermark.streaming``). Only when no tested
   version matched that way (corrected p <= ``EARLY``) is the suspect re-aligned (permutation,
   scaling, dummy neurons; ``assay.watermark.detect``, whole models in memory) and tested again;
   a version reports the smaller p of its tests. p-values hold without assuming a weight
   distribution and are Sidak-corrected for every test that could run (two per tested version,
   one blind test per secret), so stopping early never lowers a reported p;
3. **watermark, blind**: the suspect's own weights against each secret's pattern (skipped for a
   secret whose version already matched non-blind).

Candidate versions are ranked in one pass over the trace index (``sketch_index``: per version and
marked shape, a few marked values; one matrix product per shape), so only the ``top`` best
references are read: trace time stays roughly flat in the number of versions. Verdicts:
``match`` at corrected p <= 1e-9, ``inconclusive`` at <= 1e-3, else ``no-match``. Tracing
reports; it never fails because a suspect is not ours.

Attribution. Every version marked under one secret carries the same pattern, so a copy of one
version shows the mark against its siblings too, diluted by their different weights (the statistic
falls with the residual's size: z 58 for the right version, 9 for a sibling of a 2 M-parameter
MLP). The p-value of a sibling is honest about "our mark is here", not about "this version": so a
sibling whose statistic is below ``SIBLING_RATIO`` of the best one under its secret is reported
``inconclusive`` with a note naming the version that explains the mark.
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
from assay.integrity.hashing import hash_files
from assay.integrity.oms import parse_bundle
from assay.mlflow_access.artifacts import artifact_files
from assay.registry.versions import display, version_key
from assay.store.models import Artifact, ArtifactState, Signature, WatermarkRow

if TYPE_CHECKING:
    import numpy as np

    from assay.registry.facade import Registry
    from assay.watermark.detect import DetectionResult
    from assay.watermark.formats._stream import TensorSource
    from assay.watermark.streaming import Pair

MATCH, WEAK = 1e-9, 1e-3
#: a position-wise corrected p at or below this ends the search (three decades past ``MATCH``)
EARLY = 1e-12
#: a non-blind match weaker than this fraction of the best statistic under its secret is a sibling
SIBLING_RATIO = 0.5
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

    @property
    def evidence(self) -> str:
        """The p-value in words: ``exact copy``, ``partial copy`` or ``corrected p = ...``."""
        if self.method == "exact-hash":
            return "exact copy" if self.verdict == "match" else "partial copy"
        if self.log10_p_corrected is None:
            return "no p-value"
        return f"corrected p = 10^{self.log10_p_corrected:.0f}"

    def to_dict(self) -> dict[str, Any]:
        """As JSON allows: an exact copy's log10 p of minus infinity is ``null`` (p is 0)."""
        out = {**asdict(self), "ref": self.ref}
        for key in ("statistic", "p_value", "p_corrected", "log10_p_corrected", "similarity"):
            if isinstance(out[key], float) and not math.isfinite(out[key]):
                out[key] = None
        return out


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
        return f"{self.suspect}: {best.verdict} {best.ref} by {best.method} ({best.evidence})"

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


def _registered(
    registry: Registry, models: list[str] | None, *, with_records: bool = True
) -> list[_Version]:
    """Complete model versions with their latest bundle and watermark (record only on request:
    tracing loads the records of the few versions it tests, see :func:`_with_record`)."""
    columns = [WatermarkRow.secret_fingerprint]
    if with_records:  # tracing reads shapes from the index and records only for what it tests
        columns += [WatermarkRow.shapes, WatermarkRow.record]
    with registry.store.session(readonly=True) as session:
        query = (
            select(Artifact, *columns)
            .join(ArtifactState, ArtifactState.artifact_id == Artifact.id)
            .join(WatermarkRow, WatermarkRow.artifact_id == Artifact.id, isouter=True)
            .where(Artifact.kind == "model", ArtifactState.status == "complete")
        )
        if models:
            query = query.where(Artifact.name.in_(models))
        rows = session.execute(query).all()
        ids = [row[0].id for row in rows]
        signed: set[int] = set()
        for at in range(0, len(ids), 500):  # one query per 500 versions, not one per version
            signed.update(
                session.scalars(
                    select(Signature.artifact_id)
                    .where(Signature.artifact_id.in_(ids[at : at + 500]))
                    .distinct()
                )
            )
        found = []
        for row in rows:
            artifact, fingerprint = row[0], row[1]
            shapes = row[2] if with_records else None
            subject = display("model", artifact.name, artifact.version)
            bundle = (
                _latest_bundle(session, artifact.id, subject) if artifact.id in signed else None
            )
            record = json.loads(row[3]) if with_records and row[3] else None
            found.append(
                _Version(
                    artifact.id,
                    artifact.name,
                    artifact.version or "",
                    artifact.uri or "",
                    bundle,
                    record,
                    fingerprint,
                    [tuple(x) for x in json.loads(shapes)] if shapes else [],
                )
            )
    return found


def _latest_bundle(session: Any, artifact_id: int, subject: str) -> str | None:
    return session.scalar(
        select(Signature.bundle)
        .where(Signature.artifact_id == artifact_id, Signature.subject == subject)
        .order_by(Signature.id.desc())
    )


def _with_record(registry: Registry, v: _Version) -> _Version:
    if v.record is None:
        with registry.store.session(readonly=True) as session:
            text = session.scalar(
                select(WatermarkRow.record).where(WatermarkRow.artifact_id == v.artifact_id)
            )
        v.record = json.loads(text) if text else None
    return v


def _suspect_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    raise NotFoundError(f"{path} does not exist")


def _exact_matches(path: Path, versions: list[_Version], notes: list[str]) -> list[TraceCandidate]:
    """Versions whose model files (weights, model payloads) are byte-identical in the suspect.

    Only model files count (``is_model_file_name``; a file named as the suspect itself always
    does): tokenizers, vocabularies and configs are shared by independent models by design, so an
    identical one is a note, never a match. ``match`` needs every model file of the version; a
    version some of whose model files are identical is ``inconclusive`` (the watermark tests say
    more). Files over the weight readers' size bound are not hashed.
    """
    from assay.watermark.formats import Limits, is_model_file_name

    limit = Limits().max_file_bytes
    files = []
    for p in _suspect_files(path):
        size = p.stat().st_size
        if p == path or is_model_file_name(p.name):
            if 0 < size <= limit:
                files.append(p)
        elif MIN_EXACT_BYTES <= size <= limit:
            files.append(p)
    if not files:
        return []
    digests = {d.digest: d.path.name for d in hash_files(files)}
    found: list[tuple[int, TraceCandidate]] = []
    for v in versions:
        if not v.bundle:
            continue
        resources = parse_bundle(v.bundle).resources
        model = [r for r in resources if is_model_file_name(r.name)]
        same = sorted(r.name for r in model if r.digest in digests)
        shared = sorted(r.name for r in resources if r.digest in digests and r not in model)
        if not same:
            if shared:
                notes.append(
                    f"{v.name}/{v.version}: identical non-model file(s) {', '.join(shared)} "
                    "(shared by design; not evidence)"
                )
            continue
        whole = len(same) == len(model)
        found.append(
            (
                len(same),
                TraceCandidate(
                    v.name,
                    v.version,
                    "exact-hash",
                    "match" if whole else "inconclusive",
                    p_corrected=0.0 if whole else None,
                    log10_p_corrected=-math.inf if whole else None,
                    notes=[
                        f"identical model file(s): {', '.join(same)}"
                        + ("" if whole else f" ({len(same)} of its {len(model)} model files)")
                    ],
                ),
            )
        )
    found.sort(key=lambda t: -t[0])
    return [c for _, c in found]


def _canon(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(shape))


def _compatible(suspect: tuple[int, ...], marked: tuple[int, ...]) -> bool:
    """Same rank and every dimension between the reference's and twice it (dummy neurons)."""
    s, m = _canon(suspect), _canon(marked)
    return len(s) == len(m) and all(b <= a <= 2 * b for a, b in zip(s, m, strict=True))


class _SuspectSampler:
    """The suspect's values at the sketch positions of each shape, read once per shape.

    Ranking and pairing compare these few hundred values per tensor with each version's sketch,
    so neither reads a whole tensor (one small read per sampled element). A 2-D tensor is
    also offered transposed (exporters store linear layers either way).
    """

    def __init__(self, suspect: TensorSource) -> None:
        self.suspect = suspect
        self._by_shape: dict[tuple[int, ...], list[tuple[str, bool]]] = {}
        for name, shape in suspect.shapes.items():
            self._by_shape.setdefault(tuple(shape), []).append((name, False))
            if len(shape) == 2:
                self._by_shape.setdefault(tuple(shape[::-1]), []).append((name, True))
        self._samples: dict[tuple[int, ...], np.ndarray | None] = {}

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return list(self._by_shape)

    def peers(self, shape: tuple[int, ...]) -> list[tuple[str, bool]]:
        """Suspect tensors of ``shape``: ``(name, read transposed)``."""
        return self._by_shape.get(tuple(shape), [])

    def standardized(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """(peers x sketch size) z-scores of the suspect's tensors of ``shape``; None if none."""
        shape = tuple(shape)
        if shape not in self._samples:
            import numpy as np

            from assay.watermark.sketch import sketch_indices, zscores

            peers = self.peers(shape)
            if not peers:
                self._samples[shape] = None
            else:
                where = np.unravel_index(sketch_indices(shape), shape)
                rows = []
                for name, transposed in peers:
                    stored = self.suspect.shapes[name]
                    coords = where[::-1] if transposed else where
                    rows.append(self.suspect.sample(name, np.ravel_multi_index(coords, stored)))
                rows = np.stack(rows)
                rows[~np.isfinite(rows)] = 0.0  # one NaN must not hide a whole tensor
                self._samples[shape] = zscores(rows)
        return self._samples[shape]

    def by_key(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Suspect z-scores for each shape key of the sketch index that it has."""
        from assay.watermark.sketch import shape_key

        out = {}
        for shape in self.shapes:
            key = shape_key(shape)
            if key in keys:
                z = self.standardized(shape)
                if z is not None:
                    out[key] = z
        return out


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


def _open_suspect(path: Path) -> TensorSource:
    """The suspect's weights, streamed: a file, a sharded folder (index), or a folder's largest
    weight file."""
    from assay.watermark.formats import find_weight_files
    from assay.watermark.formats._index import find_index
    from assay.watermark.formats._stream import open_weights

    if path.is_dir() and find_index(path) is None:
        files = find_weight_files(path)
        if not files:
            raise FormatError(f"no weight files (safetensors, torch, ONNX) in {path}")
        path = max(files, key=lambda p: p.stat().st_size)
    return open_weights(path)


def _pairs(sampler: _SuspectSampler, record: dict[str, Any]) -> list[tuple[str, Pair]]:
    """``(file, pair)`` for every marked tensor of a version that a same-shape suspect tensor can
    stand for, chosen by Hungarian assignment on the sketch correlation (a same name adds 0.5).
    Grouped by pattern label, so the test holds one pattern sum at a time."""
    import numpy as np

    from assay.watermark.scheme import WatermarkRecord
    from assay.watermark.sketch import zscores
    from assay.watermark.streaming import Pair

    out: list[tuple[str, Pair]] = []
    for file, entry in sorted((record.get("files") or {}).items()):
        rec = WatermarkRecord.from_dict(entry)
        sketches = entry.get("sketch") or {}
        by_shape: dict[tuple[int, ...], list[Any]] = {}
        for mark in rec.tensors:
            if mark.marked and sampler.peers(mark.shape):
                by_shape.setdefault(tuple(mark.shape), []).append(mark)
        for shape, marks in by_shape.items():
            peers = sampler.peers(shape)
            z = sampler.standardized(shape)
            score = np.zeros((len(marks), len(peers)))
            for i, mark in enumerate(marks):
                values = (sketches.get(mark.name) or {}).get("values")
                if values is not None and z is not None and len(values) == z.shape[1]:
                    r = zscores(np.asarray(values, dtype=np.float64)[None, :])[0]
                    score[i] = np.abs(z @ r) / r.size
                score[i] += [0.5 if name == mark.name else 0.0 for name, _ in peers]
            rows, cols = _assign(score)
            for i, j in zip(rows, cols, strict=True):
                name, transposed = peers[j]
                out.append((file, Pair(marks[i].name, name, transposed, marks[i])))
    out.sort(key=lambda fp: fp[1].mark.pattern)
    return out


def _assign(score: np.ndarray) -> tuple[list[int], list[int]]:
    """The assignment maximising ``score``: when every row's best column is a different column
    and every such pair is also its column's best (mutual best matches, the common case of a
    copy), that is the optimum and scipy's Hungarian solver is not even imported."""
    import numpy as np

    if score.size:
        best_col = np.argmax(score, axis=1)
        best_row = np.argmax(score, axis=0)
        rows = np.arange(score.shape[0])
        if len(set(best_col.tolist())) == len(rows) and np.all(best_row[best_col] == rows):
            return rows.tolist(), best_col.tolist()
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(-score)
    return r.tolist(), c.tolist()


def _positionwise(
    registry: Registry, v: _Version, sampler: _SuspectSampler, secret: bytes, hypotheses: int
) -> DetectionResult | None:
    """The cheap non-blind test of one version: every marked file, no re-alignment."""
    from assay.watermark.formats._stream import open_weights
    from assay.watermark.scheme import WatermarkRecord
    from assay.watermark.streaming import positionwise

    record = v.record or {}
    pairs = _pairs(sampler, record)
    if not pairs:
        return None
    first = WatermarkRecord.from_dict(next(iter(record["files"].values())))
    with artifact_files(registry.backend, v.uri, display("model", v.name, v.version)) as folder:
        sources: dict[str, TensorSource] = {}

        def refs():
            for file, pair in pairs:
                if file not in sources:
                    sources[file] = open_weights(Path(folder) / file)
                yield sources[file], pair

        return positionwise(sampler.suspect, secret, refs(), first, hypotheses=hypotheses)


def _candidate(v: _Version, result: DetectionResult, notes: list[str]) -> TraceCandidate:
    cosines = [t.cosine for t in result.tensors if t.cosine is not None]
    return TraceCandidate(
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
        notes=[*notes, *result.notes],
    )


def _rank(
    registry: Registry, versions: list[_Version], sampler: _SuspectSampler, secrets: dict
) -> list[_Version]:
    """Versions whose marked shapes fit the suspect (and whose secret is here), best first.

    Scores come from the sketch index (one matrix product per shape); a version with no index rows
    is ranked by shape alone (score 0), as its record holds no sketch either.
    """
    from assay.registry.sketch_index import indexed_shapes, load_blocks
    from assay.watermark.sketch import rank

    shapes = sampler.shapes
    with registry.store.session(readonly=True) as session:
        blocks = load_blocks(session, shapes)
        exact = {int(a) for block in blocks.values() for a in block.artifact_ids.tolist()}
        indexed = indexed_shapes(session, exclude=shapes)  # rows of shapes the suspect lacks
        unindexed = [
            v.artifact_id
            for v in versions
            if v.fingerprint and v.artifact_id not in exact and v.artifact_id not in indexed
        ]
        for at in range(0, len(unindexed), 500):  # versions with no index rows: their shapes
            for artifact_id, text in session.execute(
                select(WatermarkRow.artifact_id, WatermarkRow.shapes).where(
                    WatermarkRow.artifact_id.in_(unindexed[at : at + 500])
                )
            ):
                indexed[artifact_id] = [tuple(x) for x in json.loads(text or "[]")]
    scores = rank(blocks, sampler.by_key(list(blocks)))
    fits = []
    for v in versions:
        if v.fingerprint not in secrets:
            continue
        marked = indexed.get(v.artifact_id) or v.shapes
        if v.artifact_id in exact or any(_compatible(s, m) for s in shapes for m in marked):
            fits.append((scores.get(v.artifact_id, 0.0), version_key(v.version), v))
    fits.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [v for _, _, v in fits]


def trace_suspect(
    registry: Registry, path: str | Path, *, models: list[str] | None = None, top: int = 3
) -> TraceReport:
    """Trace the model file or folder at ``path`` against every registered version.

    Per chosen version the position-wise test runs first (tensors streamed one pair at a time);
    the re-aligning test (``detect``, the whole suspect and reference in memory) runs only when no
    chosen version matched position-wise with p far below the threshold (``EARLY``) and the version
    has tensors the suspect's shapes fit. Both tests of every chosen version count as hypotheses in
    the Sidak correction whether or not they run, so stopping early never lowers a reported p.
    """
    from assay.registry.watermark_secrets import all_secrets
    from assay.watermark.streaming import blind

    started = time.perf_counter()
    path = Path(path)
    versions = _registered(registry, models, with_records=False)
    notes: list[str] = []
    suspect = _open_suspect(path)  # refuses a malformed or oversized suspect before any hashing
    candidates = _exact_matches(path, versions, notes)
    sampler = _SuspectSampler(suspect)
    secrets = all_secrets(registry)
    marked = _rank(registry, versions, sampler, secrets)
    chosen = [_with_record(registry, v) for v in marked[: max(1, top)]]
    chosen = [v for v in chosen if v.record]
    used_secrets = sorted({v.fingerprint for v in chosen if v.fingerprint} or secrets)
    hypotheses = max(1, 2 * len(chosen) + len(used_secrets))
    cheap: dict[int, DetectionResult] = {}
    unreadable: set[int] = set()
    for v in chosen:
        try:
            result = _positionwise(registry, v, sampler, secrets[v.fingerprint or ""], hypotheses)
        except Exception as exc:  # noqa: BLE001 - an unreadable reference is reported, not fatal
            notes.append(f"{v.name}/{v.version}: reference unreadable ({exc})")
            unreadable.add(v.artifact_id)
            continue
        if result is not None:
            cheap[v.artifact_id] = result
    early = any(r.log10_p_corrected <= math.log10(EARLY) for r in cheap.values())
    for v in chosen:
        pw = cheap.get(v.artifact_id)
        if v.artifact_id in unreadable:
            continue
        if pw is None and early:
            notes.append(f"{v.name}/{v.version}: not re-aligned: another version matched")
            continue
        if pw is not None and (early or pw.log10_p_corrected <= math.log10(EARLY)):
            why = "position-wise test" + (
                ""
                if pw.log10_p_corrected <= math.log10(EARLY)
                else "; re-alignment skipped: another version matched"
            )
            candidates.append(_candidate(v, pw, [why]))
            continue
        try:
            aligned = _aligned(registry, v, suspect, secrets[v.fingerprint or ""], hypotheses)
        except Exception as exc:  # noqa: BLE001 - an unreadable reference is reported, not fatal
            notes.append(f"{v.name}/{v.version}: reference unreadable ({exc})")
            continue
        best = aligned if pw is None or aligned.log10_p <= pw.log10_p else pw
        label = "re-aligned test" if best is aligned else "position-wise test (re-aligned: weaker)"
        candidates.append(_candidate(v, best, [label]))
    notes += _attribute(candidates, {f"{v.name}/{v.version}": v.fingerprint for v in chosen})
    matched = {c.ref for c in candidates if c.method == "watermark" and c.verdict == "match"}
    for fp in used_secrets:
        owner = next((v for v in chosen if v.fingerprint == fp), None)
        if owner is not None and early and f"{owner.name}/{owner.version}" in matched:
            notes.append(f"blind test of secret {fp[:16]} skipped: a non-blind test matched")
            continue
        result = blind(suspect, secrets[fp], shapes=suspect.shapes, hypotheses=hypotheses)
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


def _attribute(candidates: list[TraceCandidate], secrets_of: dict[str, str | None]) -> list[str]:
    """Demote non-blind matches that the mark shared with a better-fitting sibling explains;
    returns one report note per demoted candidate."""
    best: dict[str, TraceCandidate] = {}
    for c in candidates:
        fp = secrets_of.get(c.ref)
        if c.method != "watermark" or not fp or c.statistic is None:
            continue
        top = best.get(fp)
        if top is None or c.statistic > (top.statistic or 0.0):
            best[fp] = c
    notes = []
    for c in candidates:
        top = best.get(secrets_of.get(c.ref) or "")
        if c.method != "watermark" or c.verdict != "match" or top is None or top is c:
            continue
        if (c.statistic or 0.0) < SIBLING_RATIO * (top.statistic or 0.0):
            c.verdict = "inconclusive"
            why = (
                f"our mark, but {top.ref} explains it better (statistic {c.statistic:.1f} vs "
                f"{top.statistic:.1f}): versions under one secret share its pattern"
            )
            c.notes.append(why)
            notes.append(f"{c.ref}: {why}")
    return notes


def _aligned(
    registry: Registry, v: _Version, suspect: TensorSource, secret: bytes, hypotheses: int
) -> DetectionResult:
    """The re-aligning test (permutation, scaling, dummy units): whole tensors in memory."""
    import numpy as np

    from assay.watermark.detect import detect

    reference, record = _reference(registry, v)

    def finite(a: np.ndarray) -> np.ndarray:
        """Non-finite values carry no evidence (and must not poison the alignment); a tensor
        without any is passed as it is, not copied (this path holds whole models already)."""
        a = np.asarray(a)
        if np.isfinite(a).all():
            return a
        return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)

    tensors = {n: finite(a) for n, a in suspect.items()}
    return detect(tensors, secret, reference=reference, record=record, candidates=hypotheses)
