"""Reading a dataset version as a table: CSV or Parquet, bounded, with a named label column.

A dataset version is a folder (or one file); its table is every ``.csv`` / ``.parquet`` file in
it, read in name order and concatenated. Anything else, an empty table, a missing label column
or non-numeric feature columns is refused with one line (``FormatError``). A folder of class
folders (``CLASS/*.png``) is read as pixels by ``assay.gates._images`` (:func:`read_dataset`).

Bounded before anything is read (:class:`TableLimits`): the files' total size; for Parquet the
footer's size, then from its metadata the rows, columns, cells (rows x columns) and the decoded
size (fixed-width columns: rows x width; others: their uncompressed chunk sizes), nested columns
refused; for CSV a bounded first line (the header), whose columns are counted by pandas itself.
While reading (CSV in chunks of bounded cells; Parquet with a string or binary column in record
batches, one of fixed-width columns only whole, its size being exact from the metadata) the
rows, cells and in-memory bytes actually decoded are counted against the same limits, over all
files together, so values that expand past the metadata (dictionary strings) stop at the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.core.errors import FormatError

__all__ = [
    "MAX_CELLS",
    "MAX_COLUMNS",
    "MAX_DECODED_BYTES",
    "MAX_ROWS",
    "MAX_TABLE_BYTES",
    "Table",
    "TableLimits",
    "read_dataset",
    "read_table",
]

MAX_TABLE_BYTES = 512 * 1024 * 1024
MAX_ROWS = 2_000_000
MAX_COLUMNS = 10_000
#: rows x columns over all files (50 M cells: 200 MB as the float32 features).
MAX_CELLS = 50_000_000
#: the table's size in memory as decoded (Arrow / pandas), over all files.
MAX_DECODED_BYTES = 512 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_FOOTER_BYTES = 16 * 1024 * 1024
#: cells per CSV chunk / Parquet record batch read at a time.
CHUNK_CELLS = 1_000_000
SUFFIXES = (".csv", ".parquet")
#: Columns that describe rows rather than being features (privacy gate splits, ids).
RESERVED = ("split",)


@dataclass(frozen=True)
class TableLimits:
    """The bounds on one dataset version's table (all its files together)."""

    max_table_bytes: int = MAX_TABLE_BYTES
    max_rows: int = MAX_ROWS
    max_columns: int = MAX_COLUMNS
    max_cells: int = MAX_CELLS
    max_decoded_bytes: int = MAX_DECODED_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES
    max_footer_bytes: int = MAX_FOOTER_BYTES
    chunk_cells: int = CHUNK_CELLS


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


def table_files(root: Path, limits: TableLimits | None = None) -> list[Path]:
    """The table files under ``root`` (a file or folder), refusing anything else."""
    limits = limits or TableLimits()
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
    if sum(p.stat().st_size for p in files) > limits.max_table_bytes:
        raise FormatError(f"the dataset is larger than {limits.max_table_bytes >> 20} MiB")
    return files


@dataclass
class _Budget:
    """Rows, cells and decoded bytes counted over every file of one table."""

    limits: TableLimits
    columns: int  # the union of the files' columns: the concatenated table's width
    rows: int = 0
    nbytes: int = 0

    def check(self, name: str, rows: int, nbytes: int) -> None:
        """Refuse when ``rows`` more rows and ``nbytes`` more bytes would pass a limit."""
        lim = self.limits
        if self.rows + rows > lim.max_rows:
            raise FormatError(f"{name}: the dataset has more than {lim.max_rows} rows")
        if (self.rows + rows) * self.columns > lim.max_cells:
            raise FormatError(
                f"{name}: the dataset has more than {lim.max_cells} cells "
                f"(rows x {self.columns} columns)"
            )
        if self.nbytes + nbytes > lim.max_decoded_bytes:
            raise FormatError(
                f"{name}: the dataset takes more than {lim.max_decoded_bytes >> 20} MiB "
                "in memory as read"
            )

    def add(self, name: str, rows: int, nbytes: int) -> None:
        self.check(name, rows, nbytes)
        self.rows += rows
        self.nbytes += nbytes


@dataclass
class _Plan:
    """One file's shape as known before reading it."""

    path: Path
    columns: list[str]
    rows: int | None = None  # Parquet: from the metadata; CSV: unknown until read
    nbytes: int = 0  # Parquet: the decoded size the metadata implies
    parquet: Any = field(default=None, repr=False)  # the open pyarrow ParquetFile
    fixed: bool = False  # Parquet: every column fixed-width, so ``nbytes`` is exact


def _unreadable(path: Path, exc: BaseException) -> FormatError:
    message = " ".join(str(exc).split())[:160]
    return FormatError(f"{path.name} is not a readable table: {message}")


