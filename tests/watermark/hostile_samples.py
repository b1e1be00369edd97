"""The hostile inputs of issue 13 (D1-D12 and legacy-format bombs), regenerated on demand.

Nothing here is committed as a blob: each ``make_*`` function writes one sample into a folder and
returns a :class:`Sample` saying which ``assay`` command reads it and how it must end. The
regression tests (``tests/cli/test_hostile_inputs.py``) run every sample through the real CLI;
``python tests/watermark/hostile_samples.py OUT`` writes the corpus to OUT for measuring
(``/usr/bin/time -v assay ...``), printing one command per line.

The pickles are written opcode by opcode (no torch needed), as an attacker would.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class Sample:
    """One hostile input: ``assay *args`` must end with ``exit_code`` and one ``error:`` line."""

    name: str
    args: list[str]
    exit_code: int = 1
    #: the output the command is asked to write, which must not exist afterwards
    output: Path | None = None
    #: the command also gets ``--json`` and must print a report with ok: false
    json_report: bool = False
    #: folders whose content must be unchanged (not read in full for FIFOs)
    watched: list[Path] = field(default_factory=list)


# -- pickle opcodes ----------------------------------------------------------------------------


def p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def p_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def p_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def p_get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def p_put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def tensor_entry(
    name: str,
    key: str,
    *,
    numel: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
    storage: str = "FloatStorage",
    offset: int = 0,
) -> bytes:
    """Pickle opcodes pushing ``name`` and a ``_rebuild_tensor_v2`` tensor (for SETITEMS)."""
    if stride is None:
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        stride = tuple(stride)
    pid = p_tuple([p_str("storage"), b"ctorch\n" + storage.encode() + b"\n", p_str(key)])
    pid = pid[:-1] + p_str("cpu") + p_int(numel) + b"t"
    args = p_tuple(
        [
            pid + b"Q",
            p_int(offset),
            p_tuple([p_int(d) for d in shape]),
            p_tuple([p_int(s) for s in stride]),
            b"\x89",
            b"ccollections\nOrderedDict\n)R",
        ]
    )
    return p_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def state_dict_pickle(entries: list[bytes]) -> bytes:
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + b"".join(entries) + b"u."


def memo_tuple_bomb(levels: int = 40) -> bytes:
    """D1: T(i) = (T(i-1), T(i-1)) through the memo; T(levels) used as a dict key."""
    out = b"\x80\x02}" + b")" + p_put(0) + b"0"
    for i in range(levels):
        out += p_get(i) + p_get(i) + b"\x86" + p_put(i + 1) + b"0"
    return out + p_get(levels) + b"Ns."


def memo_list_pid_bomb(levels: int = 40) -> bytes:
    """D2: L(i) = [L(i-1), L(i-1)] through the memo, used as a persistent id."""
    out = b"\x80\x02]" + p_put(0) + b"0"
    for i in range(levels):
        out += b"(" + p_get(i) + p_get(i) + b"l" + p_put(i + 1) + b"0"
    return out + p_get(levels) + b"Q."


# -- containers --------------------------------------------------------------------------------


def torch_zip(path: Path, pkl: bytes, records: dict[str, bytes], *, deflate: bool = False) -> Path:
    """A torch.save-style zip archive (``archive/data.pkl`` + ``archive/data/<key>``)."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data, compress_type=method)
        zf.writestr("archive/version", b"3\n")
    return path


def legacy_torch(path: Path, obj_pkl: bytes, storages: list[tuple[str, int, bytes]]) -> Path:
    """A legacy ``torch.save`` file: magic, protocol, sys info, object, keys, raw storages."""
    import pickle

    magic = b"\x80\x02\x8a\x0a" + MAGIC.to_bytes(10, "little") + b"."
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    body = magic + b"\x80\x02M\xe9\x03." + pickle.dumps(info, protocol=2) + obj_pkl
    body += pickle.dumps([k for k, _, _ in storages], protocol=2)
    for _, count, data in storages:
        body += struct.pack("<q", count) + data
    path.write_bytes(body)
    return path


