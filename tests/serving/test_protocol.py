"""The request parser (MLflow's own, behind serving/_protocol.py) on hostile input: property-based.

Whatever the body and content type, ``parse_request`` returns a parsed input or raises
``ProtocolError`` with a status, an MLflow error code and a bounded one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.serving._protocol import ProtocolError, error_body, parse_request, row_count


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import mlflow.pyfunc
    from serve_fixtures import save_iris_model

    folder = save_iris_model(Path(tmp_path_factory.mktemp("proto")) / "m", 1.0)
    return mlflow.pyfunc.load_model(str(folder))


def check(model: Any, body: bytes, content_type: str) -> None:
    try:
        parsed = parse_request(body, content_type, model, model.metadata.get_input_schema())
    except ProtocolError as exc:
        assert exc.status in (400, 415)
        doc = json.loads(error_body(exc.code, str(exc)))
        assert "\n" not in doc["message"] and len(doc["message"]) <= 300
    else:
        assert row_count(parsed.data) >= 0


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
fields = st.sampled_from(
    ["inputs", "instances", "dataframe_split", "dataframe_records", "params", "x"]
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/csv",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/json; q=1",
    ]
)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(body=st.binary(max_size=300), content_type=content_types)
def test_arbitrary_bytes(model: Any, body: bytes, content_type: str) -> None:
    check(model, body, content_type)


@SETTINGS
@given(doc=st.dictionaries(fields, json_docs, max_size=3))
def test_arbitrary_documents_with_protocol_fields(model: Any, doc: dict) -> None:
    check(model, json.dumps(doc).encode(), "application/json")


@SETTINGS
@given(
    rows=st.lists(
        st.lists(st.floats(allow_nan=False, width=32), min_size=4, max_size=4),
        min_size=1,
        max_size=20,
    )
)
def test_well_formed_inputs_parse_with_their_row_count(model: Any, rows: list) -> None:
    body = json.dumps({"inputs": rows}).encode()
    parsed = parse_request(body, "application/json", model, model.metadata.get_input_schema())
    assert row_count(parsed.data) == len(rows)