def _plan_parquet(path: Path, limits: TableLimits) -> _Plan:
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = path.stat().st_size
    with path.open("rb") as fh:
        if size >= 12:
            fh.seek(size - 8)
            tail = fh.read(8)
            footer = int.from_bytes(tail[:4], "little")
            if tail[4:] == b"PAR1" and footer > limits.max_footer_bytes:
                raise FormatError(
                    f"{path.name}: its Parquet footer is larger than "
                    f"{limits.max_footer_bytes >> 20} MiB"
                )
    pf = pq.ParquetFile(path, pre_buffer=True, thrift_string_size_limit=limits.max_footer_bytes)
    meta, schema = pf.metadata, pf.schema_arrow
    rows, columns = int(meta.num_rows), int(meta.num_columns)
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    if rows < 0 or sum(int(g.num_rows) for g in groups) != rows:
        raise FormatError(f"{path.name}: its Parquet row groups do not add up to its rows")
    if columns > limits.max_columns or len(schema) > limits.max_columns:
        raise FormatError(f"{path.name}: more than {limits.max_columns} columns")
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested or len(schema) != columns:
        shown = nested[0] if nested else "?"
        raise FormatError(f"{path.name}: column {shown!r} is nested (list, struct or map)")
    nbytes, fixed = 0, True
    for i, f in enumerate(schema):
        kind = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        try:
            width = max(1, kind.bit_width // 8)
        except ValueError:  # variable width: strings, binary
            fixed = False
            chunks = sum(int(g.column(i).total_uncompressed_size) for g in groups)
            nbytes += chunks + 8 * rows
        else:
            nbytes += width * rows
    return _Plan(path, [str(n) for n in schema.names], rows, nbytes, pf, fixed)


def _plan_csv(path: Path, limits: TableLimits) -> _Plan:
    import io

    import pandas as pd

    with path.open("rb") as fh:
        line = fh.readline(limits.max_header_bytes + 1)
    if not line:
        raise FormatError(f"the dataset is empty: {path.name} has no rows")
    if len(line) > limits.max_header_bytes:
        raise FormatError(
            f"{path.name}: its header line is longer than {limits.max_header_bytes >> 10} KiB"
        )
    if not line.strip():
        raise FormatError(f"{path.name}: its first line is blank (the header must come first)")
    if line.count(b",") >= limits.max_columns:
        raise FormatError(f"{path.name}: more than {limits.max_columns} columns")
    try:  # the header as pandas reads it, from the bounded line only
        columns = pd.read_csv(io.BytesIO(line), nrows=0).columns
    except pd.errors.EmptyDataError as exc:
        raise FormatError(f"the dataset is empty: {path.name} has no rows") from exc
    except Exception as exc:  # noqa: BLE001  (a quoted field running past the line, ...)
        raise _unreadable(path, exc) from exc
    return _Plan(path, [str(c) for c in columns])


def _read_parquet(plan: _Plan, budget: _Budget) -> Any:
    """Fixed-width columns only: read whole (their size is exact from the metadata, checked
    before); else in record batches, each counted before the next is decoded."""
    import pyarrow as pa

    pf = plan.parquet
    try:
        if plan.fixed:
            table = pf.read()
            budget.add(plan.path.name, table.num_rows, table.nbytes)
        else:
            batch = max(1, budget.limits.chunk_cells // max(1, len(plan.columns)))
            batches = []
            for b in pf.iter_batches(batch_size=batch, use_threads=False):
                budget.add(plan.path.name, b.num_rows, b.nbytes)
                batches.append(b)
            table = pa.Table.from_batches(batches, schema=pf.schema_arrow)
            del batches
    finally:
        pf.close()
    if table.num_rows != plan.rows:
        raise FormatError(f"{plan.path.name}: its rows do not match its Parquet metadata")
    frame = table.to_pandas()
    del table
    pa.default_memory_pool().release_unused()  # the Arrow copy is gone: give its pages back
    return frame


def _read_csv(plan: _Plan, budget: _Budget) -> Any:
    import pandas as pd

    width = max(1, len(plan.columns))
    lim = budget.limits
    room = min(lim.max_rows - budget.rows, lim.max_cells // budget.columns - budget.rows)
    chunks = []
    with pd.read_csv(
        plan.path, chunksize=max(1, lim.chunk_cells // width), nrows=max(0, room) + 1
    ) as reader:
        for chunk in reader:
            if chunk.shape[1] != len(plan.columns):
                raise FormatError(
                    f"{plan.path.name}: read {chunk.shape[1]} columns, "
                    f"its header has {len(plan.columns)}"
                )
            budget.add(plan.path.name, len(chunk), int(chunk.memory_usage(deep=True).sum()))
            chunks.append(chunk)
    if not chunks:
        return pd.read_csv(plan.path, nrows=0)
    return pd.concat(chunks) if len(chunks) > 1 else chunks[0]


def _read_files(files: list[Path], limits: TableLimits) -> list[Any]:
    """Every file's frame: all shapes checked first (metadata, headers), then read counted."""
    import pandas as pd

    plans: list[_Plan] = []
    where = files[0]
    try:
        for where in files:
            is_parquet = where.suffix.lower() == ".parquet"
            plans.append(_plan_parquet(where, limits) if is_parquet else _plan_csv(where, limits))
        names = {c for plan in plans for c in plan.columns}
        if len(names) > limits.max_columns:
            raise FormatError(f"the dataset has more than {limits.max_columns} columns")
        known = _Budget(limits, max(1, len(names)))
        for plan in plans:  # what the metadata already says, before any file is read
            known.add(plan.path.name, plan.rows or 0, plan.nbytes)
        budget = _Budget(limits, known.columns)
        frames = []
        for plan in plans:
            where = plan.path
            read = _read_parquet if plan.parquet is not None else _read_csv
            frames.append(read(plan, budget))
        return frames
    except FormatError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise FormatError(f"the dataset is empty: {where.name} has no rows") from exc
    except Exception as exc:  # parser errors of pandas/pyarrow  # noqa: BLE001
        raise _unreadable(where, exc) from exc


def read_table(root: Path, label_column: str, limits: TableLimits | None = None) -> Table:
    """The table under ``root`` with labels from ``label_column`` and numeric features."""
    import numpy as np
    import pandas as pd

    limits = limits or TableLimits()
    files = table_files(root, limits)
    frames = _read_files(files, limits)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frame) > limits.max_rows or frame.shape[1] > limits.max_columns:
        raise FormatError(
            f"the dataset has more than {limits.max_rows} rows or {limits.max_columns} columns"
        )
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
