"""The table reader behind gates and dataset scans: property tests and bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.gates.tables import read_table


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400), st.sampled_from([".csv", ".parquet"]))
def test_arbitrary_bytes_are_a_table_or_one_format_error(tmp_path, data, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data)
    try:
        table = read_table(path, "label")
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    assert table.rows == len(table.y) > 0
    assert table.x.shape[0] == table.rows


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False, width=32), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    )
)
def test_numeric_tables_round_trip(tmp_path, rows):
    import pandas as pd

    path = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["f", "label"]).to_csv(path, index=False)
    table = read_table(path, "label")
    assert table.rows == len(rows)
    assert [table.classes[i] for i in table.y] == [r[1] for r in rows]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "empty: no files"),
        ({"a.csv": "label\n"}, "empty: no rows"),
        ({"a.csv": ""}, "empty"),
        ({"a.csv": "x,y\n1,2\n"}, "no label column 'label'"),
        ({"a.csv": "x,label\nfoo,1\n"}, "feature column 'x' is not numeric"),
        ({"a.csv": "label\n1\n"}, "no feature columns"),
        ({"img.png": "\x89PNG"}, "not a table: img.png"),
    ],
)
def test_bad_tables(tmp_path, files, message):
    root = tmp_path / "ds"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    with pytest.raises(FormatError, match=message):
        read_table(root, "label")
