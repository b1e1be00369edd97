"""Version sketches: a few marked values per tensor shape, and ranking versions by them.

Registration keeps, per marked tensor, ``SKETCH_SIZE`` values at the fixed positions
``sketch_indices(shape)`` (the same at registration and trace). ``assay trace`` stacks every
version's sketch of one shape into a :class:`ShapeBlock` (rows z-scored) and ranks all versions
with one matrix product per shape against the suspect's own values at those positions (``rank``).
Pure numpy; where the sketches are stored is ``assay.registry.sketch_index``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

SKETCH_SIZE = 256


def sketch_indices(shape: tuple[int, ...], size: int = SKETCH_SIZE):
    """Fixed element indices for a tensor of ``shape`` (the same at registration and trace)."""
    import numpy as np

    total = int(np.prod(shape))
    seed = sum((i + 1) * int(d) for i, d in enumerate(shape))
    rng = np.random.default_rng(seed)
    return rng.choice(total, size=min(size, total), replace=False)


def sketch(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """A few marked values per tensor, so trace can rank versions without loading them."""
    out = {}
    for name, arr in tensors.items():
        idx = sketch_indices(tuple(arr.shape))
        out[name] = {
            "shape": list(arr.shape),
            "values": [round(float(v), 7) for v in arr.reshape(-1)[idx]],
        }
    return out


def shape_key(shape: Iterable[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


@dataclass
class ShapeBlock:
    """Every indexed version's sketch of one shape: ``matrix[i]`` belongs to ``artifact_ids[i]``."""

    shape: tuple[int, ...]
    artifact_ids: np.ndarray
    fingerprints: list[str]
    matrix: np.ndarray  # (versions, SKETCH_SIZE) float32, z-scored rows


def zscores(rows: np.ndarray) -> np.ndarray:
    """Each row minus its mean over its standard deviation (float dtype kept, integers become
    float32); constant rows become 0."""
    import numpy as np

    rows = np.asarray(rows)
    if rows.dtype.kind != "f":
        rows = rows.astype(np.float32)
    centred = rows - rows.mean(axis=-1, keepdims=True)
    std = centred.std(axis=-1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def rank(
    blocks: Mapping[str, ShapeBlock], suspect_samples: Mapping[str, np.ndarray]
) -> dict[int, float]:
    """Artifact id -> mean over its indexed shapes of the best |correlation| with any suspect
    tensor of that shape (``suspect_samples[key]``: peers x size z-scores)."""
    import numpy as np

    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for key, block in blocks.items():
        peers = suspect_samples.get(key)
        if peers is None or peers.shape[1] != block.matrix.shape[1]:
            continue
        scores = np.max(np.abs(block.matrix @ peers.T), axis=1) / block.matrix.shape[1]
        for artifact_id, score in zip(block.artifact_ids.tolist(), scores.tolist(), strict=True):
            total[artifact_id] = total.get(artifact_id, 0.0) + score
            count[artifact_id] = count.get(artifact_id, 0) + 1
    return {a: total[a] / count[a] for a in total}
