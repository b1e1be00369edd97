"""Embedding a torch zip archive in place (``open_weights(..., writable=True)`` + ``embed_source``):
the same bytes as ``load_weights`` + ``embed`` + ``save_weights``, CRCs refreshed, tied weights and
compressed or strided archives left to the eager path, a file changed under the writer refused,
and the in-place path's peak memory a fraction of the eager one's."""

from __future__ import annotations

import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assay.core.errors import FormatError
from assay.registry.watermarking import _embed_file
from assay.watermark.detect import detect
from assay.watermark.formats import load_weights, save_weights
from assay.watermark.formats._stream import open_weights
from assay.watermark.scheme import DEFAULT_STRENGTH, embed
from assay.watermark.streaming import embed_source

torch = pytest.importorskip("torch")

SECRET = b"in-place-torch-secret-0123456789"


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "wte": torch.randn(300, 64, generator=g) * 0.02,
        "h0.attn": (torch.randn(64, 192, generator=g) * 0.02).to(torch.bfloat16),
        "h0.proj": (torch.randn(64, 64, generator=g) * 0.02).to(torch.float16),
        "tail": (torch.randn(40, 64, generator=g) * 0.02)[8:],  # a view at a storage offset
        "ln.bias": torch.zeros(64),
        "steps": torch.arange(4),
    }


def _eager(path: Path, out: Path):
    wf = load_weights(path)
    result = embed(wf.tensors, SECRET)
    save_weights(wf, result.tensors, out)
    return result


def test_in_place_equals_the_eager_embed_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    result = _eager(path, tmp_path / "eager.pt")
    shutil.copyfile(path, tmp_path / "inplace.pt")
    src = open_weights(tmp_path / "inplace.pt", writable=True)
    assert src.in_place and src.format == "torch"
    record, _ = embed_source(src, SECRET)
    assert record == result.record
    assert (tmp_path / "inplace.pt").read_bytes() == (tmp_path / "eager.pt").read_bytes()
    with zipfile.ZipFile(tmp_path / "inplace.pt") as zf:
        assert zf.testzip() is None  # every CRC (local header and central directory) is right
    loaded = torch.load(tmp_path / "inplace.pt", weights_only=True)
    eager = torch.load(tmp_path / "eager.pt", weights_only=True)
    for name, marked in result.tensors.items():
        assert torch.equal(loaded[name], eager[name]), name
        assert loaded[name].dtype == _state()[name].dtype
        stored = loaded[name].float().numpy()
        assert np.allclose(stored, marked, rtol=1e-2, atol=1e-5) and not np.array_equal(
            stored, _state()[name].float().numpy()
        )
    assert torch.equal(loaded["steps"], torch.arange(4))
    suspect = load_weights(tmp_path / "inplace.pt").tensors
    res = detect(suspect, SECRET, reference=load_weights(path).tensors, record=record)
    assert res.detected


def test_torchscript_is_marked_in_place_too(tmp_path: Path) -> None:
    lin = torch.nn.Linear(64, 96)
    script = torch.jit.script(lin)
    path = tmp_path / "s.pt"
    script.save(str(path))
    result = _eager(path, tmp_path / "eager.pt")
    shutil.copyfile(path, tmp_path / "inplace.pt")
    src = open_weights(tmp_path / "inplace.pt", writable=True)
    assert src.in_place and src.format == "torchscript"
    assert embed_source(src, SECRET)[0] == result.record
    assert (tmp_path / "inplace.pt").read_bytes() == (tmp_path / "eager.pt").read_bytes()
    loaded = torch.jit.load(str(tmp_path / "inplace.pt"))
    assert np.array_equal(loaded.weight.detach().numpy(), result.tensors["weight"])


def test_tied_weights_stay_eager_and_are_marked_consistently(tmp_path: Path) -> None:
    state = _state()
    state["lm_head"] = state["wte"]  # GPT-2's tie: one storage, two names
    path = tmp_path / "tied.pt"
    torch.save(state, path)
    assert open_weights(path).streamed  # read streamed ...
    src = open_weights(path, writable=True)
    assert not src.in_place and src.weight_file is not None  # ... but written eagerly
    record, _ = _embed_file(path, SECRET, DEFAULT_STRENGTH)
    loaded = torch.load(path, weights_only=True)
    assert loaded["wte"].data_ptr() == loaded["lm_head"].data_ptr()  # still tied
    assert {m.name for m in record.tensors} >= {"wte", "lm_head"}
    assert not torch.equal(loaded["wte"], state["wte"])


