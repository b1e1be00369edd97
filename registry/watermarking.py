"""The seam between registration and ``assay.watermark``: embed a mark into staged weights.

``embed_into_folder`` finds the weight files of a staged model folder (safetensors, torch, ONNX),
embeds the keyed watermark into each in place, and returns what the store keeps: the record (no
secret), the marked shapes (the trace index) and the secret's fingerprint. A folder with no weight
file at all (an MLflow scikit-learn model: ``model.pkl`` or ``model.skops``) is signed without a
watermark; a weight file that does not parse fails the registration (it is never skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.atomic import publish_replace
from assay.core.errors import AssayError, NotFoundError
from assay.watermark.sketch import sketch

if TYPE_CHECKING:
    from assay.registry.facade import Registry


@dataclass
class WatermarkOutcome:
    """What was embedded: per-file records (no secret), marked shapes, the secret's fingerprint."""

    secret_fingerprint: str
    record: dict[str, Any]
    shapes: list[list[int]] = field(default_factory=list)
    parameters: int = 0
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "secret_fingerprint": self.secret_fingerprint,
            "tensors": len(self.shapes),
            "parameters": self.parameters,
            "files": self.files,
            "strength": self.record.get("strength"),
        }

    def audit_payload(self) -> dict[str, Any]:
        return self.summary()


#: Why a registration carries no watermark (``RegisterResult.watermark_note``).
NO_WEIGHTS = "none (no weight tensors)"
NOT_INSTALLED = "none (the [watermark] extra is not installed)"
TURNED_OFF = "none (--no-watermark)"


def weight_files(folder: Path) -> list[Path]:
    """The weight files of the staged model ``folder``; ``[]`` when it holds none at all."""
    from assay.watermark.formats import find_weight_files

    if not folder.is_dir():
        raise NotFoundError(f"{folder} is not a folder")
    try:
        return list(find_weight_files(folder))
    except NotFoundError:  # "no weight files in ...": nothing to mark, only to sign
        return []


def _sketch_one(name: str, marked: Any) -> dict[str, Any]:
    return sketch({name: marked})[name]


def _embed_file(path: Path, secret: bytes, strength: float) -> tuple[Any, dict[str, Any]]:
    """Mark one staged weight file in place: tensor by tensor (one in memory at a time) when
    ``open_weights(path, writable=True)`` gives an in-place source (safetensors, a torch archive
    of stored records with no tied weights, an ONNX model with external data), else through
    ``save_weights`` of the eager reader's weights and an atomic replace.

    A file that does not parse raises its own error; a marking failure is named with the file.
    """
    from assay.watermark.formats import save_weights
    from assay.watermark.formats._stream import open_weights
    from assay.watermark.scheme import embed
    from assay.watermark.streaming import embed_source

    def failed(exc: AssayError) -> AssayError:
        return AssayError(f"cannot watermark {path.name}: {exc} (use --no-watermark to skip)")

    source = open_weights(path, writable=True)
    if source.in_place:
        from assay.watermark.scheme import WatermarkError

        try:
            return embed_source(source, secret, strength=strength, sketch=_sketch_one)
        except WatermarkError as exc:
            raise failed(exc) from exc
    weights = source.weight_file
    try:
        result = embed(weights.tensors, secret, strength=strength)
    except AssayError as exc:
        raise failed(exc) from exc
    tmp = path.with_name(f".{path.name}.marked")
    save_weights(weights, result.tensors, tmp)
    publish_replace(tmp, path)
    return result.record, sketch(result.tensors)


def _markable(path: Path) -> bool:
    """Whether weight file ``path`` has a tensor that can carry the mark (non-safetensors files
    are left to ``_embed_file``, which names the file if it cannot be marked)."""
    from assay.watermark.formats import detect_format

    if detect_format(path) != "safetensors":
        return True
    from assay.watermark.formats._stream import open_weights
    from assay.watermark.streaming import markable

    return bool(markable(open_weights(path).shapes))


def watermark_available() -> bool:
    """Whether the ``[watermark]`` extra (numpy and the format readers) is installed."""
    try:
        import assay.watermark.formats  # noqa: F401
        import assay.watermark.scheme  # noqa: F401
    except ImportError:
        return False
    return True


def embed_into_folder(
    registry: Registry, folder: Path, *, strength: float | None = None
) -> WatermarkOutcome | None:
    """Embed the registry's watermark into the weights under ``folder``.

    Returns None when the folder holds no weight file at all (or the ``[watermark]`` extra is not
    installed: see :func:`watermark_available`); a weight file that does not parse raises.
    """
    if not watermark_available():
        return None
    from assay.registry.watermark_secrets import pending_secret
    from assay.watermark.scheme import DEFAULT_STRENGTH

    files = weight_files(folder)
    if not files:
        return None
    used = strength if strength is not None else DEFAULT_STRENGTH
    secret, keep = pending_secret(registry)
    outcome = embed_files(folder, files, secret, used)
    if keep is not None:  # a new secret is kept only once every file is marked
        keep()
    return outcome


def embed_files(
    folder: Path, files: list[Path], secret: bytes, strength: float
) -> WatermarkOutcome:
    """Mark each of ``files`` (weight files under ``folder``) in place, one file and, for
    safetensors, one tensor at a time: registration's staged folder, and ``assay watermark
    embed`` of a folder (a sharded checkpoint) into its temp copy.

    Among several files, a safetensors shard with no tensor that can carry the mark (only layer
    norms and biases) is left as it is (it is still signed); if no file can be marked, it fails.
    """
    records: dict[str, Any] = {}
    shapes: list[list[int]] = []
    parameters = 0
    fingerprint = ""
    for path in files:
        if len(files) > 1 and not _markable(path):
            continue
        record, sketches = _embed_file(path, secret, strength)
        rel = path.relative_to(folder).as_posix()
        records[rel] = {**record.to_dict(), "sketch": sketches}
        fingerprint = record.secret_fingerprint
        for mark in record.tensors:
            shapes.append(list(mark.shape))
            parameters += mark.marked
    if not records:
        raise AssayError(
            f"cannot watermark {folder.name}: no tensor can carry a watermark (need float "
            "tensors >= 2-D) (use --no-watermark to skip)"
        )
    return WatermarkOutcome(
        secret_fingerprint=fingerprint,
        record={"strength": strength, "files": records},
        shapes=shapes,
        parameters=parameters,
        files=sorted(records),
    )
