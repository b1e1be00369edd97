"""A pickle reader that never imports or calls anything foreign, and does bounded work.

``find_class`` answers only the handful of globals a plain tensor state dict (or a TorchScript
archive's ``data.pkl``) needs, each mapped to an inert stand-in built afresh for every load;
everything else is refused before it can be touched. Tensors come back as :class:`TensorRef`
records that point at storages; no tensor bytes are read while unpickling.

The opcode loop is Python's own pure-Python unpickler with a work budget (:class:`PickleBudget`):
every opcode, every item a stand-in copies and every byte it creates is counted, memo entries and
pickled integers are bounded, dict keys and set items must be scalars with unpredictable or
distinct hashes (no tuple keys: hashing a tuple built through the memo can take 2^40 steps), and
BUILD only sets state on objects this very load created (an ``OrderedDict`` or a TorchScript
object), never on an allow-listed global.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from assay.core.errors import FormatError
from assay.watermark.formats._common import brief

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

#: numpy cannot hold more dimensions than this; longer shape lists are refused before iterating.
MAX_DIMS = 64
#: |int| below this hashes to itself: distinct ints never collide in a dict.
_INT_HASH_SAFE = 2**61 - 1


class PickleTruncated(FormatError):
    """The pickle ends before its STOP opcode (a reader may retry with more of the file)."""


class Refused(Exception):
    """Raised inside the unpickler when the pickle names a global we do not allow."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: str | None  # None: UntypedStorage (bytes; the dtype comes with the tensor)


@dataclass(frozen=True, slots=True)
class _DType:
    name: str


@dataclass(frozen=True, slots=True)
class _Marker:
    """An inert stand-in for a class that is only ever passed around (torch.Tensor...)."""

    name: str


@dataclass(frozen=True, slots=True)
class StorageRef:
    key: str
    dtype: str | None
    numel: int  # elements of dtype (bytes when dtype is None)


@dataclass(frozen=True, slots=True)
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

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<ScriptObject {self.qualname}>"


def _script_class(qualname: str) -> type:
    """A class whose NEWOBJ/REDUCE just records the name; no code of the pickle's runs."""

    def new(cls, *args, **kwargs):
        return ScriptObject(qualname)

    return type("ScriptClass", (), {"__new__": new, "__slots__": ()})


