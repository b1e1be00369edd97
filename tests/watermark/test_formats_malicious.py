"""Hostile and broken inputs: each fails with one clear line of the right class and writes nothing."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assay.core.errors import AssayError, FormatError, UnsafeInputError
from assay.watermark.formats import detect_format, load_weights, save_weights

torch = pytest.importorskip("torch")


def _state_dict():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).state_dict()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def _replace_member(src: Path, dst: Path, member_suffix: str, data: bytes) -> None:
    """Copy a torch zip, swapping the bytes of one member (as an attacker would)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = data if info.filename.endswith(member_suffix) else zin.read(info)
            zout.writestr(info.filename, body)


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_SystemPayload, _EvalPayload])
def test_pickle_payload_in_torch_zip_is_refused(tmp_path: Path, payload) -> None:
    good = tmp_path / "good.pt"
    torch.save(_state_dict(), good)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    body = pickle.dumps({"weight": payload(marker)}, protocol=2)
    _replace_member(good, evil, "/data.pkl", body)
    assert detect_format(evil) == "torch"
    with pytest.raises(UnsafeInputError) as exc:
        load_weights(evil)
    msg = _one_line(exc)
    assert "refusing to load" in msg and "only plain tensor state dicts" in msg
    assert ("system" in msg) or ("builtins.eval" in msg)
    assert not marker.exists()
    assert exc.value.exit_code == 1


def test_reduce_hidden_inside_tensor_args_is_refused(tmp_path: Path) -> None:
    # A GLOBAL smuggled where a storage type is expected, in hand-written opcodes.
    marker = tmp_path / "pwned"
    good = tmp_path / "good.pt"
    torch.save(_state_dict(), good)
    body = (
        b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01cposix\nsystem\nq\x02X"
        + struct.pack("<I", len(f"touch {marker}"))
        + f"touch {marker}".encode()
        + b"\x85R\x73."
    )
    evil = tmp_path / "evil.pt"
    _replace_member(good, evil, "/data.pkl", body)
    with pytest.raises(UnsafeInputError, match="posix.system"):
        load_weights(evil)
    assert not marker.exists()


def test_arbitrary_class_and_torchscript_outsider_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(_state_dict(), good)
    evil = tmp_path / "cls.pt"
    body = b"\x80\x02cargparse\nNamespace\n)\x81}b."
    _replace_member(good, evil, "/data.pkl", body)
    with pytest.raises(UnsafeInputError, match="argparse.Namespace"):
        load_weights(evil)

    # TorchScript archives may name __torch__.* classes, nothing else.
    ts = tmp_path / "ts.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(ts))
    evil_ts = tmp_path / "evil_ts.pt"
    _replace_member(
        ts, evil_ts, "/data.pkl", b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R."
    )
    assert detect_format(evil_ts) == "torchscript"
    with pytest.raises(UnsafeInputError, match="posix.system"):
        load_weights(evil_ts)


def test_full_module_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeInputError, match="torch.nn.modules.linear.Linear"):
        load_weights(path)


def test_legacy_torch_file_is_read_but_other_raw_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    sd = _state_dict()
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "torch-legacy"
    wf = load_weights(path)
    assert sorted(wf.tensors) == ["bias", "weight"]
    np.testing.assert_array_equal(wf.tensors["weight"], sd["weight"].numpy())
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeInputError, match="raw pickle") as exc:
        load_weights(plain)
    _one_line(exc)
    # A legacy file whose object pickle carries code is refused like a zip archive's.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"w": _SystemPayload(marker)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeInputError, match="system"):
        load_weights(evil)
    assert not marker.exists()


def test_torch_zip_structural_attacks(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(_state_dict(), good)
    # A tensor whose shape reaches past its storage.
    with zipfile.ZipFile(good) as zf:
        pkl_name = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
        body = zf.read(pkl_name)
    assert b"K\x03K\x04\x86" in body  # (3, 4) shape of weight
    evil = tmp_path / "oob.pt"
    _replace_member(good, evil, "/data.pkl", body.replace(b"K\x03K\x04\x86", b"K\x63K\x04\x86", 1))
    with pytest.raises(FormatError, match="past its storage"):
        load_weights(evil)
    # A missing storage record.
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(tmp_path / "miss.pt", "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info.filename, zin.read(info))
    with pytest.raises(FormatError, match="missing record"):
        load_weights(tmp_path / "miss.pt")
    # Duplicate member names (which one would torch read?).
    dup = tmp_path / "dup.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(dup, "w") as zout:
        import warnings

        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zout.writestr(pkl_name.replace("data.pkl", "data/0"), b"\0" * 48)
    with pytest.raises(FormatError, match="appears twice"):
        load_weights(dup)
    # A zip that is not a torch archive.
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="not a torch file"):
        load_weights(other)
    # Truncated archive.
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(FormatError):
        load_weights(trunc)


def _onnx_with_external(folder: Path, location: str, dtype=None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", dtype or TensorProto.FLOAT, [4], [0, 0, 0, 0])
    w.ClearField("float_data")
    w.ClearField("int64_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (
        ("location", location),
        ("offset", "0"),
        ("length", "16" if dtype is None else "32"),
    ):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", dtype or TensorProto.FLOAT, [4])],
        initializer=[w],
    )
    model = helper.make_model(graph)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "sub/../../x"]
)
def test_onnx_external_data_escaping_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = _onnx_with_external(folder, location)
    with pytest.raises(UnsafeInputError, match="outside the model's folder") as exc:
        load_weights(path)
    _one_line(exc)


