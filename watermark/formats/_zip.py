"""Just enough of the zip format to read torch archives safely and patch stored records in place."""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from assay.core.errors import FormatError
from assay.watermark.formats._common import Budget, brief

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_STORED, _DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Record:
    name: str
    compressed: bool
    size: int  # uncompressed size
    compress_size: int
    crc: int
    data_offset: int  # absolute offset of the (stored) bytes
    local_crc_at: int | None  # where the CRC lives in the local header, if it is there
    descriptor_crc_at: int | None  # where the CRC lives in the data descriptor, if any
    central_crc_at: int


class ZipIndex:
    """The records of a zip archive, checked for duplicates and overlaps."""

    def __init__(self, path: Path, *, max_entries: int) -> None:
        self.path = path
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            cd_offset, count = _find_central_directory(fh, size, path)
            if count > max_entries:
                raise FormatError(
                    f"{path} holds {count} zip entries, over the limit of {max_entries}"
                )
            try:
                zf = zipfile.ZipFile(fh)
                infos = zf.infolist()
            except Exception as exc:  # noqa: BLE001 - zipfile raises assorted errors on bad input
                raise FormatError(
                    f"{path} is not a readable zip archive: {str(exc)[:100]}"
                ) from exc
            if len(infos) != count:
                raise FormatError(f"{path}: zip directory is inconsistent")
            self.records: dict[str, Record] = {}
            pos = cd_offset
            spans: list[tuple[int, int, str]] = []
            for info in infos:
                fh.seek(pos)
                head = fh.read(46)
                if len(head) != 46 or head[:4] != _CENTRAL:
                    raise FormatError(f"{path}: corrupt zip central directory")
                n, m, k = struct.unpack("<HHH", head[28:34])
                central_crc_at = pos + 16
                pos += 46 + n + m + k
                if info.filename in self.records:
                    raise FormatError(f"{path}: zip entry {brief(info.filename)} appears twice")
                fh.seek(info.header_offset)
                local = fh.read(30)
                if len(local) != 30 or local[:4] != _LOCAL:
                    raise FormatError(
                        f"{path}: corrupt zip local header for {brief(info.filename)}"
                    )
                flags, method = struct.unpack("<HH", local[6:10])
                name = brief(info.filename)
                if flags & 0x01 or info.flag_bits & 0x01:
                    raise FormatError(f"{path}: zip entry {name} is encrypted")
                if info.compress_type not in (_STORED, _DEFLATED) or method != info.compress_type:
                    raise FormatError(
                        f"{path}: zip entry {name} uses compression method "
                        f"{info.compress_type}; only stored and deflated entries are read"
                    )
                if info.compress_type == _STORED and info.compress_size != info.file_size:
                    raise FormatError(f"{path}: stored zip entry {name} has two different sizes")
                ln, lm = struct.unpack("<HH", local[26:30])
                data_offset = info.header_offset + 30 + ln + lm
                end = data_offset + info.compress_size
                if end > size:
                    raise FormatError(f"{path} is truncated: zip entry {brief(info.filename)}")
                descriptor_crc_at = None
                local_crc_at = info.header_offset + 14
                if flags & 0x08:
                    fh.seek(end)
                    sig = fh.read(4)
                    descriptor_crc_at = end + 4 if sig == _DESCRIPTOR else end
                    local_crc_at = None
                spans.append((info.header_offset, end, info.filename))
                self.records[info.filename] = Record(
                    name=info.filename,
                    compressed=info.compress_type != zipfile.ZIP_STORED,
                    size=info.file_size,
                    compress_size=info.compress_size,
                    crc=info.CRC,
                    data_offset=data_offset,
                    local_crc_at=local_crc_at,
                    descriptor_crc_at=descriptor_crc_at,
                    central_crc_at=central_crc_at,
                )
            spans.sort()
            for (_, a_end, a), (b_start, _, b) in zip(spans, spans[1:], strict=False):
                if b_start < a_end:
                    raise FormatError(f"{path}: zip entries {brief(a)} and {brief(b)} overlap")

    def names(self) -> list[str]:
        return list(self.records)

    def read(
        self, name: str, *, max_bytes: int | None = None, budget: Budget | None = None
    ) -> bytearray:
        """The bytes of one record, CRC-checked; decompressed in chunks, never past its size."""
        rec = self.records.get(name)
        if rec is None:
            raise FormatError(f"{self.path}: record {brief(name)} is missing")
        if max_bytes is not None and rec.size > max_bytes:
            raise FormatError(
                f"{self.path}: record {brief(name)} is {rec.size} bytes, over the limit of "
                f"{max_bytes}"
            )
        if budget is not None:
            budget.take(rec.size, "record", name)
        buf = bytearray(rec.size)
        with open(self.path, "rb") as fh:
            fh.seek(rec.data_offset)
            if not rec.compressed:
                if fh.readinto(buf) != rec.size:
                    raise FormatError(f"{self.path} is truncated: record {brief(name)}")
            else:
                self._inflate(fh, rec, buf)
        # Deflated records are CRC-checked as zipfile did; a stored record is the file's own
        # bytes (torch never checks its CRC, and a forger would fix it anyway).
        if rec.compressed and zlib.crc32(buf) & 0xFFFFFFFF != rec.crc:
            raise FormatError(f"{self.path}: record {brief(name)} fails its CRC check")
        return buf

    def _inflate(self, fh, rec: Record, buf: bytearray) -> None:
        """Raw deflate of ``rec`` into ``buf``: exactly ``rec.size`` bytes or FormatError."""
        inflater = zlib.decompressobj(-15)
        left = rec.compress_size
        pos = 0
        pending = b""
        try:
            while True:
                if not pending:
                    if left <= 0:
                        break
                    pending = fh.read(min(_CHUNK, left))
                    if not pending:
                        raise FormatError(f"{self.path} is truncated: record {brief(rec.name)}")
                    left -= len(pending)
                room = rec.size - pos + 1  # one byte more reveals a record longer than declared
                out = inflater.decompress(pending, min(room, _CHUNK))
                pending = inflater.unconsumed_tail
                if pos + len(out) > rec.size:
                    raise FormatError(
                        f"{self.path}: record {brief(rec.name)} inflates past its declared size"
                    )
                buf[pos : pos + len(out)] = out
                pos += len(out)
                if inflater.eof:
                    break
        except zlib.error as exc:
            raise FormatError(f"{self.path}: cannot inflate record {brief(rec.name)}") from exc
        if pos != rec.size or not inflater.eof:
            raise FormatError(f"{self.path}: record {brief(rec.name)} has the wrong size")


