"""A pickle reader that never imports or calls anything foreign.

``find_class`` answers only the handful of globals a plain tensor state dict (or a TorchScript
archive's ``data.pkl``) needs, each mapped to an inert stand-in defined here; everything else is
refused before it can be touched. Tensors come back as :class:`TensorRef` records that point at
zip records; no bytes are read while unpickling.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from assay.core.errors import FormatError

# torch dtype names (as they appear in pickles) -> our dtype names
_TORCH_DTYPES = {
    "float64": "float64",
    "double": "float64",
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
    "complex64": "complex64",
    "cfloat": "complex64",
    "complex128": "complex128",
    "cdouble": "complex128",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
}

_STORAGES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class Refused(Exception):
    """Raised inside the unpickler when the pickle names a global we do not allow."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class _StorageType:
    dtype: str | None  # None: UntypedStorage (bytes; the dtype comes with the tensor)


@dataclass(frozen=True)
class _DType:
    name: str


@dataclass(frozen=True)
class _Marker:
    """An inert stand-in for a class that is only ever passed around (torch.Tensor...)."""

    name: str


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: str | None
    numel: int  # elements of dtype (bytes when dtype is None)


@dataclass(frozen=True)
class TensorRef:
    storage: StorageRef
    dtype: str
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class ScriptObject:
    """Inert stand-in for an instance of a TorchScript ``__torch__.*`` class."""

    __slots__ = ("qualname", "state")

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<ScriptObject {self.qualname}>"


def _script_class(qualname: str) -> type:
    """A class whose NEWOBJ/REDUCE just records the name; no code of the pickle's runs."""

    def new(cls, *args, **kwargs):
        return ScriptObject(qualname)

    return type("ScriptClass", (), {"__new__": new, "__slots__": ()})


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise FormatError(f"tensor {what} is not a tuple of integers")
    return tuple(value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise FormatError("tensor record does not point at a storage")
    dtype = dtype or storage.dtype
    if dtype is None:
        raise FormatError("tensor record has no dtype")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise FormatError("tensor record has an invalid storage offset")
    shape = _ints(size, "shape")
    strides = _ints(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise FormatError("tensor record has an invalid shape or stride")
    return TensorRef(storage, dtype, offset, shape, strides)


def _rebuild_tensor_v2(
    storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None
):
    return _tensor(storage, offset, size, stride, None)


def _rebuild_tensor(storage, offset, size, stride):
    return _tensor(storage, offset, size, stride, None)


def _rebuild_tensor_v3(
    storage, offset, size, stride, requires_grad=False, hooks=None, dtype=None, metadata=None
):
    if not isinstance(dtype, _DType):
        raise FormatError("tensor record has an invalid dtype")
    return _tensor(storage, offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    if not isinstance(data, TensorRef):
        raise FormatError("parameter record does not hold a tensor")
    return data


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)
_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _REBUILDERS or new_type not in _TENSOR_TYPES or not isinstance(args, tuple):
        raise Refused("torch._tensor._rebuild_from_type_v2 with a tensor subclass")
    return func(*args)


def _encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise Refused("_codecs.encode with an unexpected codec")
    return text.encode(encoding, errors if errors in ("strict",) else "strict")


def _bytearray(source=b"", encoding=None, errors=None):
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        return bytearray(source)
    if isinstance(source, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8"):
        return bytearray(source, encoding)
    raise Refused("builtins.bytearray with a size or an unexpected codec")


def _size(dims=()):
    return tuple(_ints(dims, "size"))


def _device(kind, index=None):
    return f"{kind}" if index is None else f"{kind}:{index}"


def _identity(value, *_):
    return value


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.bytearray": _bytearray,
    "_codecs.encode": _encode,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.Tensor": _TENSOR_TYPES[0],
    "torch.nn.parameter.Parameter": _TENSOR_TYPES[1],
    "torch.Size": _size,
    "torch.device": _device,
    "torch.storage.UntypedStorage": _StorageType(None),
}
_ALLOWED.update({f"torch.{k}": _StorageType(v) for k, v in _STORAGES.items()})
_ALLOWED.update({f"torch.{k}": _DType(v) for k, v in _TORCH_DTYPES.items()})

# TorchScript archives wrap lists in typed builders; they take and return plain values.
_SCRIPT_ALLOWED: dict[str, Any] = {
    f"torch.jit._pickle.{n}": _identity
    for n in (
        "build_intlist",
        "build_doublelist",
        "build_boollist",
        "build_tensorlist",
        "build_genericlist",
        "restore_type_tag",
    )
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, *, script: bool, max_storages: int) -> None:
        super().__init__(io.BytesIO(data))
        self._script = script
        self._max_storages = max_storages
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles (torch's default) spell Python 3 names the Python 2 way.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        if qual in _ALLOWED:
            return _ALLOWED[qual]
        if self._script:
            if qual in _SCRIPT_ALLOWED:
                return _SCRIPT_ALLOWED[qual]
            if module == "__torch__" or module.startswith("__torch__."):
                return _script_class(qual)
        raise Refused(qual)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise FormatError(f"unexpected persistent id {str(pid)[:60]!r}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise FormatError("storage record has an invalid storage type")
        if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
            raise FormatError(f"storage record has an invalid key {str(key)[:40]!r}")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise FormatError("storage record has an invalid size")
        ref = StorageRef(key, stype.dtype, numel)
        known = self.storages.get(key)
        if known is not None:
            if known != ref:
                raise FormatError(f"storage {key!r} is described twice, differently")
            return known
        if len(self.storages) >= self._max_storages:
            raise FormatError(f"pickle names more storages than the limit of {self._max_storages}")
        self.storages[key] = ref
        return ref


def safe_unpickle(
    data: bytes, *, script: bool, max_storages: int
) -> tuple[Any, dict[str, StorageRef]]:
    """Unpickle with the allowlist. Raises :class:`Refused` or :class:`FormatError`."""
    unpickler = _SafeUnpickler(data, script=script, max_storages=max_storages)
    try:
        obj = unpickler.load()
    except (Refused, FormatError):
        raise
    except RecursionError as exc:
        raise FormatError("pickle is nested too deeply") from exc
    except Exception as exc:  # malformed opcodes, wrong arity, bad BUILD...  # noqa: BLE001
        raise FormatError(f"malformed pickle ({type(exc).__name__}: {exc})") from exc
    return obj, unpickler.storages
