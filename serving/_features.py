"""The rows of a parsed request as the model receives them, for the detector and the answer marks.

Features come from what the model is given, not from the request's form: a frame is cut to the
input schema's columns (MLflow's schema enforcement drops extra columns, so an extra string
column changes nothing the model sees), a dict of columns is read in the schema's column order,
and a non-finite cell is masked (0.0 for the detector) instead of hiding the row. Rows that
cannot be made numeric (string features, nested values) are still counted and still keyed for
the answer marks, by a canonical form of each row (:func:`row_key`).

Mark keys are *quantised* (:func:`quantise`: ``MARK_GRID_BITS`` significant bits, ``-0.0`` is
``0.0``, one NaN), so near-duplicate rows (``0.0``/``-0.0``, one ulp apart) share the mark
decision and asking twice with a no-op change does not reveal which answers are marked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MARK_GRID_BITS", "RequestRows", "canonical", "quantise", "request_rows", "row_key"]

MAX_FEATURES = 100_000
MARK_GRID_BITS = 20  # significant bits a mark key keeps: a relative grid of about 1e-6


@dataclass
class RequestRows:
    """One request's rows: ``count`` always; ``numeric`` (float64, ``(n, width)``, finite) for
    the detector, or None; ``marked`` (a float64 array or a list of canonical cell lists, one per
    row) for the answer marks, or None when the input cannot be split into its rows."""

    count: int
    numeric: Any = None
    marked: Any = None


def quantise(values: Any) -> Any:
    """``values`` (float64) rounded to ``MARK_GRID_BITS`` significant bits; signed zeros and NaNs
    made one value each."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        mantissa, exponent = np.frexp(a)
        q = np.ldexp(np.round(np.ldexp(mantissa, MARK_GRID_BITS)), exponent - MARK_GRID_BITS)
    q = q + 0.0  # -0.0 -> 0.0
    return np.where(np.isnan(q), np.nan, q)


def canonical(value: Any) -> Any:
    """A JSON-able canonical form of one cell (numbers quantised)."""
    import numpy as np

    if value is None or isinstance(value, (bool, np.bool_, str)):
        return value if not isinstance(value, np.bool_) else bool(value)
    if isinstance(value, (int, float, np.number)):
        try:
            q = float(quantise(float(value)))
        except (OverflowError, TypeError, ValueError):
            return str(value)
        return q if math.isfinite(q) else repr(q)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        return (
            [canonical(v) for v in value.reshape(-1).tolist()]
            if value.ndim
            else canonical(value.item())
        )
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return str(value)


def row_key(row: Any) -> bytes:
    """The bytes a row's mark decision is keyed on: the quantised float64 bytes of a numeric row,
    else the canonical JSON of its cells."""
    import numpy as np

    if isinstance(row, np.ndarray) and row.dtype.kind in "fiub":
        return b"n\0" + np.ascontiguousarray(quantise(row).reshape(-1)).tobytes()
    return b"j\0" + json.dumps(canonical(row), separators=(",", ":"), sort_keys=True).encode()


def _schema_names(schema: Any) -> list[str]:
    try:
        names = schema.input_names() if schema is not None else []
    except Exception:  # noqa: BLE001 - a schema without names (tensor specs)
        return []
    return [str(n) for n in names if n is not None]


def _frame_of(data: Any, schema: Any, count: int) -> Any:
    """``data`` as a DataFrame of the columns the model reads, or None."""
    import pandas as pd

    names = _schema_names(schema)
    if isinstance(data, dict):
        keys = names if names and all(n in data for n in names) else sorted(data, key=str)
        try:
            frame = pd.DataFrame({k: data[k] for k in keys})
        except (TypeError, ValueError):
            return None
    elif isinstance(data, pd.DataFrame):
        frame = data
        if names and all(n in frame.columns for n in names):
            frame = frame[names]
    else:
        return None
    return frame if len(frame) == count else None


def _numeric(array: Any, count: int) -> Any:
    if array.ndim == 1:  # one value per row, or one row
        array = array.reshape(-1, 1) if len(array) == count != 1 else array.reshape(1, -1)
    elif array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[1] > MAX_FEATURES:
        return None
    return array


def _split(data: Any, frame: Any, count: int) -> list[Any] | None:
    """One canonical cell list per row, or None when ``data`` does not split into ``count``."""
    if frame is not None:
        return [list(r) for r in frame.itertuples(index=False, name=None)]
    if isinstance(data, dict):
        rows = []
        for i in range(count):
            row = []
            for k in sorted(data, key=str):
                v = data[k]
                if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0):
                    if len(v) != count:
                        return None
                    row.append(v[i])
                else:
                    row.append(v)
            rows.append(row)
        return rows
    if isinstance(data, (list, tuple)) or getattr(data, "ndim", 0):
        return list(data) if len(data) == count else None
    return [data] if count == 1 else None


def request_rows(data: Any, schema: Any, count: int) -> RequestRows:
    """The rows the model receives from ``data`` (a parsed request of ``count`` rows)."""
    import numpy as np

    out = RequestRows(count)
    try:
        frame = _frame_of(data, schema, count)
        source = frame if frame is not None else data
        try:
            if hasattr(source, "to_numpy"):
                array = source.to_numpy(dtype=np.float64)
            elif isinstance(source, dict):
                array = None
            else:
                array = np.asarray(source, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is not None:
            array = _numeric(array, count)
        if array is not None and len(array) == count:
            out.marked = array
            out.numeric = np.where(np.isfinite(array), array, 0.0)
            return out
        out.marked = _split(data, frame, count)
    except (RecursionError, TypeError, ValueError, KeyError, IndexError):
        out.marked = None  # not split into its rows: marks fail closed (serving/_app.py)
    return out
