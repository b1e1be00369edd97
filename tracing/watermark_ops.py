"""Library functions behind ``assay watermark embed|detect``: weight files, model folders (a
sharded safetensors checkpoint), registry secrets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import FormatError, NotFoundError

if TYPE_CHECKING:
    from assay.registry.facade import Registry


@dataclass
class EmbedSummary:
    source: str
    output: str
    secret_fingerprint: str
    strength: float
    tensors: int
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _secret(registry: Registry, key: str | None) -> bytes:
    from assay.registry.watermark_secrets import active_secret, all_secrets

    if key is None:
        return active_secret(registry)
    matches = [s for fp, s in all_secrets(registry).items() if fp.startswith(key.lower())]
    if len(matches) != 1:
        raise NotFoundError(f"no single watermark secret with fingerprint {key!r}")
    return matches[0]


def _check_writable(output: Path) -> None:
    """Fail now, before any secret or audit event exists, if ``output`` cannot be created."""
    from assay.core.atomic import temp_sibling
    from assay.watermark.formats._common import check_out_path

    out = check_out_path(output)
    try:
        with temp_sibling(out):
            pass
    except OSError as exc:
        raise FormatError(f"cannot write {output}: {exc.strerror or exc}") from exc


def embed_file(
    registry: Registry,
    source: Path,
    output: Path,
    *,
    key: str | None = None,
    strength: float | None = None,
) -> EmbedSummary:
    """Write a watermarked copy of the weight file ``source`` to the new file ``output`` (or of
    the model folder ``source``, e.g. a sharded checkpoint, to the new folder ``output``).

    Order: read the source and check that ``output`` can be created, then take (or make) the
    secret, write the output, and only then record the audit event; if recording fails the output
    is removed. A failure at any step leaves no output, and an unwritable output no secret.
    """
    from assay.watermark.formats import load_weights, save_weights
    from assay.watermark.scheme import DEFAULT_STRENGTH, embed

    if output.exists():
        raise NotFoundError(f"{output} already exists; refusing to overwrite it") from None
    used = strength if strength is not None else DEFAULT_STRENGTH
    if source.is_dir():
        return _embed_folder(registry, source, output, key, used)
    probe = _in_place_probe(source)
    if probe is not None and probe.in_place:
        written, record = _embed_streamed(registry, source, output, key, used)
        weights = None
    else:
        weights = probe.weight_file if probe is not None else load_weights(source)
        _check_writable(output)
        result = embed(weights.tensors, _secret(registry, key), strength=used)
        written = save_weights(weights, result.tensors, output)
        record = result.record
    try:
        with registry.store.session() as session:
            registry.record(
                session,
                "watermark.embed",
                f"file:{output.resolve()}",
                {
                    "source": str(source.resolve()),
                    "secret_fingerprint": record.secret_fingerprint,
                    "strength": used,
                },
            )
    except BaseException:
        written.unlink(missing_ok=True)
        if (
            weights is not None
            and weights.format == "onnx"
            and getattr(weights._handle, "external", False)
        ):
            written.with_name(written.name + ".data").unlink(missing_ok=True)
        raise
    return EmbedSummary(
        str(source),
        str(output),
        record.secret_fingerprint,
        used,
        len(record.tensors),
        record.marked,
    )


def _in_place_probe(source: Path):
    """How a single weight file ``source`` would be written, without opening it for writing:
    a ``TensorSource`` whose ``in_place`` says whether a copy of it can be marked in place (the
    checks of ``open_weights(..., writable=True)``, done read-only on the user's file); None for
    an ONNX model (its external data lives beside it, not in a lone copy: always eager here, and
    written with ``<output>.data``)."""
    from assay.watermark.formats import detect_format
    from assay.watermark.formats._stream import open_weights

    if not source.is_file() or detect_format(source) == "onnx":
        return None
    return open_weights(source, writable=True, probe=True)


def _embed_streamed(
    registry: Registry, source: Path, output: Path, key: str | None, strength: float
) -> tuple[Path, Any]:
    """A file ``open_weights`` writes in place (safetensors, a torch archive of stored records):
    copy ``source`` beside ``output``, mark the copy tensor by tensor in place (one tensor in
    memory at a time), then publish it; nothing is left behind on failure."""
    import shutil

    from assay.core.atomic import publish_new, temp_sibling
    from assay.watermark.formats._common import check_out_path
    from assay.watermark.formats._stream import open_weights
    from assay.watermark.streaming import embed_source

    out = check_out_path(output)
    _check_writable(output)
    secret = _secret(registry, key)
    with temp_sibling(out) as tmp:
        try:
            shutil.copyfile(source, tmp)
        except OSError as exc:
            raise FormatError(f"cannot write {output}: {exc.strerror or exc}") from exc
        copy = open_weights(tmp, writable=True)
        if not copy.in_place:  # the copy differs from the source checked above
            raise FormatError(f"{source} changed while it was copied; try again")
        record, _ = embed_source(copy, secret, strength=strength)
        publish_new(tmp, out, error=FormatError)
    return out, record


#: files a model folder may hold for ``assay watermark embed`` to copy it
MAX_FOLDER_FILES = 10_000


def _folder_files(source: Path) -> list[Path]:
    """Every file under ``source`` (relative), refusing links and special files (a copy must not
    reach outside the folder) and more than ``MAX_FOLDER_FILES``."""
    import os

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            p = here / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                raise FormatError(f"{p} is a link or a special file; refusing to copy {source}")
            if p.is_file():
                found.append(p.relative_to(source))
        if len(found) > MAX_FOLDER_FILES:
            raise FormatError(f"{source} holds over {MAX_FOLDER_FILES} files; name the weights")
    return found


def _embed_folder(
    registry: Registry, source: Path, output: Path, key: str | None, strength: float
) -> EmbedSummary:
    """A model folder (a sharded safetensors checkpoint and its index, or any weight files):
    copy it into a temp folder beside ``output``, mark every weight file of the copy in place as
    registration marks its staged folder (``embed_files``: shard by shard, one tensor in memory
    at a time), publish the folder by rename, then record the audit event. Any failure (a shard
    that does not parse or cannot be marked, a full disk, the audit) leaves no output."""
    import shutil

    from assay.core.atomic import publish_new_dir, temp_sibling_dir
    from assay.registry.watermarking import embed_files, weight_files
    from assay.watermark.formats._common import check_out_path
    from assay.watermark.formats._index import find_index
    from assay.watermark.formats._stream import open_weights

    out = check_out_path(output)
    files = _folder_files(source)
    if find_index(source) is not None:
        open_weights(source)  # the index and every shard header checked before anything is written
    if not weight_files(source):
        raise FormatError(f"no weight files (safetensors, torch, ONNX) in {source}")
    try:
        with temp_sibling_dir(out):
            pass
    except OSError as exc:
        raise FormatError(f"cannot write {output}: {exc.strerror or exc}") from exc
    secret = _secret(registry, key)
    with temp_sibling_dir(out) as tmp:
        try:
            for rel in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / rel, tmp / rel)
        except OSError as exc:
            raise FormatError(f"cannot write {output}: {exc.strerror or exc}") from exc
        outcome = embed_files(tmp, weight_files(tmp), secret, strength)
        if find_index(tmp) is not None:
            open_weights(tmp)  # the marked copy still reads as one checkpoint
        publish_new_dir(tmp, out, error=FormatError)
    try:
        with registry.store.session() as session:
            registry.record(
                session,
                "watermark.embed",
                f"file:{out.resolve()}",
                {
                    "source": str(source.resolve()),
                    "secret_fingerprint": outcome.secret_fingerprint,
                    "strength": strength,
                    "files": outcome.files,
                },
            )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return EmbedSummary(
        str(source),
        str(output),
        outcome.secret_fingerprint,
        strength,
        len(outcome.shapes),
        outcome.parameters,
    )


def detect_file(
    registry: Registry, suspect: Path, *, reference: str | None = None
) -> dict[str, Any]:
    """Test ``suspect`` for this installation's watermarks.

    ``reference``: ``models:/NAME/V`` (non-blind against that registered version and its record),
    a weight file (non-blind against it as the unmarked original), or None (blind, every secret).
    """
    from assay.registry.watermark_secrets import all_secrets
    from assay.tracing.trace import _load_suspect
    from assay.watermark.detect import detect
    from assay.watermark.formats import load_weights

    tensors = _load_suspect(suspect)
    secrets = all_secrets(registry)
    if not secrets:
        raise NotFoundError("this installation holds no watermark secret")
    if reference and reference.startswith("models:/"):
        from assay.core.refs import parse_model_ref
        from assay.tracing.trace import _reference, _registered

        ref = parse_model_ref(reference)
        found = [
            v for v in _registered(registry, [ref.name]) if v.version == ref.version and v.record
        ]
        if not found:
            raise NotFoundError(f"{reference} is not a registered version with a watermark")
        ref_tensors, record = _reference(registry, found[0])
        result = detect(
            tensors, secrets[found[0].fingerprint or ""], reference=ref_tensors, record=record
        )
        return {"suspect": str(suspect), "reference": reference, "results": [result.to_dict()]}
    ref_tensors = load_weights(Path(reference)).tensors if reference else None
    results = [
        {
            **detect(tensors, s, reference=ref_tensors, candidates=len(secrets)).to_dict(),
            "secret_fingerprint": fp,
        }
        for fp, s in secrets.items()
    ]
    return {"suspect": str(suspect), "reference": reference, "results": results}