@dataclass
class PickleBudget:
    """The work one pickle may cost (see :class:`assay.watermark.formats.Limits`)."""

    max_ops: int = 10_000_000
    max_memo: int = 2_000_000
    max_int_bytes: int = 16
    #: bytes the stand-ins may create (``bytearray``, ``_codecs.encode``); None: 2x the pickle + 1 MiB
    max_created_bytes: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise FormatError(f"tensor {what} is not a tuple of at most {MAX_DIMS} integers")
    if not all(_is_int(v) and -(2**63) <= v < 2**63 for v in value):
        raise FormatError(f"tensor {what} is not a tuple of 64-bit integers")
    return tuple(value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise FormatError("tensor record does not point at a storage")
    dtype = dtype or storage.dtype
    if dtype is None:
        raise FormatError("tensor record has no dtype")
    if not _is_int(offset) or not 0 <= offset < 2**63:
        raise FormatError("tensor record has an invalid storage offset")
    shape = _ints(size, "shape")
    strides = _ints(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise FormatError("tensor record has an invalid shape or stride")
    return TensorRef(storage, dtype, offset, shape, strides)


def _hash_safe(value: Any) -> bool:
    """Whether ``value`` may be a dict key or set item: hashing it is O(1) and collision-free."""
    if isinstance(value, (str, bytes)) or value is None or isinstance(value, bool):
        return True
    return type(value) is int and -_INT_HASH_SAFE < value < _INT_HASH_SAFE


def _check_key(value: Any) -> None:
    if not _hash_safe(value):
        raise FormatError(
            f"pickle uses a {type(value).__name__} as a dict key or set item "
            "(only strings, bytes and small integers are accepted)"
        )


class _SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Python's pure-Python unpickler with an allowlist, fresh stand-ins and a work budget."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(
        self, file: IO[bytes], *, script: bool, max_storages: int, budget: PickleBudget, size: int
    ) -> None:
        super().__init__(file)
        self._file = file
        self._script = script
        self._max_storages = max_storages
        self._budget = budget
        self._work = 0
        created = budget.max_created_bytes
        self._bytes_left = 2 * size + 2**20 if created is None else created
        self.storages: dict[str, StorageRef] = {}
        self._globals = self._fresh_globals()

    # -- the work budget ---------------------------------------------------------------------

    def charge(self, units: int) -> None:
        self._work += units
        if self._work > self._budget.max_ops:
            raise FormatError(
                f"pickle needs more than {self._budget.max_ops} steps of work (Limits.max_pickle_ops)"
            )

    def _created(self, nbytes: int) -> None:
        self._bytes_left -= nbytes
        if self._bytes_left < 0:
            raise FormatError("pickle creates more bytes than it holds")

    def load(self) -> Any:
        """One pickle from the stream, opcode by opcode, within the budget."""
        # Frames (protocol 4+) only group opcodes for buffering: reading straight from the
        # in-memory file and skipping FRAME headers gives the same opcodes, one call less each.
        self.read = self._file_read
        self.readinto = self._file.readinto
        self.readline = self._file_readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read = self.read
        dispatch = self.dispatch
        max_ops = self._budget.max_ops
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError("pickle data was truncated")
                self._work += 1
                if self._work > max_ops:
                    self.charge(0)
                dispatch[key[0]](self)
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value

    # -- opcodes that would call, hash, copy or mutate: replaced ------------------------------

    def _memo_put(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= self._budget.max_memo:
            raise FormatError(
                f"pickle memo holds more than {self._budget.max_memo} entries "
                "(Limits.max_pickle_memo)"
            )
        self.memo[index] = self.stack[-1]

    def _op_put(self) -> None:
        text = self.readline()[:-1]
        if not text.isdigit() or len(text) > 10:
            raise FormatError("pickle PUT has an invalid memo index")
        self._memo_put(int(text))

    def _op_binput(self) -> None:
        self._memo_put(self.read(1)[0])

    def _op_long_binput(self) -> None:
        self._memo_put(int.from_bytes(self.read(4), "little"))

    def _op_memoize(self) -> None:
        self._memo_put(len(self.memo))

    def _long(self, data: bytes) -> None:
        if len(data) > self._budget.max_int_bytes:
            raise FormatError(
                f"pickle holds an integer of {len(data)} bytes, over the limit of "
                f"{self._budget.max_int_bytes}"
            )
        self.append(pickle.decode_long(data))

    def _op_long(self) -> None:
        text = self.readline()[:-1]
        if len(text) > 3 * self._budget.max_int_bytes:
            raise FormatError("pickle holds an over-long integer")
        self.append(int(text.rstrip(b"L") or b"x", 0))

    def _op_long1(self) -> None:
        self._long(self.read(self.read(1)[0]))

    def _op_long4(self) -> None:
        n = int.from_bytes(self.read(4), "little", signed=True)
        if n < 0 or n > self._budget.max_int_bytes:
            raise FormatError(f"pickle holds an integer of {n} bytes")
        self._long(self.read(n))

    def _op_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        _check_key(key)
        self.stack[-1][key] = value

    def _op_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        for i in range(0, len(items) - 1, 2):
            _check_key(items[i])
            target[items[i]] = items[i + 1]

    def _op_dict(self) -> None:
        items = self.pop_mark()
        out: dict[Any, Any] = {}
        for i in range(0, len(items) - 1, 2):
            _check_key(items[i])
            out[items[i]] = items[i + 1]
        self.append(out)

    def _op_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise FormatError("pickle ADDITEMS on something that is not a set")
        for item in items:
            _check_key(item)
        target.update(items)

    def _op_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            _check_key(item)
        self.append(frozenset(items))

    def _op_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple):
            raise FormatError("pickle REDUCE arguments are not a tuple")
        self.charge(len(args))
        if not callable(func):
            raise FormatError(f"pickle calls a {type(func).__name__}")
        self.stack[-1] = func(*args)

    def _op_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def _op_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(cls, type) and cls.__name__ == "ScriptClass" and self._script:
            return cls.__new__(cls)
        raise FormatError(f"pickle creates a {brief(getattr(cls, '__name__', None))} object")

    def _op_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, ScriptObject):
            inst.state = state
            return
        if type(inst) is not OrderedDict:
            raise FormatError(
                f"pickle sets the state of a {type(inst).__name__} "
                "(only of a dict or TorchScript object it created)"
            )
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if state is None:
            return
        if not isinstance(state, dict):
            raise FormatError("pickle BUILD state of an OrderedDict is not a dict")
        self.charge(len(state))
        for key, value in state.items():
            if not isinstance(key, str):
                raise FormatError("pickle BUILD state has a non-string attribute name")
            inst.__dict__[key] = value

    def _op_frame(self) -> None:
        if len(self.read(8)) != 8:
            raise EOFError("pickle data was truncated")

    def _op_refused(self) -> None:
        raise FormatError("pickle uses an opcode that plain state dicts never need")

    def _op_persid(self) -> None:
        raise FormatError("pickle uses a text persistent id")

    # -- globals and storages ----------------------------------------------------------------

    def _fresh_globals(self) -> dict[str, Any]:
        """The allow-listed globals, built for this load only (nothing is shared between loads)."""
        u = self
        tensor_types = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))

        def rebuild_tensor(storage, offset, size, stride):
            return _tensor(storage, offset, size, stride, None)

        def rebuild_tensor_v2(
            storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None
        ):
            return _tensor(storage, offset, size, stride, None)

        def rebuild_tensor_v3(
            storage,
            offset,
            size,
            stride,
            requires_grad=False,
            hooks=None,
            dtype=None,
            metadata=None,
        ):
            if not isinstance(dtype, _DType):
                raise FormatError("tensor record has an invalid dtype")
            return _tensor(storage, offset, size, stride, dtype.name)

        def rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
            if not isinstance(data, TensorRef):
                raise FormatError("parameter record does not hold a tensor")
            return data

        rebuilders = (rebuild_tensor, rebuild_tensor_v2, rebuild_tensor_v3, rebuild_parameter)

        def rebuild_from_type_v2(func, new_type, args, state):
            if (
                not any(func is r for r in rebuilders)
                or not any(new_type is t for t in tensor_types)
                or not isinstance(args, tuple)
            ):
                raise Refused("torch._tensor._rebuild_from_type_v2 with a tensor subclass")
            return func(*args)

        def encode(text, encoding="utf-8", errors="strict"):
            if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
                raise Refused("_codecs.encode with an unexpected codec")
            u._created(len(text) * (1 if encoding.startswith("latin") else 4))
            return text.encode(encoding, "strict")

        def make_bytearray(source=b"", encoding=None, errors=None):
            if isinstance(source, (bytes, bytearray)) and encoding is None:
                u._created(len(source))
                return bytearray(source)
            if isinstance(source, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8"):
                u._created(len(source) * 4)
                return bytearray(source, encoding)
            raise Refused("builtins.bytearray with a size or an unexpected codec")

        def make_set(items=()):
            return set(_scalars(items))

        def make_frozenset(items=()):
            return frozenset(_scalars(items))

        def _scalars(items: Any) -> list[Any]:
            if not isinstance(items, (list, tuple)):
                raise FormatError("pickle builds a set from something that is not a list")
            u.charge(len(items))
            for item in items:
                _check_key(item)
            return list(items)

        def make_ordered_dict(items=()):
            if not isinstance(items, (list, tuple)):
                raise FormatError("pickle builds an OrderedDict from something that is not a list")
            u.charge(len(items))
            out: OrderedDict[Any, Any] = OrderedDict()
            for pair in items:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise FormatError("pickle builds an OrderedDict from something not a pair")
                _check_key(pair[0])
                out[pair[0]] = pair[1]
            return out

        def make_complex(real=0.0, imag=0.0):
            if not all(isinstance(v, (int, float)) for v in (real, imag)):
                raise FormatError("pickle builds a complex number from non-numbers")
            return complex(real, imag)

        def size(dims=()):
            return _ints(dims, "size")

        def device(kind, index=None):
            if not isinstance(kind, str) or len(kind) > 64 or not (index is None or _is_int(index)):
                raise FormatError("pickle names an invalid device")
            return kind if index is None else f"{kind}:{brief(index)}"

        def identity(value, *rest):
            return value

        allowed: dict[str, Any] = {
            "collections.OrderedDict": make_ordered_dict,
            "builtins.set": make_set,
            "builtins.frozenset": make_frozenset,
            "builtins.complex": make_complex,
            "builtins.bytearray": make_bytearray,
            "_codecs.encode": encode,
            "torch._utils._rebuild_tensor": rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": rebuild_tensor_v2,
            "torch._utils._rebuild_tensor_v3": rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
            "torch._tensor._rebuild_from_type_v2": rebuild_from_type_v2,
            "torch.Tensor": tensor_types[0],
            "torch.nn.parameter.Parameter": tensor_types[1],
            "torch.Size": size,
            "torch.device": device,
            "torch.storage.UntypedStorage": _StorageType(None),
        }
        allowed.update({f"torch.{k}": _StorageType(v) for k, v in _STORAGES.items()})
        allowed.update({f"torch.{k}": _DType(v) for k, v in _TORCH_DTYPES.items()})
        if self._script:
            # TorchScript archives wrap lists in typed builders; they take and return plain values.
            for n in (
                "build_intlist",
                "build_doublelist",
                "build_boollist",
                "build_tensorlist",
                "build_genericlist",
                "restore_type_tag",
            ):
                allowed[f"torch.jit._pickle.{n}"] = identity
        return allowed

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles (torch's default) spell Python 3 names the Python 2 way.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        found = self._globals.get(qual)
        if found is not None:
            return found
        if self._script and (module == "__torch__" or module.startswith("__torch__.")):
            return _script_class(qual[:200])
        raise Refused(qual[:120] + ("..." if len(qual) > 120 else ""))

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise FormatError(f"unexpected persistent id {brief(pid)}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise FormatError("storage record has an invalid storage type")
        if (
            not isinstance(key, str)
            or not key
            or "/" in key
            or key.startswith(".")
            or len(key) > 256
        ):
            raise FormatError(f"storage record has an invalid key {brief(key)}")
        if not _is_int(numel) or not 0 <= numel < 2**63:
            raise FormatError("storage record has an invalid size")
        if len(pid) > 5 and pid[5] is not None:
            raise FormatError("storage views (legacy view metadata) are not supported")
        ref = StorageRef(key, stype.dtype, numel)
        known = self.storages.get(key)
        if known is not None:
            if known != ref:
                raise FormatError(f"storage {brief(key)} is described twice, differently")
            return known
        if len(self.storages) >= self._max_storages:
            raise FormatError(f"pickle names more storages than the limit of {self._max_storages}")
        self.storages[key] = ref
        return ref


def _install(ops: dict[int, Callable[[Any], None]]) -> None:
    d = _SafeUnpickler.dispatch
    for code, fn in ops.items():
        d[code] = fn


_U = _SafeUnpickler
_install(
    {
        pickle.PUT[0]: _U._op_put,
        pickle.BINPUT[0]: _U._op_binput,
        pickle.LONG_BINPUT[0]: _U._op_long_binput,
        pickle.MEMOIZE[0]: _U._op_memoize,
        pickle.LONG[0]: _U._op_long,
        pickle.LONG1[0]: _U._op_long1,
        pickle.LONG4[0]: _U._op_long4,
        pickle.SETITEM[0]: _U._op_setitem,
        pickle.SETITEMS[0]: _U._op_setitems,
        pickle.DICT[0]: _U._op_dict,
        pickle.ADDITEMS[0]: _U._op_additems,
        pickle.FROZENSET[0]: _U._op_frozenset,
        pickle.REDUCE[0]: _U._op_reduce,
        pickle.NEWOBJ[0]: _U._op_newobj,
        pickle.NEWOBJ_EX[0]: _U._op_newobj_ex,
        pickle.BUILD[0]: _U._op_build,
        pickle.FRAME[0]: _U._op_frame,
        pickle.PERSID[0]: _U._op_persid,
        pickle.INST[0]: _U._op_refused,
        pickle.OBJ[0]: _U._op_refused,
        pickle.EXT1[0]: _U._op_refused,
        pickle.EXT2[0]: _U._op_refused,
        pickle.EXT4[0]: _U._op_refused,
        pickle.NEXT_BUFFER[0]: _U._op_refused,
        pickle.BYTEARRAY8[0]: _U._op_refused,  # preallocates the size it claims
        pickle.READONLY_BUFFER[0]: _U._op_refused,
    }
)


class PickleStream:
    """Consecutive pickles from one buffer (a torch zip's ``data.pkl``, or a legacy file's head).

    All pickles of the stream share one work budget and one storage table.
    """

    def __init__(
        self, data: bytes, *, script: bool, max_storages: int, budget: PickleBudget
    ) -> None:
        self._file = io.BytesIO(data)
        self._unpickler = _SafeUnpickler(
            self._file,
            script=script,
            max_storages=max_storages,
            budget=budget,
            size=len(data),
        )

    @property
    def storages(self) -> dict[str, StorageRef]:
        return self._unpickler.storages

    @property
    def work(self) -> int:
        """Steps of work spent so far (counted against ``PickleBudget.max_ops``)."""
        return self._unpickler._work

    def tell(self) -> int:
        return self._file.tell()

    def load(self) -> Any:
        """The next pickle. Raises :class:`Refused` or :class:`FormatError`."""
        u = self._unpickler
        u.memo = {}
        try:
            return u.load()
        except (Refused, FormatError):
            raise
        except RecursionError as exc:
            raise FormatError("pickle is nested too deeply") from exc
        except (EOFError, struct.error) as exc:
            raise PickleTruncated("pickle data was truncated") from exc
        except pickle.UnpicklingError as exc:
            if "truncated" in str(exc):
                raise PickleTruncated("pickle data was truncated") from exc
            raise FormatError(f"malformed pickle ({str(exc)[:120]})") from exc
        except MemoryError as exc:
            raise FormatError("pickle needs more memory than is available") from exc
        except Exception as exc:  # malformed opcodes, wrong arity...  # noqa: BLE001
            raise FormatError(f"malformed pickle ({type(exc).__name__}: {str(exc)[:120]})") from exc


def safe_unpickle(
    data: bytes, *, script: bool, max_storages: int, budget: PickleBudget | None = None
) -> tuple[Any, dict[str, StorageRef]]:
    """Unpickle one pickle with the allowlist and the budget. Raises Refused or FormatError."""
    stream = PickleStream(
        data, script=script, max_storages=max_storages, budget=budget or PickleBudget()
    )
    obj = stream.load()
    return obj, stream.storages
