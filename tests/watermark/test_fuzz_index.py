"""Fuzzing the shard index and the streamed reader: whatever the bytes, one-line errors only, and
no file outside the model's folder is ever named or opened."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from assay.core.errors import AssayError, FormatError
from assay.watermark.formats import Limits
from assay.watermark.formats._index import parse_index
from assay.watermark.formats._stream import open_weights

LIMITS = Limits(max_tensors=64, max_header_bytes=1 << 16, max_name_chars=256)
WHERE = Path("model.safetensors.index.json")

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_names = st.text(alphabet="ab./\\\x00-_0123456789", max_size=24)


@given(st.binary(max_size=512))
def test_random_bytes(raw: bytes) -> None:
    try:
        parse_index(raw, WHERE, LIMITS)
    except FormatError as exc:
        assert str(exc) and "\n" not in str(exc)


@given(st.dictionaries(st.text(max_size=12), _json | _names, max_size=6))
def test_random_weight_maps_name_only_plain_files(weight_map: dict) -> None:
    raw = json.dumps({"weight_map": weight_map}).encode()
    try:
        index = parse_index(raw, WHERE, LIMITS)
    except FormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for shard in index.shards:
        assert "/" not in shard and "\\" not in shard and not shard.startswith(".")
        assert Path(shard).name == shard and shard.endswith(".safetensors")


@given(st.binary(min_size=0, max_size=64), st.integers(0, 400))
def test_mutated_sharded_folder(patch: bytes, at: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_file({"a": np.ones((4, 4), np.float32)}, str(folder / "s1.safetensors"))
        save_file({"b": np.ones((2, 8), np.float32)}, str(folder / "s2.safetensors"))
        raw = bytearray(
            json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}).encode()
        )
        raw[at : at + len(patch)] = patch
        (folder / "model.safetensors.index.json").write_bytes(bytes(raw))
        try:
            src = open_weights(folder, limits=LIMITS)
            for name in src:
                assert src[name].shape in ((4, 4), (2, 8))
        except AssayError as exc:
            assert str(exc) and "\n" not in str(exc)


@given(st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 255)), max_size=8))
def test_mutated_safetensors_stream_or_fail_in_one_line(edits: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_file({"a": np.ones((8, 8), np.float32), "b": np.zeros((4, 2), np.float16)}, str(path))
        raw = bytearray(path.read_bytes())
        for at, value in edits:
            raw[at % len(raw)] = value
        path.write_bytes(bytes(raw))
        try:
            src = open_weights(path, limits=LIMITS)
            for name in src:
                arr = src[name]
                assert arr.shape == src.shapes[name]
                src.sample(name, np.arange(min(3, arr.size)))
        except AssayError as exc:
            assert str(exc) and "\n" not in str(exc)
