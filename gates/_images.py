"""Reading an image-folder dataset version (``CLASS/*.png``) as a table of pixels.

The label of an image is the name of the folder it sits in. Every image is decoded with Pillow as
8-bit grey, scaled to ``[0, 1]`` and flattened into one row of features ``px0..pxN``; all images
take the size of the first one (a first image over ``MAX_FEATURE_PIXELS`` makes every image a
``THUMB`` x ``THUMB`` thumbnail). Bounded and fail closed, one line per refusal
(``FormatError``): at most ``MAX_FILES`` images and ``MAX_TOTAL_BYTES``; each at most
``MAX_FILE_BYTES`` and ``MAX_PIXELS`` pixels, checked from the header before anything is
decoded (a PNG bomb never expands); images x feature pixels at most ``tables.MAX_CELLS``,
checked after the first image fixes the width; only PNG and JPEG content; no symbolic link anywhere; no
other file and no deeper folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.core.errors import FormatError, UnsafeInputError

__all__ = ["MAX_FILES", "MAX_PIXELS", "is_image_folder", "read_image_folder"]

SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
MAX_FILES = 50_000
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MAX_FEATURE_PIXELS = 64 * 64
THUMB = 32


def is_image_folder(root: Path) -> bool:
    """True when ``root`` is a folder whose entries (besides MLflow's) are all folders."""
    from assay.mlflow_access.base import MLFLOW_ADDED_FILES

    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        return False
    entries = [p for p in _listing(root, MAX_FILES) if p.name not in MLFLOW_ADDED_FILES]
    return bool(entries) and all(p.is_dir() or p.is_symlink() for p in entries)


def _listing(folder: Path, room: int) -> list[Path]:
    """``folder``'s entries in name order, refused past ``room`` entries (never listed whole)."""
    from itertools import islice

    extra = 8  # MLflow's own files beside the class folders
    entries = list(islice(folder.iterdir(), room + extra + 1))
    if len(entries) > room + extra:
        raise FormatError(f"the dataset has more than {MAX_FILES} images")
    return sorted(entries)


def _files(root: Path) -> list[tuple[str, Path]]:
    from assay.mlflow_access.base import MLFLOW_ADDED_FILES

    out: list[tuple[str, Path]] = []
    total = 0
    for folder in _listing(root, MAX_FILES):
        if folder.name in MLFLOW_ADDED_FILES and not folder.is_symlink():
            continue
        if folder.is_symlink():
            raise UnsafeInputError(f"the dataset holds a symbolic link: {folder.name}")
        if not folder.is_dir():
            raise FormatError(f"not an image folder: {folder.name} is a file beside class folders")
        for path in _listing(folder, MAX_FILES - len(out)):
            where = f"{folder.name}/{path.name}"
            if path.is_symlink():
                raise UnsafeInputError(f"the dataset holds a symbolic link: {where}")
            if not path.is_file():
                raise FormatError(f"not an image folder: {where} is not a file (CLASS/*.png)")
            if path.suffix.lower() not in SUFFIXES:
                raise FormatError(f"not an image folder: {where} is not a PNG or JPEG file")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise FormatError(f"{where} is larger than {MAX_FILE_BYTES >> 20} MiB")
            total += size
            out.append((folder.name, path))
            if len(out) > MAX_FILES:
                raise FormatError(f"the dataset has more than {MAX_FILES} images")
    if total > MAX_TOTAL_BYTES:
        raise FormatError(f"the dataset is larger than {MAX_TOTAL_BYTES >> 20} MiB")
    if not out:
        raise FormatError("the dataset is empty: no images in its class folders")
    return out


def _pixels(path: Path, where: str, size: tuple[int, int] | None) -> Any:
    import warnings

    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format not in FORMATS:
                    raise FormatError(f"{where} is {im.format} content, not PNG or JPEG")
                w, h = im.size
                if w * h > MAX_PIXELS or w < 1 or h < 1:
                    raise FormatError(
                        f"{where}: {w} x {h} pixels is over the limit of {MAX_PIXELS} "
                        "(a decompression bomb?)"
                    )
                grey = im.convert("L")
                if size is None:
                    size = grey.size if w * h <= MAX_FEATURE_PIXELS else (THUMB, THUMB)
                if grey.size != size:
                    grey = grey.resize(size)
                return np.asarray(grey, dtype=np.float32).reshape(-1) / 255.0, size
    except FormatError:
        raise
    except Exception as exc:  # Pillow's errors on a broken or hostile file  # noqa: BLE001
        message = " ".join(str(exc).split())[:120]
        raise FormatError(
            f"{where} is not a readable image: {type(exc).__name__}: {message}"
        ) from exc


def read_image_folder(root: Path, label_column: str) -> Any:
    """The image folder ``root`` as a :class:`assay.gates.tables.Table` of grey pixels."""
    import numpy as np
    import pandas as pd

    from assay.gates.tables import MAX_CELLS, Table

    files = _files(Path(root))
    x: Any = None
    labels, names = [], []
    size: tuple[int, int] | None = None
    for i, (label, path) in enumerate(files):
        where = f"{label}/{path.name}"
        pixels, size = _pixels(path, where, size)
        if x is None:  # the first image fixes the width: bound the cells before the rest
            if len(files) * pixels.size > MAX_CELLS:
                raise FormatError(
                    f"the dataset has more than {MAX_CELLS} cells "
                    f"({len(files)} images x {pixels.size} pixels)"
                )
            x = np.empty((len(files), pixels.size), dtype=np.float32)
        x[i] = pixels
        labels.append(label)
        names.append(where)
    columns = [f"px{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=columns, copy=False)
    frame[label_column] = labels
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[v] for v in labels], dtype=np.int64)
    return Table(frame, x, y, classes, label_column, columns, names)
