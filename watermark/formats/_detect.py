"""Which weight format a file holds, by content; which files of a model folder hold weights."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from assay.core.errors import FormatError, NotFoundError, UnsafeInputError
from assay.core.safe_json import loads_untrusted

FORMATS = ("safetensors", "torch", "torch-legacy", "torchscript", "onnx")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx")

# Files that sit beside weights in training folders but are not model weights.
_NOT_WEIGHTS = {
    "training_args.bin",
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state.pth",
}
#: model payloads that are not tensor files (an MLflow scikit-learn model's pickle or skops)
MODEL_PAYLOAD_SUFFIXES = (".pkl", ".pickle", ".skops", ".joblib")


def is_model_file_name(name: str) -> bool:
    """Whether a file of this name holds a model itself (weights or a model payload), unlike
    configs, tokenizers and vocabularies, which independent models share by design."""
    base = name.rsplit("/", 1)[-1]
    lower = base.lower()
    return (
        not base.startswith(".")
        and base not in _NOT_WEIGHTS
        and lower.endswith(WEIGHT_SUFFIXES + MODEL_PAYLOAD_SUFFIXES)
    )


_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", "node_modules"}
_MAX_FOLDER_ENTRIES = 100_000
_MAX_INDEX_BYTES = 64 * 1024**2


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (hlen,) = struct.unpack("<Q", head[:8])
    return 2 <= hlen <= size - 8 and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with ir_version (field 1, varint: 0x08) in every exporter we know of.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 20


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a weight file (or of the weights in a model folder), judged by content.

    Returns one of ``"safetensors"``, ``"torch"`` (zip archive), ``"torch-legacy"`` (the pre-1.6
    ``torch.save`` layout, ``_use_new_zipfile_serialization=False``), ``"torchscript"``, ``"onnx"``.
    """
    p = Path(path)
    if p.is_dir():
        files = find_weight_files(p)
        formats = {detect_format(f) for f in files}
        if len(formats) != 1:
            raise FormatError(
                f"{p} holds weights in several formats ({', '.join(sorted(formats))}); "
                "name one file"
            )
        return formats.pop()
    if not p.exists():
        raise NotFoundError(f"{p} does not exist")
    if not p.is_file():
        raise FormatError(f"{p} is not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise FormatError(f"{p} is empty")
    with open(p, "rb") as fh:
        head = fh.read(64)
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(p)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        from assay.watermark.formats._torch_legacy import is_legacy

        if is_legacy(head):
            return "torch-legacy"
        raise UnsafeInputError(
            f"refusing to load {p}: it is a raw pickle, not a torch.save file; "
            "only torch files, safetensors and ONNX are accepted"
        )
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if _looks_like_onnx(head):
        return "onnx"
    raise FormatError(
        f"{p} is not a recognised weight file (safetensors, torch zip, TorchScript or ONNX)"
    )


def _zip_kind(path: Path) -> str:
    from assay.watermark.formats._torch import archive_layout

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises assorted errors on bad input
        raise FormatError(f"{path} is not a readable zip archive: {str(exc)[:100]}") from exc
    try:
        _, script = archive_layout(names)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    return "torchscript" if script else "torch"


def _stem_key(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return stem[len("pytorch_") :] if stem.startswith("pytorch_") else stem


def find_weight_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Weight files inside a model folder (HF, MLflow or plain), sorted, safetensors preferred.

    Within one directory, a ``.bin``/``.pt``/``.pth`` file is dropped when a ``.safetensors`` file
    holds the same model (``pytorch_model.bin`` beside ``model.safetensors``, shards included).
    Symlinks are not followed; trainer state (``optimizer.pt``, ``training_args.bin``...) is skipped,
    and so are the external data files of an ONNX model beside them (``weights.bin``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a folder")
    found: list[Path] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        seen += len(filenames)
        if seen > _MAX_FOLDER_ENTRIES:
            raise FormatError(
                f"{root} holds over {_MAX_FOLDER_ENTRIES} files; name the weight file"
            )
        here = Path(dirpath)
        names = [
            n
            for n in sorted(filenames)
            if n.lower().endswith(WEIGHT_SUFFIXES)
            and n not in _NOT_WEIGHTS
            and not n.startswith(".")
            and not (here / n).is_symlink()
            and (here / n).is_file()
        ]
        names = _without_onnx_external_data(here, names)
        safe_keys = {_stem_key(n) for n in names if n.endswith(".safetensors")}
        if safe_keys:
            names = [
                n
                for n in names
                if n.endswith((".safetensors", ".onnx"))
                or not (_stem_key(n) in safe_keys or _is_hf_bin_index_twin(here, n))
            ]
        found.extend(here / n for n in names)
    if not found:
        raise NotFoundError(f"no weight files in {root}")
    return found


def _without_onnx_external_data(folder: Path, names: list[str]) -> list[str]:
    """``names`` less the files an ONNX model among them keeps its external data in (a
    ``weights.bin`` beside ``model.onnx`` is that model's data, not a torch checkpoint). The ONNX
    files are parsed only when the folder also holds other weight-named files."""
    onnx_names = [n for n in names if n.lower().endswith(".onnx")]
    if not onnx_names or len(onnx_names) == len(names):
        return names
    from assay.watermark.formats._common import Limits
    from assay.watermark.formats._onnx import external_files

    data: set[Path] = set()
    for n in onnx_names:
        data |= external_files(folder / n, Limits())
    return [n for n in names if (folder / n).resolve() not in data]


def _is_hf_bin_index_twin(folder: Path, name: str) -> bool:
    """A ``pytorch_model-0000x-of-0000y.bin`` shard whose model also has a safetensors index."""
    if not name.startswith("pytorch_model"):
        return False
    index = folder / "model.safetensors.index.json"
    try:
        if not index.is_file() or index.stat().st_size > _MAX_INDEX_BYTES:
            return False
        loads_untrusted(index.read_bytes(), what=str(index), error=FormatError)
    except (OSError, FormatError):
        return False
    return True