def safetensors_raw(path: Path, header: bytes, data: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _patch_zip_entry(path: Path, name: str, patch: Callable[[bytearray, int, int], None]) -> None:
    """Apply ``patch(buf, local_header_offset, central_header_offset)`` to entry ``name``."""
    buf = bytearray(path.read_bytes())
    eocd = buf.rfind(b"PK\x05\x06")
    count, _, pos = struct.unpack("<HII", buf[eocd + 10 : eocd + 20])
    for _ in range(count):
        n, m, k = struct.unpack("<HHH", buf[pos + 28 : pos + 34])
        if bytes(buf[pos + 46 : pos + 46 + n]) == name.encode():
            (local,) = struct.unpack("<I", buf[pos + 42 : pos + 46])
            patch(buf, local, pos)
            path.write_bytes(bytes(buf))
            return
        pos += 46 + n + m + k
    raise KeyError(name)


def _one_float_zip(path: Path) -> Path:
    entry = tensor_entry("w", "0", numel=4, shape=(4,))
    return torch_zip(path, state_dict_pickle([entry]), {"0": b"\0" * 16})


# -- the samples -------------------------------------------------------------------------------


def detect(path: Path) -> list[str]:
    return ["watermark", "detect", str(path)]


def make_d1_memo_tuple_hash_bomb(folder: Path) -> Sample:
    path = torch_zip(folder / "d1.pt", memo_tuple_bomb(), {})
    return Sample("d1_memo_tuple_hash_bomb", detect(path))


def make_d1_legacy_memo_tuple_hash_bomb(folder: Path) -> Sample:
    path = legacy_torch(folder / "d1-legacy.pt", memo_tuple_bomb(), [])
    return Sample("d1_legacy_memo_tuple_hash_bomb", detect(path))


def make_d2_memo_list_persistent_id(folder: Path) -> Sample:
    path = torch_zip(folder / "d2.pt", memo_list_pid_bomb(), {})
    return Sample("d2_memo_list_persistent_id", detect(path))


def make_d5_onnx_duplicate_initializer_names(folder: Path) -> Sample:
    import onnx
    from onnx import TensorProto, helper

    inits = [helper.make_tensor("w", TensorProto.INT64, [1], [i]) for i in range(20_000)]
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    path = folder / "d5.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return Sample("d5_onnx_duplicate_initializer_names", detect(path))


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def make_onnx_node_flood(folder: Path) -> Sample:
    """1.2 M empty nodes in 2.4 MB of protobuf (each node costs Python work when walked)."""
    graph = b"\x0a\x00" * 1_200_000
    model = b"\x08\x07" + b"\x3a" + _varint(len(graph)) + graph
    path = folder / "node-flood.onnx"
    path.write_bytes(model)
    return Sample("onnx_node_flood", detect(path))


def make_d6_stride0_tensor(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=1, shape=(2**28,), stride=(0,))
    path = torch_zip(folder / "d6-stride0.pt", state_dict_pickle([entry]), {"0": b"\0" * 4})
    return Sample("d6_stride0_tensor", detect(path))


def make_d6_overlapping_views(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=4096, shape=(2**15, 2**12), stride=(0, 1))
    path = torch_zip(folder / "d6-overlap.pt", state_dict_pickle([entry]), {"0": b"\0" * 16384})
    return Sample("d6_overlapping_views", detect(path))


def make_d6_stored_entry_false_size(folder: Path) -> Sample:
    # The pickle and the zip directory agree on 3.2 GB; the record really holds 16 bytes.
    entry = tensor_entry("w", "0", numel=800_000_000, shape=(800_000_000,))
    path = torch_zip(folder / "d6-size.pt", state_dict_pickle([entry]), {"0": b"\0" * 16})

    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<I", buf, local + 22, 3_200_000_000)
        struct.pack_into("<I", buf, central + 24, 3_200_000_000)

    _patch_zip_entry(path, "archive/data/0", patch)
    return Sample("d6_stored_entry_false_size", detect(path))


def make_d6_deflate_bomb(folder: Path) -> Sample:
    numel = 2**27  # 512 MiB of zeros in about 0.5 MB
    entry = tensor_entry("w", "0", numel=numel, shape=(numel,))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    parts, crc = [], 0
    for _ in range(numel * 4 // len(chunk)):
        parts.append(comp.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(comp.flush())
    path = raw_zip(
        folder / "d6-deflate.pt",
        [
            ("archive/data.pkl", state_dict_pickle([entry]), None),
            ("archive/byteorder", b"little", None),
            ("archive/data/0", b"".join(parts), (numel * 4, crc)),
        ],
    )
    return Sample("d6_deflate_bomb", detect(path))


def raw_zip(path: Path, entries: list[tuple[str, bytes, tuple[int, int] | None]]) -> Path:
    """A zip written by hand: ``(name, data, None)`` is stored, ``(name, raw deflate,
    (size, crc))`` is a deflated entry whose stream was built by the caller."""
    out = bytearray()
    central = bytearray()
    for name, data, deflated in entries:
        method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
        usize, crc = deflated if deflated else (len(data), zlib.crc32(data))
        offset = len(out)
        nb = name.encode()
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), usize, len(nb), 0
        )
        out += nb + data
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
            usize, len(nb), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += nb
    cd_offset = len(out)
    out += central
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), cd_offset, 0
    )
    path.write_bytes(bytes(out))
    return path