def test_overlapping_views_that_disagree_are_refused(tmp_path: Path) -> None:
    base = torch.randn(80, 64, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "views.pt"
    torch.save({"a": base[:60], "b": base[20:]}, path)  # overlapping rows, different offsets
    before = path.read_bytes()
    assert not open_weights(path, writable=True).in_place
    with pytest.raises(FormatError, match="updates disagree"):
        _embed_file(path, SECRET, DEFAULT_STRENGTH)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["views.pt"]


def test_a_strided_archive_falls_back_to_eager(tmp_path: Path) -> None:
    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(1)) * 0.02
    path = tmp_path / "m.pt"
    torch.save({"w": w.t(), "v": torch.randn(64, 80) * 0.02}, path)  # a transposed view
    src = open_weights(path, writable=True)
    assert not src.in_place and src.weight_file is not None
    expected = embed(load_weights(path).tensors, SECRET)
    record, _ = _embed_file(path, SECRET, DEFAULT_STRENGTH)
    assert record == expected.record
    loaded = torch.load(path, weights_only=True)
    assert np.array_equal(loaded["w"].numpy(), expected.tensors["w"])
    assert loaded["w"].stride() == (1, 64)  # still a view of the same storage


def test_a_compressed_archive_falls_back_to_eager_which_refuses_it(tmp_path: Path) -> None:
    """A deflated record cannot be patched by either path (``save_weights`` writes stored
    records only): one line, and the file is left as it was."""
    plain, path = tmp_path / "plain.pt", tmp_path / "m.pt"
    torch.save({"w": torch.randn(96, 64) * 0.02}, plain)
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_DEFLATED)
    plain.unlink()
    before = path.read_bytes()
    assert not open_weights(path, writable=True).in_place
    with pytest.raises(FormatError, match="compressed") as info:
        _embed_file(path, SECRET, DEFAULT_STRENGTH)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_file_changed_between_open_and_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    src = open_weights(path, writable=True)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(FormatError, match="changed since it was opened") as info:
        embed_source(src, SECRET)
    assert "\n" not in str(info.value)


def test_a_probe_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    src = open_weights(path, writable=True, probe=True)
    assert src.in_place
    with pytest.raises(FormatError, match="not opened for in-place writing"):
        src.write("wte", src["wte"])


def test_in_place_peak_memory_is_a_fraction_of_the_eager_one(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    path = tmp_path / "m.pt"
    torch.save({f"h{i}.w": torch.randn(256, 512, generator=g) * 0.02 for i in range(8)}, path)
    shutil.copyfile(path, tmp_path / "copy.pt")  # 8 x 512 KiB = 4 MiB of weights

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    eager = peak(lambda: _eager(path, tmp_path / "eager.pt"))
    in_place = peak(lambda: embed_source(open_weights(tmp_path / "copy.pt", writable=True), SECRET))
    assert eager > 4 << 20  # the whole model (and its marked copy) in memory
    assert in_place < eager / 3, (in_place, eager)
    assert (tmp_path / "copy.pt").read_bytes() == (tmp_path / "eager.pt").read_bytes()


def _overlapping_records(path: Path) -> Path:
    """A real archive whose central directory sends ``archive/byteorder`` to the local header
    of the weight's record: two zip entries over the same bytes."""
    import struct

    torch.save({"w": torch.randn(64, 32) * 0.02}, path)
    buf = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename.split("/", 1)[1]: i for i in zf.infolist()}
    at = buf.rfind(b"PK\x01\x02", 0)
    while at >= 0:  # find each central entry by name, point byteorder at data/0's header
        n = struct.unpack_from("<H", buf, at + 28)[0]
        name = bytes(buf[at + 46 : at + 46 + n]).decode()
        if name.endswith("/byteorder"):
            struct.pack_into("<I", buf, at + 42, infos["data/0"].header_offset)
        at = buf.rfind(b"PK\x01\x02", 0, at)
    path.write_bytes(buf)
    return path


def _lying_storage(path: Path) -> Path:
    """A weight whose pickle claims 2048 elements of a 16-byte record."""
    import hostile_samples as H

    entry = H.tensor_entry("w", "0", numel=2048, shape=(64, 32))
    return H.torch_zip(path, H.state_dict_pickle([entry]), {"0": b"\0" * 16})


@pytest.mark.parametrize("make", [_overlapping_records, _lying_storage])
def test_hostile_archives_are_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, make
) -> None:
    path = make(tmp_path / "m.pt")
    before = path.read_bytes()
    for attempt in (
        lambda: open_weights(path, writable=True),
        lambda: _embed_file(path, SECRET, DEFAULT_STRENGTH),
    ):
        with pytest.raises(FormatError) as info:
            attempt()
        assert "\n" not in str(info.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]
