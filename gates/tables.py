"""Reading a dataset version as a table: CSV or Parquet, bounded, with a named label column.

A dataset version is a folder (or one file); its table is every ``.csv`` / ``.parquet`` file in
it, read in name order and concatenated. Anything else, an empty table, a missing label column
or non-numeric feature columns is refused with one line (``FormatError``). A folder of class
folders (``CLASS/*.png``) is read as pixels by ``assay.gates._images`` (:func:`read_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.core.errors import FormatError

__all__ = ["MAX_ROWS", "MAX_TABLE_BYTES", "Table", "read_dataset", "read_table"]

MAX_TABLE_BYTES = 512 * 1024 * 1024
MAX_ROWS = 2_000_000
MAX_COLUMNS = 10_000
SUFFIXES = (".csv", ".parquet")
#: Columns that describe rows rather than being features (privacy gate splits, ids).
RESERVED = ("split",)


@dataclass
class Table:
    """Features ``x`` (float32, rows x columns), labels ``y`` (int codes) and their names."""

    frame: Any  # pandas.DataFrame, every column as read
    x: Any
    y: Any
    classes: list[Any]
    label_column: str
    feature_columns: list[str]
    files: list[str]  # the table files; for an image folder, each row's CLASS/FILE

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


def table_files(root: Path) -> list[Path]:
    """The table files under ``root`` (a file or folder), refusing anything else."""
    root = Path(root)
    if root.is_file():
        files = [root]
    else:
        from assay.mlflow_access.base import MLFLOW_ADDED_FILES

        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name not in MLFLOW_ADDED_FILES
        )
    if not files:
        raise FormatError("the dataset is empty: no files")
    other = [p for p in files if p.suffix.lower() not in SUFFIXES]
    if other:
        raise FormatError(f"the dataset is not a table: {other[0].name} is neither CSV nor Parquet")
    if sum(p.stat().st_size for p in files) > MAX_TABLE_BYTES:
        raise FormatError(f"the dataset is larger than {MAX_TABLE_BYTES >> 20} MiB")
    return files


def _read_one(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            if meta.num_rows > MAX_ROWS or meta.num_columns > MAX_COLUMNS:
                raise FormatError(
                    f"{path.name}: more than {MAX_ROWS} rows or {MAX_COLUMNS} columns"
                )
            return pq.read_table(path).to_pandas()
        return pd.read_csv(path, nrows=MAX_ROWS + 1, low_memory=False)
    except FormatError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise FormatError(f"the dataset is empty: {path.name} has no rows") from exc
    except Exception as exc:  # parser errors of pandas/pyarrow  # noqa: BLE001
        message = " ".join(str(exc).split())[:160]
        raise FormatError(f"{path.name} is not a readable table: {message}") from exc


def read_table(root: Path, label_column: str) -> Table:
    """The table under ``root`` with labels from ``label_column`` and numeric features."""
    import numpy as np
    import pandas as pd

    files = table_files(root)
    frames = [_read_one(p) for p in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frame) > MAX_ROWS or frame.shape[1] > MAX_COLUMNS:
        raise FormatError(f"the dataset has more than {MAX_ROWS} rows or {MAX_COLUMNS} columns")
    if len(frame) == 0:
        raise FormatError("the dataset is empty: no rows")
    if label_column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:10]))
        raise FormatError(f"the dataset has no label column {label_column!r} (columns: {shown})")
    labels = frame[label_column]
    if labels.isna().any():
        raise FormatError(f"label column {label_column!r} has empty cells")
    features = [c for c in frame.columns if c != label_column and c not in RESERVED]
    if not features:
        raise FormatError("the dataset has no feature columns besides the label")
    numeric = frame[features].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in features if numeric[c].isna().any() and not frame[c].isna().all()]
    if bad:
        raise FormatError(f"feature column {str(bad[0])!r} is not numeric")
    x = numeric.to_numpy(dtype=np.float32, na_value=0.0)
    classes = sorted(pd.unique(labels).tolist(), key=str)
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[v] for v in labels.tolist()], dtype=np.int64)
    return Table(
        frame, x, y, classes, label_column, [str(c) for c in features], [p.name for p in files]
    )


def read_dataset(root: Path, label_column: str) -> Table:
    """An image folder (``CLASS/*.png``: label = folder name) or a CSV/Parquet table."""
    from assay.gates._images import is_image_folder, read_image_folder

    if is_image_folder(Path(root)):
        return read_image_folder(Path(root), label_column)
    return read_table(root, label_column)