def make_d6_memo_index(folder: Path) -> Sample:
    pkl = b"\x80\x02}" + p_put(2**27) + p_put(2**32 - 1) + b"."
    path = torch_zip(folder / "d6-memo.pt", pkl, {})
    return Sample("d6_memo_index", detect(path))


def make_d7_build_on_allowlisted_global(folder: Path) -> Sample:
    # BUILD {"dtype": "int64"} on the FloatStorage stand-in, then an ordinary state dict.
    poison = b"ctorch\nFloatStorage\n}" + p_str("dtype") + p_str("int64") + b"sb0"
    pkl = state_dict_pickle([tensor_entry("w", "0", numel=4, shape=(4,))])
    pkl = pkl[:2] + poison + pkl[2:]
    path = torch_zip(folder / "d7.pt", pkl, {"0": b"\0" * 16})
    return Sample("d7_build_on_allowlisted_global", detect(path))


def make_d9_torch_huge_shape(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=0, shape=(0, 2**62, 4), stride=(0, 0, 0))
    path = torch_zip(folder / "d9-shape.pt", state_dict_pickle([entry]), {"0": b""})
    return Sample("d9_torch_huge_shape", detect(path))


def make_d9_torch_70_dims(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=1, shape=(1,) * 70)
    path = torch_zip(folder / "d9-dims.pt", state_dict_pickle([entry]), {"0": b"\0" * 4})
    return Sample("d9_torch_70_dims", detect(path))


def make_d9_safetensors_huge_shape(folder: Path) -> Sample:
    header = json.dumps({"w": {"dtype": "F32", "shape": [0, 2**62, 4], "data_offsets": [0, 0]}})
    path = safetensors_raw(folder / "d9-shape.safetensors", header.encode(), b"")
    return Sample("d9_safetensors_huge_shape", detect(path))


def make_d9_safetensors_70_dims(folder: Path) -> Sample:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1] * 70, "data_offsets": [0, 4]}})
    path = safetensors_raw(folder / "d9-dims.safetensors", header.encode(), b"\0" * 4)
    return Sample("d9_safetensors_70_dims", detect(path))


def make_d9_onnx_huge_shape(folder: Path) -> Sample:
    import onnx
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [0, 2**62, 4], vals=b"", raw=True)
    u = helper.make_tensor("u", TensorProto.FLOAT, [1] * 70, vals=[1.0])
    graph = helper.make_graph([], "g", [], [], initializer=[t, u])
    path = folder / "d9-shape.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return Sample("d9_onnx_huge_shape", detect(path))


def make_d9_zip_encrypted(folder: Path) -> Sample:
    path = _one_float_zip(folder / "d9-encrypted.pt")

    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<H", buf, local + 6, 1)
        struct.pack_into("<H", buf, central + 8, 1)

    _patch_zip_entry(path, "archive/data/0", patch)
    return Sample("d9_zip_encryption_flag", detect(path))


