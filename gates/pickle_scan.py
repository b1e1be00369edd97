"""``pickle-scan``: every pickle in a model's files, with the globals it would import.

Pickles are found by name (``.pkl``, ``.pickle``, ``.joblib``, ``.sav``) and by content (a pickle protocol header, or a zip archive holding ``.pkl``
records: torch and TorchScript archives). Each is walked opcode by opcode with
``pickletools.genops`` (nothing is imported or called) to list the globals it names; each global
is then put to assay's allow-listing unpickler (``assay.watermark.formats._pickle.safe_unpickle``)
on its own, so the allow-list is that parser's. A global the parser refuses, and not accepted by
the policy's ``allow_globals`` (exact ``module.name`` or ``module.*``), fails the gate; so does a
pickle that cannot be walked or is larger than the scan's bounds.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.gates.base import GateContext, Outcome

__all__ = ["PickleReport", "PickleScanGate", "scan_bytes", "scan_folder"]

#: Always pickles (a file that does not parse fails); other files count when their first bytes
#: are a pickle protocol header (legacy ``torch.save`` ``.pt``/``.bin``) or a zip archive.
SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav"}
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_OPCODES = 5_000_000
MAX_FILES = 10_000
MAX_ZIP_ENTRIES = 100_000
MAX_PICKLES_PER_FILE = 8  # legacy torch.save writes several pickles back to back
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


@dataclass
class PickleReport:
    """One pickle: where it is, the globals it names, and those outside the allow-list."""

    path: str
    globals: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "globals": self.globals,
            "refused": self.refused,
            "error": self.error,
        }


def _py3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 imports it (protocol 0-2 pickles spell some the Python 2
    way; the unpickler maps them, so the scan does too)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _walk(data: bytes, start: int) -> tuple[list[str], int]:
    """(globals named, offset after STOP) of the pickle at ``data[start:]``; nothing runs."""
    found: list[str] = []
    strings: list[str] = []  # recent string pushes, for STACK_GLOBAL
    memo: dict[int, str] = {}
    memo_next = 0  # MEMOIZE's implicit index
    last: str | None = None  # the string the previous opcode pushed, if it pushed one
    stream = io.BytesIO(data)
    stream.seek(start)
    for count, (opcode, arg, pos) in enumerate(pickletools.genops(stream)):
        if count >= MAX_OPCODES:
            raise ValueError(f"more than {MAX_OPCODES} opcodes")
        name, pushed = opcode.name, None
        if name in ("GLOBAL", "INST"):
            found.append(_py3_name(*str(arg).split(" ", 1)) if " " in str(arg) else str(arg))
        elif name == "STACK_GLOBAL":
            resolved = len(strings) >= 2
            found.append(_py3_name(strings[-2], strings[-1]) if resolved else "<unresolved>")
            strings.clear()
        elif name in _STRING_OPS:
            pushed = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
        elif name == "MEMOIZE":
            if last is not None:
                memo[memo_next] = last
            memo_next += 1
            pushed = last  # MEMOIZE leaves the stack as it was
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if last is not None:
                memo[int(arg)] = last
            pushed = last
        elif name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
            pushed = memo[int(arg)]
        if pushed is not None and name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            strings.append(pushed)
            del strings[:-2]
        last = pushed
        if name == "STOP":
            return list(dict.fromkeys(found)), (pos or 0) + 1
    raise ValueError("no STOP opcode")


def _allowed_by_parser(qualname: str, script: bool) -> bool:
    """Whether assay's allow-listing unpickler accepts ``qualname`` (asked with a two-opcode
    pickle that names it and stops; the parser returns its inert stand-in or refuses)."""
    from assay.core.errors import FormatError
    from assay.watermark.formats._pickle import Refused, safe_unpickle

    module, _, name = qualname.rpartition(".")
    if not module or "\n" in qualname or not qualname.isprintable():
        return False
    probe = b"c" + module.encode() + b"\n" + name.encode() + b"\n."
    try:
        safe_unpickle(probe, script=script, max_storages=1)
    except (Refused, FormatError):
        return False
    return True


def _allowed_by_policy(qualname: str, allow: list[str]) -> bool:
    for pattern in allow:
        if pattern == qualname:
            return True
        if pattern.endswith(".*") and qualname.startswith(pattern[:-1]):
            return True
    return False


def scan_bytes(
    data: bytes, where: str, *, script: bool = False, allow: list[str] | None = None
) -> PickleReport:
    """Scan the pickle(s) in ``data`` (back to back, as legacy ``torch.save`` writes them)."""
    report = PickleReport(where)
    allow = allow or []
    if len(data) > MAX_PICKLE_BYTES:
        report.error = f"larger than {MAX_PICKLE_BYTES >> 20} MiB: not scanned"
        return report
    offset, names = 0, []
    try:
        for _ in range(MAX_PICKLES_PER_FILE):
            found, offset = _walk(data, offset)
            names.extend(found)
            if offset >= len(data) or data[offset : offset + 1] != b"\x80":
                break
    except Exception as exc:  # genops raises ValueError and others on malformed input  # noqa: BLE001
        report.error = f"not a readable pickle ({' '.join(str(exc).split())[:120]})"
    report.globals = list(dict.fromkeys(names))
    report.refused = [
        g
        for g in report.globals
        if not _allowed_by_parser(g, script) and not _allowed_by_policy(g, allow)
    ]
    return report


def _looks_like_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def scan_file(path: Path, rel: str, *, allow: list[str]) -> list[PickleReport]:
    """The pickles in one file (itself, or the ``.pkl`` records of a zip archive)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        return _scan_zip(path, rel, allow=allow)
    if _looks_like_pickle(head) or path.suffix.lower() in SUFFIXES:
        if path.stat().st_size > MAX_PICKLE_BYTES:
            return [
                PickleReport(rel, error=f"larger than {MAX_PICKLE_BYTES >> 20} MiB: not scanned")
            ]
        return [scan_bytes(path.read_bytes(), rel, allow=allow)]
    return []


