"""`assay trace --endpoint`: the black-box suspect (EndpointSuspect) and its bounds.

A tiny FastAPI app under uvicorn on 127.0.0.1 plays a scoring endpoint that answers well or
badly; the end-to-end trace against a served surrogate is in test_answer_marks.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from serve_fixtures import endpoint, free_port

from assay.core.errors import AssayError, ConfigError, FormatError
from assay.serving.endpoint import EndpointSuspect, parse_header


def _ok(labels: Any):
    return lambda rows: (200, json.dumps({"predictions": labels(rows)}).encode(), {})


def test_labels_and_score_rows_in_batches() -> None:
    rows = [[float(i), 0.0] for i in range(600)]  # more than one batch
    with endpoint(_ok(lambda rs: [int(r[0]) % 7 for r in rs]), token="s3") as url:
        suspect = EndpointSuspect(url, headers={"Authorization": "Bearer s3"})
        assert suspect.predict(rows) == [i % 7 for i in range(600)]
        assert suspect.queries == 600
    with endpoint(_ok(lambda rs: [[0.1, 0.7, 0.2] for _ in rs])) as url:
        assert EndpointSuspect(url + "/invocations").predict(rows[:3]) == [1, 1, 1]


def test_refusals_and_bad_answers_stop_the_trace() -> None:
    rows = [[1.0, 2.0]] * 4
    with (
        endpoint(_ok(lambda rs: [0] * len(rs)), token="right") as url,
        pytest.raises(AssayError, match=r"HTTP 401: unknown API key"),
    ):
        EndpointSuspect(url, headers={"Authorization": "Bearer wrong"}).predict(rows)
    with (
        endpoint(_ok(lambda rs: [0])) as url,
        pytest.raises(FormatError, match="1 predictions for 4 inputs"),
    ):
        EndpointSuspect(url).predict(rows)
    with (
        endpoint(lambda rs: (200, b"not json", {})) as url,
        pytest.raises(FormatError, match="not valid JSON"),
    ):
        EndpointSuspect(url).predict(rows)
    with (
        endpoint(_ok(lambda rs: [{"a": 1}] * len(rs))) as url,
        pytest.raises(FormatError, match="neither labels nor score rows"),
    ):
        EndpointSuspect(url).predict(rows)
    big = json.dumps({"predictions": [0] * 4, "pad": "x" * 5000}).encode()
    with (
        endpoint(lambda rs: (200, big, {})) as url,
        pytest.raises(FormatError, match="larger than 4096 bytes"),
    ):
        EndpointSuspect(url, max_answer_bytes=4096).predict(rows)
    with (
        endpoint(lambda rs: (307, b"", {"location": "http://127.0.0.1:9/invocations"})) as url,
        pytest.raises(FormatError, match="redirect"),
    ):
        EndpointSuspect(url, headers={"Authorization": "Bearer k"}).predict(rows)
    with pytest.raises(AssayError, match="cannot be reached"):
        EndpointSuspect(f"http://127.0.0.1:{free_port()}").predict(rows)


def test_slow_endpoint_times_out() -> None:
    def slow(rows: Any):
        time.sleep(2.0)
        return 200, json.dumps({"predictions": [0] * len(rows)}).encode(), {}

    with endpoint(slow) as url, pytest.raises(AssayError, match="cannot be reached"):
        EndpointSuspect(url, timeout_s=0.3).predict([[0.0]])


@contextmanager
def _raw_endpoint(mode: str) -> Iterator[str]:
    """A hostile endpoint below any web framework: ``deep`` answers JSON nested 200,000 deep,
    ``drip`` sends a byte every 0.2 s and never finishes (each read is fast: only a deadline on
    the whole answer stops it)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if mode == "deep":
                self.wfile.write(b"[" * 200_000 + b"]" * 200_000)
                return
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_deeply_nested_answer_is_one_line_error() -> None:
    with _raw_endpoint("deep") as url, pytest.raises(FormatError, match="nests deeper"):
        EndpointSuspect(url).predict([[0.0]])


def test_a_dripping_answer_is_cut_off_at_the_timeout() -> None:
    started = time.monotonic()
    with _raw_endpoint("drip") as url, pytest.raises(AssayError, match="did not finish"):
        EndpointSuspect(url, timeout_s=1.0).predict([[0.0]])
    assert time.monotonic() - started < 30  # a bound on a hang, not a timing claim


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "127.0.0.1:5000", "http://user:pw@127.0.0.1:5000", "http://"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        EndpointSuspect(url)


def test_header_examples() -> None:
    assert parse_header("Authorization: Bearer abc") == ("Authorization", "Bearer abc")
    assert parse_header("X-Api-Key:k") == ("X-Api-Key", "k")
    for bad in ("no colon", ": v", "Bad Name: v", "X: a\nb"):
        with pytest.raises(ConfigError):
            parse_header(bad)


@given(st.text(max_size=200))
def test_header_parser_accepts_a_clean_pair_or_fails_closed(text: str) -> None:
    try:
        name, value = parse_header(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert name and not any(c.isspace() for c in name) and ":" not in name
    assert not any(c in value for c in "\r\n\0") and value == value.strip()
    assert text.strip().startswith(name)


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1).filter(
        lambda n: not any(c in n for c in '()<>@,;:\\"/[]?={}')
    ),
    st.text(alphabet=st.characters(blacklist_characters="\r\n\0"), max_size=50),
)
def test_header_parser_round_trips(name: str, value: str) -> None:
    assert parse_header(f"{name}: {value}") == (name, value.strip())
