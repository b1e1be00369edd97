"""The request-head deadline (serving/_header_timeout.py) on a real uvicorn server on 127.0.0.1,
driven by raw sockets: slow or unfinished heads are closed, bodies are not cut by it, and many
slow-header connections at once do not starve normal requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request  # at module level: FastAPI resolves handler annotations here
from serve_fixtures import free_port, request

HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response

    from assay.serving.server import _uvicorn_options

    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return Response(await request.body())

    @app.get("/ping")
    async def ping() -> Any:
        return Response(b"ok")

    number = free_port()
    options = _uvicorn_options("127.0.0.1", number, header_timeout=1.0, limit_concurrency=100)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield number
    server.should_exit = True
    thread.join(20)


def closed_by_server(sock: socket.socket, trickle: bytes = b"", bound_s: float = 15.0) -> bool:
    """Send ``trickle`` a byte each 0.1 s (then nothing) until the server closes the connection;
    False if it is still open after ``bound_s`` (a bound, not a timing assertion)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + bound_s
    i = 0
    while time.monotonic() < deadline:
        try:
            if i < len(trickle):
                sock.sendall(trickle[i : i + 1])
                i += 1
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_head_sent_a_byte_at_a_time_is_closed(port: int) -> None:
    slow = HEAD[:-2] + b"X-Pad: " + b"a" * 400 + b"\r\n\r\n"  # 40 s of trickle at 0.1 s a byte
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert closed_by_server(sock, slow)
    assert request(port, "GET", "/ping")[0] == 200  # the server still answers others


def test_an_unfinished_head_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEAD[:20])
        assert closed_by_server(sock)


def test_a_slow_next_head_on_a_keep_alive_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEAD + b"hi")
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(HEAD[:10])  # the next request's head, never finished
        assert closed_by_server(sock, HEAD[10:-4])


def test_the_body_phase_is_not_cut_by_the_head_deadline(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEAD)
        time.sleep(1.5)  # longer than the head deadline: the head was complete
        sock.sendall(b"hi")
        sock.settimeout(10)
        reply = b""
        while not reply.endswith(b"\r\n\r\nhi") and len(reply) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hi")


def test_many_slow_heads_do_not_starve_normal_requests(port: int) -> None:
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
    try:
        for sock in slow:
            sock.sendall(HEAD[:15])
        assert [request(port, "POST", "/echo", b"ok")[0] for _ in range(5)] == [200] * 5
        assert all(closed_by_server(sock) for sock in slow)
    finally:
        for sock in slow:
            sock.close()
    assert request(port, "GET", "/ping")[0] == 200