def patch_record(fh, rec: Record, data: bytes) -> None:
    """Overwrite a stored record of the same size in an open copy, fixing its CRCs."""
    if rec.compressed:
        raise FormatError(f"zip record {rec.name!r} is compressed; cannot update it in place")
    if len(data) != rec.size:
        raise FormatError(f"internal size mismatch patching {rec.name!r}")
    fh.seek(rec.data_offset)
    fh.write(data)
    _write_crc(fh, rec, zlib.crc32(data))


def refresh_crc(fh, rec: Record) -> None:
    """Recompute the CRC-32 of stored record ``rec`` (patched in place in the open file ``fh``)
    a block at a time and write it wherever the archive keeps it: the local header (or the data
    descriptor) and the central directory entry. Sizes and offsets are unchanged, so no zip64
    extra field needs touching (zip64 extras hold sizes and offsets, never the CRC)."""
    if rec.compressed:
        raise FormatError(f"zip record {rec.name!r} is compressed; cannot update it in place")
    crc, left = 0, rec.size
    fh.seek(rec.data_offset)
    while left:
        block = fh.read(min(_CHUNK, left))
        if not block:
            raise FormatError(f"zip record {brief(rec.name)} is truncated")
        crc = zlib.crc32(block, crc)
        left -= len(block)
    _write_crc(fh, rec, crc)


def _write_crc(fh, rec: Record, crc: int) -> None:
    packed = struct.pack("<I", crc & 0xFFFFFFFF)
    for at in (rec.local_crc_at, rec.descriptor_crc_at, rec.central_crc_at):
        if at is not None:
            fh.seek(at)
            fh.write(packed)


def _find_central_directory(fh, size: int, path: Path) -> tuple[int, int]:
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise FormatError(f"{path} is not a readable zip archive (no end of central directory)")
    count, cd_size, cd_offset = struct.unpack("<HII", tail[at + 10 : at + 20])
    eocd_pos = size - tail_len + at
    if count == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        loc_pos = eocd_pos - 20
        if loc_pos < 0:
            raise FormatError(f"{path}: corrupt zip64 archive")
        fh.seek(loc_pos)
        loc = fh.read(20)
        if loc[:4] != _EOCD64_LOCATOR:
            raise FormatError(f"{path}: corrupt zip64 archive")
        (rec64,) = struct.unpack("<Q", loc[8:16])
        fh.seek(rec64)
        eocd64 = fh.read(56)
        if len(eocd64) != 56 or eocd64[:4] != b"PK\x06\x06":
            raise FormatError(f"{path}: corrupt zip64 archive")
        count, cd_size, cd_offset = struct.unpack("<QQQ", eocd64[32:56])
    if cd_offset + cd_size > size:
        raise FormatError(f"{path} is truncated: zip central directory past the end")
    return cd_offset, count