def _scan_zip(path: Path, rel: str, *, allow: list[str]) -> list[PickleReport]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                return [PickleReport(rel, error=f"zip with more than {MAX_ZIP_ENTRIES} entries")]
            names = [i.filename for i in infos]
            script = any("/code/" in f"/{n}" or n.endswith("constants.pkl") for n in names)
            out = []
            for info in infos:
                if not info.filename.endswith(".pkl"):
                    continue
                where = f"{rel}!{info.filename}"
                if info.file_size > MAX_PICKLE_BYTES:
                    out.append(PickleReport(where, error="record too large: not scanned"))
                    continue
                with archive.open(info) as member:
                    data = member.read(MAX_PICKLE_BYTES + 1)
                out.append(scan_bytes(data, where, script=script, allow=allow))
            return out
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        return [
            PickleReport(rel, error=f"unreadable zip archive ({' '.join(str(exc).split())[:80]})")
        ]


def scan_folder(root: Path, *, allow: list[str] | None = None) -> list[PickleReport]:
    """Every pickle under ``root`` (a file or folder), in path order."""
    root = Path(root)
    allow = allow or []
    if root.is_file():
        return scan_file(root, root.name, allow=allow)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    if len(files) > MAX_FILES:
        return [PickleReport(".", error=f"more than {MAX_FILES} files: not scanned")]
    out: list[PickleReport] = []
    for path in files:
        out.extend(scan_file(path, path.relative_to(root).as_posix(), allow=allow))
    return out


class PickleScanGate:
    """Fails when any pickle names a global outside the allow-list, or cannot be scanned."""

    name = "pickle-scan"
    defaults: dict[str, Any] = {"allow_globals": []}

    def run(self, context: GateContext) -> Outcome:
        allow = [str(a) for a in context.params.get("allow_globals", [])]
        reports = scan_folder(context.model_dir, allow=allow)
        refused = sorted({g for r in reports for g in r.refused})
        broken = [r.path for r in reports if r.error]
        metrics = {
            "pickles": [r.to_dict() for r in reports],
            "pickle_count": len(reports),
            "refused_globals": refused,
        }
        if broken:
            return Outcome(
                False, metrics, f"{len(broken)} pickle(s) could not be scanned: {broken[0]}"
            )
        if refused:
            more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
            return Outcome(
                False, metrics, f"globals outside the allow-list: {', '.join(refused[:3])}{more}"
            )
        return Outcome(True, metrics, f"{len(reports)} pickle(s), every global allowed")
