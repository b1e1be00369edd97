"""Numeric rows of a parsed request, for the detector and the answer marks (None if not numeric)."""

from __future__ import annotations

from typing import Any

MAX_FEATURES = 100_000


def numeric_rows(data: Any) -> Any:
    """A 2-D float64 array of the request's rows, or None when the input is not numeric."""
    import numpy as np

    try:
        if hasattr(data, "to_numpy"):
            array = data.to_numpy(dtype=np.float64)
        elif isinstance(data, dict):
            return None
        else:
            array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    elif array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[1] > MAX_FEATURES:
        return None
    if not np.isfinite(array).all():
        return None
    return array