def make_d9_zip_method_6(folder: Path) -> Sample:
    path = _one_float_zip(folder / "d9-implode.pt")

    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<H", buf, local + 8, 6)
        struct.pack_into("<H", buf, central + 10, 6)

    _patch_zip_entry(path, "archive/data/0", patch)
    return Sample("d9_zip_compression_method_6", detect(path))


def make_d9_safetensors_deep_json(folder: Path) -> Sample:
    header = b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = safetensors_raw(folder / "d9-deep.safetensors", header, b"")
    return Sample("d9_safetensors_nested_100k", detect(path))


def make_d9_safetensors_long_int(folder: Path) -> Sample:
    header = b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'
    path = safetensors_raw(folder / "d9-int.safetensors", header, b"\0" * 4)
    return Sample("d9_safetensors_5000_digit_int", detect(path))


def make_d12_safetensors(folder: Path, kind: str) -> Sample:
    f32 = {"dtype": "F32", "shape": [1]}
    if kind == "duplicate":
        header = (
            '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            '"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
        )
        data = b"\0" * 8
    elif kind == "gap":
        header = json.dumps(
            {"a": {**f32, "data_offsets": [0, 4]}, "b": {**f32, "data_offsets": [8, 12]}}
        )
        data = b"\0" * 12
    elif kind == "overlap":
        header = json.dumps(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {**f32, "data_offsets": [4, 8]},
            }
        )
        data = b"\0" * 8
    else:  # trailing bytes
        header = json.dumps({"a": {**f32, "data_offsets": [0, 4]}})
        data = b"\0" * 4 + b"trailing"
    path = safetensors_raw(folder / f"d12-{kind}.safetensors", header.encode(), data)
    return Sample(f"d12_safetensors_{kind}", detect(path))


def make_legacy_storage_size_lie(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=2**40, shape=(2**20,))
    path = legacy_torch(folder / "legacy-lie.pt", state_dict_pickle([entry]), [("0", 2**40, b"")])
    return Sample("legacy_storage_size_lie", detect(path))


def make_legacy_stride0(folder: Path) -> Sample:
    entry = tensor_entry("w", "0", numel=1, shape=(2**28,), stride=(0,))
    path = legacy_torch(
        folder / "legacy-stride0.pt", state_dict_pickle([entry]), [("0", 1, b"\0" * 4)]
    )
    return Sample("legacy_stride0_tensor", detect(path))


def make_legacy_code(folder: Path) -> Sample:
    marker = folder / "pwned"
    pkl = b"\x80\x02cposix\nsystem\n" + p_tuple([p_str(f"touch {marker}")]) + b"R."
    path = legacy_torch(folder / "legacy-code.pt", pkl, [])
    return Sample("legacy_pickle_with_code", detect(path))


# -- signature bundles (verify: exit 3 with a --json report) ----------------------------------


def make_d8_fifo_signature(folder: Path) -> Sample:
    model = folder / "d8-fifo"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    os.mkfifo(model / "model.sig")
    return Sample("d8_fifo_signature", ["verify", str(model)], 3, json_report=True)


def make_d8_dev_zero_signature(folder: Path) -> Sample:
    model = folder / "d8-zero"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    (model / "model.sig").symlink_to("/dev/zero")
    return Sample(
        "d8_dev_zero_signature", ["verify", str(model)], 3, json_report=True, watched=[model]
    )


def make_d8_huge_bundle(folder: Path) -> Sample:
    model = folder / "d8-huge"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    with open(model / "model.sig", "wb") as fh:
        fh.write(b'{"mediaType": "' + b"x" * (45 * 1024**2) + b'"}')
    return Sample("d8_45mb_bundle", ["verify", str(model)], 3, json_report=True, watched=[model])


def _bundle_sample(folder: Path, name: str, text: str | bytes) -> Sample:
    model = folder / name
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    (model / "model.sig").write_bytes(text.encode() if isinstance(text, str) else text)
    return Sample(name, ["verify", str(model)], 3, json_report=True, watched=[model])


