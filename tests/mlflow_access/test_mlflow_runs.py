"""Property tests of what registration reads back about MLflow runs: the run search filter (no tag
value can inject filter syntax), run records parsed from REST answers (malformed answers are one
FormatError, never a crash), and the ``assay.registrar`` tag (``host:pid``) that tells a live
upload from an orphan."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.mlflow_access.base import RunRecord, has_tags, running_filter
from assay.mlflow_access.rest import _run_from_json
from assay.registry.registration import _alive_here

CLAUSE = re.compile(r"tags\.`([A-Za-z0-9._-]+)` = '([A-Za-z0-9._-]+)'")
PLAIN = st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True)
ANY_TEXT = st.text(max_size=60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["info", "data", "tags", "key", "value", "run_id"]), children
        )
    ),
    max_leaves=20,
)


@given(st.dictionaries(ANY_TEXT | PLAIN, ANY_TEXT | PLAIN, max_size=6))
def test_running_filter_holds_only_plain_tag_clauses(tags: dict[str, str]) -> None:
    text = running_filter(tags)
    first, *clauses = text.split(" and ")
    assert first == "attributes.status = 'RUNNING'"
    for clause in clauses:
        match = CLAUSE.fullmatch(clause)
        assert match is not None, clause
        assert tags[match.group(1)] == match.group(2)
    plain = {k for k, v in tags.items() if CLAUSE.fullmatch(f"tags.`{k}` = '{v}'")}
    assert len(clauses) == len(plain)


@given(st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=4), st.dictionaries(ANY_TEXT, ANY_TEXT))
def test_has_tags_is_an_exact_subset_check(wanted: dict[str, str], extra: dict[str, str]) -> None:
    run = RunRecord("r", "RUNNING", {**extra, **wanted})
    assert has_tags(run, wanted)
    for key, value in wanted.items():
        assert not has_tags(RunRecord("r", "RUNNING", {**run.tags, key: value + "x"}), wanted)


@given(JSON)
@settings(max_examples=300)
def test_malformed_run_answers_are_one_format_error(doc: object) -> None:
    try:
        run = _run_from_json(doc)
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    assert run.run_id and isinstance(run.status, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in run.tags.items())


@given(
    PLAIN,
    st.sampled_from(["RUNNING", "FAILED", "FINISHED"]),
    st.dictionaries(PLAIN, ANY_TEXT, max_size=5),
    st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), ANY_TEXT),
)
def test_well_formed_run_answers_round_trip(
    run_id: str, status: str, tags: dict[str, str], start: object
) -> None:
    doc = {
        "info": {"run_id": run_id, "status": status, "start_time": start},
        "data": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    run = _run_from_json(doc)
    assert (run.run_id, run.status, run.tags) == (run_id, status, tags)


@given(ANY_TEXT)
def test_registrar_of_another_host_or_garbage_is_never_alive(text: str) -> None:
    host = socket.gethostname()
    alive = _alive_here(text)
    if alive:
        assert text.rpartition(":")[0] == host
    assert _alive_here(f"not-{host}:{os.getpid()}") is False
    assert _alive_here(f"{host}:{os.getpid()}") is False  # our own run is never "another upload"


def test_registrar_of_a_live_and_a_dead_process_here() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive_here(f"{socket.gethostname()}:{proc.pid}") is True
    finally:
        proc.kill()
        proc.wait()
    assert _alive_here(f"{socket.gethostname()}:{proc.pid}") is False


HERE = socket.gethostname()


@pytest.mark.parametrize(
    "text",
    ["", ":", "host", f"{HERE}:", "h:-1", "h:1e3", f"{HERE}:0", f"{HERE}:-1", f"{HERE}:1e3"]
    + [f"{HERE}:{2**31}", f"{HERE}:{2**70}", f"{HERE}:{'9' * 400}", f"{HERE}:\u0661\u0662"],
)
def test_registrar_edge_cases(text: str) -> None:
    """Process group 0, negative, huge or non-ASCII pids are never "alive" (and never raise)."""
    assert _alive_here(text) is False


@given(st.integers(min_value=-(2**80), max_value=2**80) | st.text(max_size=30))
def test_registrar_of_this_host_never_raises(pid: object) -> None:
    assert _alive_here(f"{HERE}:{pid}") in (True, False)
