"""Image-folder datasets (CLASS/*.png): reading, bounds and hostile files."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import gate_fixtures as gf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError, UnsafeInputError
from assay.gates import _images
from assay.gates._images import MAX_PIXELS, read_image_folder
from assay.gates.tables import read_dataset


def _digits_folder(root, rows=60):
    x, y, _ = gf.badnets_digits(0.0)
    return gf.image_folder(root, x[:rows], y[:rows]), x[:rows], y[:rows]


def test_folder_names_are_labels_and_pixels_are_features(tmp_path):
    root, x, y = _digits_folder(tmp_path / "imgs")
    table = read_dataset(root, "digit")
    assert table.rows == 60 and table.x.shape == (60, 64)
    assert sorted(set(table.frame["digit"])) == sorted({str(v) for v in y})
    assert table.files[0].endswith(".png") and "/" in table.files[0]
    row = table.files.index(f"{y[0]}/00000.png")
    assert np.allclose(table.x[row], x[0], atol=1 / 255)


def _png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with one tiny compressed stream."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (5_000, r"a/x.png: 5000 x 5000 pixels is over the limit"),  # under Pillow's own limit
        (50_000, r"a/x.png is not a readable image: DecompressionBombError"),  # Pillow refuses
    ],
)
def test_a_png_bomb_is_refused_before_decoding(tmp_path, side, message):
    root = tmp_path / "bomb"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(_png(side, side))  # a 1 KiB file claiming side^2 pixels
    assert side * side > MAX_PIXELS
    with pytest.raises(FormatError, match=message):
        read_image_folder(root, "label")


def test_images_times_pixels_are_bounded_after_the_first_image(tmp_path, monkeypatch):
    import assay.gates.tables as tables

    root, _, _ = _digits_folder(tmp_path / "imgs", rows=20)  # 20 images x 64 pixels
    monkeypatch.setattr(tables, "MAX_CELLS", 20 * 64 - 1)
    decoded = []
    real = _images._pixels
    monkeypatch.setattr(_images, "_pixels", lambda *a: decoded.append(a[1]) or real(*a))
    with pytest.raises(FormatError, match=r"more than 1279 cells \(20 images x 64 pixels\)"):
        read_dataset(root, "digit")
    assert len(decoded) == 1  # refused before the other 19 are decoded
    monkeypatch.setattr(tables, "MAX_CELLS", 20 * 64)
    assert read_dataset(root, "digit").x.shape == (20, 64)


def test_a_class_folder_is_not_listed_past_the_image_bound(tmp_path, monkeypatch):
    root, _, _ = _digits_folder(tmp_path / "imgs", rows=60)
    monkeypatch.setattr(_images, "MAX_FILES", 10)
    listed = []
    real = Path.iterdir

    def iterdir(self):
        for entry in real(self):
            listed.append(entry)
            yield entry

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(FormatError, match="more than 10 images"):
        read_dataset(root, "digit")
    assert len(listed) < 60


def test_a_symlink_is_refused(tmp_path):
    root, _, _ = _digits_folder(tmp_path / "imgs", rows=20)
    target = next((root / "0").iterdir())
    os.symlink(target, root / "0" / "link.png")
    with pytest.raises(UnsafeInputError, match="symbolic link: 0/link.png"):
        read_dataset(root, "label")
    os.symlink(root / "0", root / "zz")
    os.remove(root / "0" / "link.png")
    with pytest.raises(UnsafeInputError, match="symbolic link: zz"):
        read_image_folder(root, "label")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"hello", "0/notes.txt is not a PNG or JPEG file"),
        ("fake.png", b"GIF89a" + b"\0" * 40, "0/fake.png is not a readable image"),
        ("empty.png", b"", "0/empty.png is not a readable image"),
    ],
)
def test_non_images_are_one_line_errors(tmp_path, name, data, message):
    root = tmp_path / "imgs"
    (root / "0").mkdir(parents=True)
    (root / "0" / name).write_bytes(data)
    with pytest.raises(FormatError, match=message) as info:
        read_image_folder(root, "label")
    assert "\n" not in str(info.value)


def test_empty_class_folders_and_stray_files(tmp_path):
    (tmp_path / "a" / "0").mkdir(parents=True)
    with pytest.raises(FormatError, match="empty: no images"):
        read_image_folder(tmp_path / "a", "label")
    (tmp_path / "b" / "0" / "deeper").mkdir(parents=True)
    with pytest.raises(FormatError, match="0/deeper is not a file"):
        read_image_folder(tmp_path / "b", "label")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]))
def test_arbitrary_bytes_are_an_image_or_one_format_error(tmp_path, data, magic):
    root = tmp_path / "h"
    (root / "c").mkdir(parents=True, exist_ok=True)
    (root / "c" / "x.png").write_bytes(magic + data)
    try:
        table = read_image_folder(root, "label")
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    assert table.rows == 1 and 0.0 <= float(table.x.min()) <= float(table.x.max()) <= 1.0


world = __import__("registry_fixtures").home_fixture()


def test_an_image_folder_is_registered_scanned_and_names_its_files(world, tmp_path):
    import json

    import registry_fixtures as fx
    from click.testing import CliRunner

    from assay.cli import cli

    root, _, _ = _digits_folder(tmp_path / "imgs", rows=120)
    result = CliRunner().invoke(
        cli, ["dataset", "register", fx.unique("img"), str(root), "--scan", "--json"]
    )
    assert result.exit_code == 0, result.output
    scan = json.loads(result.output)["scan"]
    assert scan["rows"] == 120 and scan["findings"] == []
    assert all(row["file"].endswith(".png") for row in scan["suspect_rows"])
