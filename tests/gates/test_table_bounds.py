"""Bounds of the table reader (review F8): refused from metadata and headers before reading.

The two bombs of the review, shrunk but with the ratio that broke the old reader (a small file
whose table is far over the cell bound; a CSV header far over the column bound), must be refused
before the table is allocated: the error, and a small ``tracemalloc`` peak (the old reader
allocated the whole table first). Property tests build CSV and Parquet files of random shapes and
types under small :class:`TableLimits`: a table within the limits reads as pandas reads it, one over
any limit is one ``FormatError`` line, and nothing is written beside the input.
"""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.gates.tables import MAX_CELLS, MAX_COLUMNS, TableLimits, read_table

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SMALL = TableLimits(
    max_table_bytes=1 << 20,
    max_rows=40,
    max_columns=6,
    max_cells=120,
    max_decoded_bytes=1 << 20,
    max_header_bytes=256,
    chunk_cells=7,  # several chunks / record batches per file
)


def _refused_small(path: Path, label: str = "y") -> tuple[str, int]:
    """Read ``path`` under tracemalloc; (the refusal, the peak of traced bytes)."""
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            read_table(path, label)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value)
    return str(info.value), peak


@pytest.fixture(scope="module")
def parquet_bomb(tmp_path_factory) -> Path:
    """A ~0.3 MB zstd Parquet file of 200,000 rows x 300 zero columns: 60 M cells, 480 MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("pq") / "bomb.parquet"
    col = pa.array(np.zeros(200_000, dtype=np.float64))
    names = [f"f{i}" for i in range(299)] + ["y"]
    pq.write_table(pa.table([col] * 300, names=names), path, compression="zstd")
    return path


def test_the_parquet_bomb_is_refused_from_its_metadata(parquet_bomb):
    assert parquet_bomb.stat().st_size < 2 << 20
    assert MAX_CELLS < 200_000 * 300  # each bound alone (rows, columns) passes
    message, peak = _refused_small(parquet_bomb)
    assert "more than 50000000 cells" in message
    assert peak < 16 << 20, peak  # the old reader decoded 480 MB first
    assert sorted(os.listdir(parquet_bomb.parent)) == ["bomb.parquet"]


def test_the_wide_csv_is_refused_from_its_header_line(tmp_path):
    n = 2 * MAX_COLUMNS  # the review's had 200,000 columns in 2.3 MB
    path = tmp_path / "t.csv"
    path.write_text(
        ",".join(f"c{i}" for i in range(n)) + ",y\n" + "0," * n + "0\n" + "1," * n + "1\n"
    )
    message, peak = _refused_small(path)
    assert f"more than {MAX_COLUMNS} columns" in message
    assert peak < 4 << 20, peak  # the old reader parsed the whole file into 20,000 columns
    assert os.listdir(tmp_path) == ["t.csv"]


def test_a_long_header_line_and_a_quoted_header_running_on_are_refused(tmp_path):
    long = tmp_path / "long.csv"
    long.write_text("a" * (2 << 20) + ",y\n1,2\n")
    assert "header line is longer than 1024 KiB" in _refused_small(long)[0]
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('x,"y\n' + "1,2\n" * 1000 + '"\n')
    assert "not a readable table" in _refused_small(quoted)[0]
    blank = tmp_path / "blank.csv"
    blank.write_text("\n" + "x,y\n1,2\n")
    assert "first line is blank" in _refused_small(blank)[0]


def test_csv_rows_are_bounded_while_reading(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,y\n" + "1,2,3,0\n" * 100)
    limits = TableLimits(max_rows=1000, max_cells=300, chunk_cells=20)
    with pytest.raises(FormatError, match="more than 300 cells"):
        read_table(path, "y", limits)
    assert read_table(path, "y", TableLimits(max_cells=400, chunk_cells=20)).rows == 100
    with pytest.raises(FormatError, match="more than 99 rows"):
        read_table(path, "y", TableLimits(max_rows=99, chunk_cells=20))


def test_cells_count_the_union_of_the_files_columns(tmp_path):
    (tmp_path / "a.csv").write_text("a,y\n" + "1,0\n" * 10)
    (tmp_path / "b.csv").write_text("b,y\n" + "1,1\n" * 10)
    # 20 rows x 3 columns (a, b, y) after concatenation: 60 cells, not 40
    with pytest.raises(FormatError, match="more than 50 cells"):
        read_table(tmp_path, "y", TableLimits(max_cells=50))
    with pytest.raises(FormatError, match="more than 2 columns"):
        read_table(tmp_path, "y", TableLimits(max_columns=2))
    with pytest.raises(FormatError, match="feature column 'a' is not numeric"):  # past the bound
        read_table(tmp_path, "y", TableLimits(max_cells=60))


def test_parquet_strings_that_expand_are_stopped_while_reading(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    big = "z" * 10_000  # one dictionary entry, 2,000 rows: ~20 MB decoded from a tiny file
    pq.write_table(
        pa.table({"f": pa.array([big] * 2_000), "y": pa.array([0, 1] * 1_000)}),
        path,
        compression="zstd",
    )
    assert path.stat().st_size < 64 << 10
    with pytest.raises(FormatError, match="more than 1 MiB in memory"):
        read_table(path, "y", TableLimits(max_decoded_bytes=1 << 20))


def test_nested_parquet_columns_and_a_huge_footer_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    nested = tmp_path / "n.parquet"
    pq.write_table(pa.table({"f": pa.array([[0.0] * 1000] * 3), "y": [0, 1, 0]}), nested)
    with pytest.raises(FormatError, match="column 'f' is nested"):
        read_table(nested, "y")
    footer = tmp_path / "f.parquet"
    footer.write_bytes(b"PAR1" + b"\0" * 16 + (1 << 30).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(FormatError, match="footer is larger than 16 MiB"):
        read_table(footer, "y")


# -- property tests: random CSV / Parquet shapes and types under SMALL limits --------------

_numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False, width=32))


def _within(rows: int, columns: int, limits: TableLimits) -> bool:
    return (
        rows <= limits.max_rows
        and columns <= limits.max_columns
        and rows * columns <= limits.max_cells
    )


def _check(path: Path, rows: int, columns: int, limits: TableLimits = SMALL) -> None:
    """Read ``path``: within the limits as pandas reads it, else one FormatError line."""
    import pandas as pd

    before = sorted(os.listdir(path.parent))
    try:
        table = read_table(path, "y", limits)
    except FormatError as exc:
        assert "\n" not in str(exc)
        assert rows == 0 or not _within(rows, columns, limits), str(exc)
    else:
        assert _within(rows, columns, limits) and table.rows == rows
        expect = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        feats = expect.drop(columns=["y"]).apply(pd.to_numeric, errors="coerce")
        want = feats.to_numpy(dtype=np.float32, na_value=0.0)
        assert np.array_equal(table.x, want)
        assert table.feature_columns == [str(c) for c in feats.columns]
    assert sorted(os.listdir(path.parent)) == before


@SETTINGS
@given(
    st.integers(1, 9).flatmap(
        lambda w: st.tuples(
            st.just(w), st.lists(st.lists(_numbers, min_size=w, max_size=w), max_size=60)
        )
    ),
    st.booleans(),
)
def test_numeric_csv_of_any_shape_reads_or_is_refused_by_its_bounds(tmp_path, shape, crlf):
    width, body = shape
    end = "\r\n" if crlf else "\n"
    cells = [[repr(v) for v in row] for row in body]
    header = [f"f{i}" for i in range(width - 1)] + ["y"]
    rows = [r[:-1] + [str(i % 3)] for i, r in enumerate(cells)]  # labels never empty
    text = end.join(",".join(r) for r in [header, *rows]) + end
    path = tmp_path / "t.csv"
    path.write_text(text, newline="")
    if width == 1:  # only the label: refused for having no features
        with pytest.raises(FormatError):
            read_table(path, "y", SMALL)
        return
    _check(path, len(rows), width)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(["int8", "int64", "float32", "float64", "bool", "dict"]),
        min_size=1,
        max_size=9,
    ),
    st.integers(0, 60),
    st.integers(1, 64),
    st.sampled_from(["none", "snappy", "zstd"]),
    st.randoms(use_true_random=False),
)
def test_parquet_of_any_shape_reads_or_is_refused_by_its_bounds(
    tmp_path, kinds, rows, group, codec, rnd
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(kind: str) -> pa.Array:
        if kind == "bool":
            return pa.array([rnd.random() < 0.5 for _ in range(rows)])
        if kind == "dict":  # numeric text, dictionary-encoded
            return pa.array([str(rnd.randint(0, 3)) for _ in range(rows)]).dictionary_encode()
        return pa.array([rnd.randint(-100, 100) for _ in range(rows)], type=kind)

    names = [f"f{i}" for i in range(len(kinds))] + ["y"]
    cols = [column(k) for k in kinds] + [pa.array([i % 2 for i in range(rows)])]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(cols, names=names), path, row_group_size=group, compression=codec)
    _check(path, rows, len(names))


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from([".csv", ".parquet"]),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_tables_are_a_bounded_table_or_one_format_error(suffix, edits):
    import pandas as pd

    frame = pd.DataFrame({"a": np.arange(30) * 0.5, "b": np.arange(30) % 7, "y": np.arange(30) % 2})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(
            path, index=False
        )
        data = bytearray(path.read_bytes())
        for at, value in edits:
            data[at % len(data)] = value
        path.write_bytes(bytes(data))
        limits = TableLimits(max_rows=40, max_columns=6, max_cells=150, chunk_cells=10)
        try:
            table = read_table(path, "y", limits)
        except FormatError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert table.rows == len(table.y) > 0
            assert table.x.shape[1] == len(table.feature_columns)
            assert table.rows <= 40 and table.frame.shape[1] <= 6
        assert os.listdir(tmp) == [path.name]