def make_d9_bundle_deep_json(folder: Path, bundle: str) -> Sample:
    return _bundle_sample(folder, "d9_bundle_nested_100k", "[" * 100_000 + "]" * 100_000)


def make_d9_bundle_long_int(folder: Path, bundle: str) -> Sample:
    doc = bundle.rstrip()[:-1] + ', "x": ' + "7" * 5000 + "}"
    return _bundle_sample(folder, "d9_bundle_5000_digit_int", doc)


def make_d9_bundle_payload_deep_json(folder: Path, bundle: str) -> Sample:
    doc = json.loads(bundle)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    return _bundle_sample(folder, "d9_bundle_payload_nested_100k", json.dumps(doc))


def make_d10_garbage_embedded_key(folder: Path, bundle: str) -> Sample:
    doc = json.loads(bundle)
    doc["verificationMaterial"]["publicKey"] = {
        "rawBytes": base64.b64encode(
            b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"
        ).decode()
    }
    return _bundle_sample(folder, "d10_garbage_embedded_key", json.dumps(doc))


# -- D11: embed to an unwritable output ------------------------------------------------------


def make_d11_embed_unwritable_output(folder: Path) -> Sample:
    src = folder / "d11-src.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 16384]}})
    safetensors_raw(src, header.encode(), b"\0\0\x80\x3f" * 4096)
    blocker = folder / "d11-not-a-folder"
    blocker.write_text("a file where the output's folder should be")
    out = blocker / "out.safetensors"
    return Sample(
        "d11_embed_unwritable_output",
        ["watermark", "embed", str(src), str(out)],
        output=out,
    )


FILE_SAMPLES: list[Callable[[Path], Sample]] = [
    make_d1_memo_tuple_hash_bomb,
    make_d1_legacy_memo_tuple_hash_bomb,
    make_d2_memo_list_persistent_id,
    make_d5_onnx_duplicate_initializer_names,
    make_onnx_node_flood,
    make_d6_stride0_tensor,
    make_d6_overlapping_views,
    make_d6_stored_entry_false_size,
    make_d6_deflate_bomb,
    make_d6_memo_index,
    make_d7_build_on_allowlisted_global,
    make_d9_torch_huge_shape,
    make_d9_torch_70_dims,
    make_d9_safetensors_huge_shape,
    make_d9_safetensors_70_dims,
    make_d9_onnx_huge_shape,
    make_d9_zip_encrypted,
    make_d9_zip_method_6,
    make_d9_safetensors_deep_json,
    make_d9_safetensors_long_int,
    *(
        lambda f, k=k: make_d12_safetensors(f, k)
        for k in ("duplicate", "gap", "overlap", "trailing")
    ),
    make_legacy_storage_size_lie,
    make_legacy_stride0,
    make_legacy_code,
    make_d8_fifo_signature,
    make_d8_dev_zero_signature,
    make_d8_huge_bundle,
    make_d11_embed_unwritable_output,
]

BUNDLE_SAMPLES: list[Callable[[Path, str], Sample]] = [
    make_d9_bundle_deep_json,
    make_d9_bundle_long_int,
    make_d9_bundle_payload_deep_json,
    make_d10_garbage_embedded_key,
]


def write_corpus(out: Path, bundle: str | None = None) -> list[Sample]:
    """Every sample into ``out`` (bundle samples only when a valid ``bundle`` text is given)."""
    out.mkdir(parents=True, exist_ok=True)
    samples = [make(out) for make in FILE_SAMPLES]
    if bundle is not None:
        samples += [make(out, bundle) for make in BUNDLE_SAMPLES]
    return samples


if __name__ == "__main__":  # pragma: no cover - corpus for measuring by hand
    target = Path(sys.argv[1])
    text = Path(sys.argv[2]).read_text() if len(sys.argv) > 2 else None
    for s in write_corpus(target, text):
        print(f"{s.name}\t{s.exit_code}\tassay {' '.join(s.args)}")