def test_onnx_external_data_symlink_and_int_tensor(tmp_path: Path) -> None:
    from onnx import TensorProto

    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\1" * 64)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.bin").symlink_to(outside)
    path = _onnx_with_external(folder, "weights.bin")
    with pytest.raises(UnsafeInputError, match="resolves outside"):
        load_weights(path)
    # Non-float tensors are checked as well.
    folder2 = tmp_path / "m2"
    folder2.mkdir()
    path2 = _onnx_with_external(folder2, "/etc/passwd", dtype=TensorProto.INT64)
    with pytest.raises(UnsafeInputError):
        load_weights(path2)


def test_onnx_external_data_bounds(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"\0" * 8)  # 16 bytes needed
    path = _onnx_with_external(folder, "w.bin")
    with pytest.raises(FormatError, match="past the end"):
        load_weights(path)
    (folder / "w.bin").unlink()
    with pytest.raises(FormatError, match="missing"):
        load_weights(path)


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_bad_headers(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(good))
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(FormatError, match="truncated") as exc:
        load_weights(trunc)
    _one_line(exc)

    huge = _safetensors(
        tmp_path / "huge.safetensors",
        {"w": {"dtype": "F32", "shape": [1_000_000, 1_000_000], "data_offsets": [0, 4 * 10**12]}},
        b"\0" * 16,
    )
    with pytest.raises(FormatError, match="over the limit"):
        load_weights(huge)

    overlap = _safetensors(
        tmp_path / "overlap.safetensors",
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        },
        b"\0" * 24,
    )
    with pytest.raises(FormatError, match="overlap"):
        load_weights(overlap)

    mismatch = _safetensors(
        tmp_path / "mismatch.safetensors",
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
        b"\0" * 8,
    )
    with pytest.raises(FormatError, match="do not match"):
        load_weights(mismatch)

    big_header = tmp_path / "bighead.safetensors"
    big_header.write_bytes(struct.pack("<Q", 10**12) + b"{" + b" " * 100)
    with pytest.raises(FormatError, match="header"):
        load_weights(big_header)

    bad_json = tmp_path / "badjson.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(FormatError, match="JSON"):
        load_weights(bad_json)

    bad_dtype = _safetensors(
        tmp_path / "dtype.safetensors",
        {"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}},
        b"\0",
    )
    with pytest.raises(FormatError, match="unsupported dtype"):
        load_weights(bad_dtype)


def test_corrupt_empty_and_integer_only_files(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        load_weights(empty)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(1000).replace(b"\x08", b"\x09").replace(b"PK", b"pk"))
    junk.write_bytes(b"\x01" + junk.read_bytes()[1:])
    with pytest.raises(FormatError, match="not a recognised weight file"):
        load_weights(junk)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07" + os.urandom(200))
    with pytest.raises(FormatError):
        load_weights(bad_onnx)
    ints = tmp_path / "ints.safetensors"
    save_file({"ids": np.arange(10, dtype=np.int64), "mask": np.ones(3, bool)}, str(ints))
    with pytest.raises(FormatError, match="no floating-point weights in"):
        load_weights(ints)
    int_pt = tmp_path / "ints.pt"
    torch.save({"step": torch.tensor(3)}, int_pt)
    with pytest.raises(FormatError, match="no floating-point weights in"):
        load_weights(int_pt)
    with pytest.raises(AssayError, match="does not exist"):
        load_weights(tmp_path / "nope.safetensors")


def test_save_never_overwrites_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save(_state_dict(), src)
    wf = load_weights(src)
    existing = tmp_path / "out.pt"
    existing.write_bytes(b"precious")
    with pytest.raises(FormatError, match="exists") as exc:
        save_weights(wf, {"weight": wf.tensors["weight"] * 0}, existing)
    _one_line(exc)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(FormatError, match="exists"):
        save_weights(wf, {}, src)
    # Bad updates fail before anything is written.
    with pytest.raises(FormatError, match="shape"):
        save_weights(wf, {"weight": np.zeros((2, 2))}, tmp_path / "a.pt")
    with pytest.raises(FormatError, match="no floating-point tensor named"):
        save_weights(wf, {"nope": np.zeros(1)}, tmp_path / "b.pt")
    with pytest.raises(FormatError, match="does not exist"):
        save_weights(wf, {}, tmp_path / "no-such-dir" / "c.pt")
    # The source changed since it was loaded.
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.zeros(3), "x": torch.ones(1)}, src)
    with pytest.raises(FormatError, match="changed since"):
        save_weights(wf, {}, tmp_path / "d.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "out.pt"]


def test_pickle_bombs_are_bounded(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(_state_dict(), good)
    # bytearray(10**12) would allocate a terabyte if bytearray were allowed with a size.
    body = b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85R."
    evil = tmp_path / "bomb.pt"
    _replace_member(good, evil, "/data.pkl", body)
    with pytest.raises(UnsafeInputError, match="bytearray"):
        load_weights(evil)
    # Deep nesting.
    deep: list = []
    cur = deep
    for _ in range(200):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    buf = io.BytesIO()
    pickle.dump(deep, buf, protocol=2)
    nested = tmp_path / "deep.pt"
    _replace_member(good, nested, "/data.pkl", buf.getvalue())
    with pytest.raises(FormatError, match="deeper"):
        load_weights(nested)
