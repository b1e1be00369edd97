"""A model version loaded for serving: downloaded once, decided on, loaded from those files."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.registry.enforcement import Decision
    from assay.registry.facade import Registry

__all__ = ["LoadedModel", "Refused", "load_verified"]


@dataclass
class LoadedModel:
    """What one request answers with; swapped as a whole, never mutated."""

    name: str
    version: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    input_schema: Any
    folder: Path
    labels: tuple[Any, ...] = field(default=())  # class labels, when the model exposes them

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Refused(Exception):
    """The enforcement decision refused a version (``refusal`` says why; ``decision`` is whole)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision
        self.refusal = decision.refusal


def _labels(model: Any) -> tuple[Any, ...]:
    try:
        raw = model.get_raw_model()
    except Exception:  # noqa: BLE001 - flavours without a raw model
        return ()
    classes = getattr(raw, "classes_", None)
    if classes is None:
        return ()
    try:
        return tuple(v.item() if hasattr(v, "item") else v for v in list(classes)[:10_000])
    except TypeError:
        return ()


def load_verified(
    registry: Registry, name: str, version: str, *, alias: str | None, workdir: Path
) -> LoadedModel:
    """Download ``name/version`` into a new folder under ``workdir``, apply
    :func:`assay.registry.enforcement.decide` to those files and load exactly them.

    Raises :class:`Refused` (files removed) when the decision refuses.
    """
    from assay.registry.enforcement import decide

    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=workdir))
    try:
        local = registry.backend.download_version(name, version, folder / "model")
        decision = decide(registry, name, version, alias=alias, local_path=local)
        if not decision.allowed:
            raise Refused(decision)
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(local))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    schema = model.metadata.get_input_schema()
    return LoadedModel(name, str(version), model, schema, folder, _labels(model))
