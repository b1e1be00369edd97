"""`assay serve` end to end: a real uvicorn server on 127.0.0.1 over a real registry.

MLflow's scoring formats, malformed and oversized bodies, API keys (unknown, revoked), the token
bucket (429), a rollback during a stream of requests (swapped, no failed request), a swap to a
tampered version (refused and audited, the old version keeps serving), and the store
unreachable (the loaded version keeps serving, writes queue and land afterwards). On SQLite and,
with ``ASSAY_TEST_PG_URL``, on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import (
    POLICY,
    register_known_good,
    request,
    running,
    save_iris_model,
    serve_world,
    service_for,
    wait_for,
)
from store_backends import STORE_BACKENDS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serve")
    models = {c: save_iris_model(root / f"m{c}", c) for c in (0.05, 1.0, 20.0)}
    with serve_world(root, request.param, POLICY, models, ("alice", "bob", "tiny")) as world:
        yield world


def iris(n: int = 5) -> Any:
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    return x[:: max(1, 150 // n)][:n]


COLUMNS = [str(i) for i in range(4)]


@pytest.fixture(scope="module")
def basic(world: dict[str, Any]) -> Iterator[tuple[int, Any, dict[str, str]]]:
    registry = world["registry"]
    register_known_good(registry, "iris-basic", world["models"][1.0], alias="production")
    service = service_for(world, "models:/iris-basic@production")
    with running(service) as port:
        yield port, service, world["keys"]


def test_scoring_protocol_formats(basic: tuple[int, Any, dict[str, str]]) -> None:
    port, service, keys = basic
    x = iris()
    expected = [int(v) for v in service.current.model.predict(x)]
    bodies = [
        {"inputs": x.tolist()},
        {"instances": x.tolist()},
        {"dataframe_split": {"columns": COLUMNS, "data": x.tolist()}},
        {"dataframe_records": [dict(zip(COLUMNS, row, strict=True)) for row in x.tolist()]},
    ]
    for body in bodies:
        status, headers, data = request(port, "POST", "/invocations", body, key=keys["alice"])
        assert status == 200, data
        assert headers["x-assay-version"] == "1"
        assert json.loads(data) == {"predictions": expected}
    csv = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in x.tolist())
    status, _, data = request(
        port, "POST", "/invocations", csv, key=keys["alice"], content_type="text/csv"
    )
    assert status == 200 and json.loads(data) == {"predictions": expected}
    for path in ("/ping", "/health", "/version"):
        status, headers, _ = request(port, "GET", path)
        assert status == 200 and headers["x-assay-version"] == "1"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ('{"rows": [[1, 2, 3, 4]]}', "application/json", 400),  # no known input field
        ("[[1, 2, 3, 4]]", "application/json", 400),  # a list, not a dict
        ('{"inputs": [[1, 2, 3, 4]]}', "application/xml", 415),
        ('{"inputs": [[1, 2, 3, 4]]}', "application/json; charset=latin-1", 415),
        (b"\xff\xfe\x00", "application/json", 400),
        ('{"inputs": ' + "[" * 3000 + "]" * 3000 + "}", "application/json", 400),
    ],
)
def test_bad_requests_answer_mlflow_error_json(
    basic: tuple[int, Any, dict[str, str]], body: Any, content_type: str, status: int
) -> None:
    port, _, keys = basic
    got, headers, data = request(
        port, "POST", "/invocations", body, key=keys["alice"], content_type=content_type
    )
    assert got == status, data
    error = json.loads(data)
    assert set(error) == {"error_code", "message"} and "\n" not in error["message"]
    assert len(error["message"]) <= 300


def test_oversized_body_is_refused(basic: tuple[int, Any, dict[str, str]]) -> None:
    port, _, keys = basic
    body = json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]] * 1000})  # > 8192 bytes (policy)
    status, _, data = request(port, "POST", "/invocations", body, key=keys["alice"])
    assert status == 413 and json.loads(data)["error_code"] == "INVALID_PARAMETER_VALUE"


def test_unknown_missing_and_revoked_keys(
    world: dict[str, Any], basic: tuple[int, Any, dict[str, str]]
) -> None:
    from assay.registry.serving_clients import revoke_client

    port, service, keys = basic
    body = {"inputs": iris(1).tolist()}
    assert request(port, "POST", "/invocations", body)[0] == 401
    status, _, data = request(port, "POST", "/invocations", body, key="asy_not-a-key")
    assert status == 401 and json.loads(data)["error_code"] == "UNAUTHENTICATED"
    assert request(port, "POST", "/invocations", body, key=keys["bob"])[0] == 200
    revoke_client(world["registry"], "bob", "test")
    service.check_once()  # what the follower does every interval
    assert request(port, "POST", "/invocations", body, key=keys["bob"])[0] == 401


def test_database_writes_cannot_mint_unrevoke_or_unblock_keys(
    world: dict[str, Any], basic: tuple[int, Any, dict[str, str]]
) -> None:
    """Review F7: a serve_clients row grants nothing a signed serve.client-* statement does not
    vouch for, and a revoke / block / throttle holds if either the row or a statement says so."""
    from click.testing import CliRunner
    from sqlalchemy import update

    from assay.cli import cli
    from assay.registry.serving_clients import (
        add_client,
        block_client,
        hash_secret,
        list_clients,
        revoke_client,
        throttle_client,
    )
    from assay.store.models import ServeClient

    port, service, _ = basic
    registry = world["registry"]
    body = {"inputs": iris(1).tolist()}
    keys = {n: add_client(registry, n) for n in ("dora", "erin", "finn", "gail")}
    service.check_once()
    assert all(request(port, "POST", "/invocations", body, key=k)[0] == 200 for k in keys.values())
    revoke_client(registry, "dora", "left")
    block_client(registry, "erin", "extraction")
    throttle_client(registry, "finn", 0.001, 2, "noisy")
    forged, swapped = "asy_mallory-chose-this-secret", "asy_swapped-into-gails-row"
    with registry.store.session() as s:  # what a database writer can do
        s.execute(
            update(ServeClient)
            .where(ServeClient.name.in_(["dora", "erin", "finn"]))
            .values(revoked_at=None, blocked_at=None, throttle=None, reason=None)
        )
        s.execute(
            update(ServeClient)
            .where(ServeClient.name == "gail")
            .values(secret_hash=hash_secret(swapped))
        )
        s.add(ServeClient(name="mallory-row", secret_hash=hash_secret(forged)))
    service.check_once()
    assert request(port, "POST", "/invocations", body, key=keys["dora"])[0] == 401  # un-revoked
    assert request(port, "POST", "/invocations", body, key=forged)[0] == 401  # inserted
    assert request(port, "POST", "/invocations", body, key=swapped)[0] == 401  # hash swapped
    assert request(port, "POST", "/invocations", body, key=keys["gail"])[0] == 401
    assert request(port, "POST", "/invocations", body, key=keys["erin"])[0] == 403  # unblocked
    statuses = [request(port, "POST", "/invocations", body, key=keys["finn"])[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # the signed throttle (burst 2) still holds
    clients = {c.name: c for c in list_clients(registry)}
    assert clients["dora"].status == "revoked" and not clients["dora"].active
    assert clients["erin"].status == "blocked" and clients["erin"].blocked_at is not None
    assert clients["finn"].throttle == {"rate_per_second": 0.001, "burst": 2}
    assert clients["mallory-row"].status == "tampered" and not clients["mallory-row"].active
    assert clients["gail"].status == "tampered"
    assert clients["alice"].status == "active" and clients["alice"].active
    listed = CliRunner().invoke(cli, ["serve", "key", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    status = {c["name"]: c["status"] for c in json.loads(listed.output)}
    assert status["mallory-row"] == "tampered" and status["gail"] == "tampered"
    assert status["dora"] == "revoked" and status["erin"] == "blocked"
    table = CliRunner().invoke(cli, ["serve", "key", "list"])
    assert table.exit_code == 0 and "tampered" in table.output


def test_a_client_whose_statement_names_no_hash_is_legacy_and_refused(
    world: dict[str, Any], basic: tuple[int, Any, dict[str, str]]
) -> None:
    """Clients added before the add statement named the secret hash: fail closed."""
    from assay.registry.serving_clients import client_table, hash_secret, list_clients
    from assay.store.models import ServeClient

    port, service, _ = basic
    registry = world["registry"]
    secret = "asy_added-by-an-older-assay"
    with registry.store.session() as s:  # what add_client wrote before the hash was signed
        s.add(ServeClient(name="old-client", secret_hash=hash_secret(secret)))
        registry.record(s, "serve.client-add", "serve-client:old-client", {})
    assert next(c for c in list_clients(registry) if c.name == "old-client").status == "legacy"
    assert hash_secret(secret) not in client_table(registry)
    service.check_once()
    assert request(port, "POST", "/invocations", {"inputs": iris(1).tolist()}, key=secret)[0] == 401


def test_token_bucket_answers_429(basic: tuple[int, Any, dict[str, str]]) -> None:
    port, _, keys = basic
    body = {"inputs": iris(1).tolist()}
    statuses = [request(port, "POST", "/invocations", body, key=keys["tiny"])[0] for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    status, headers, data = request(port, "POST", "/invocations", body, key=keys["tiny"])
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(data)["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_query_log_records_digests_and_samples(
    world: dict[str, Any], basic: tuple[int, Any, dict[str, str]]
) -> None:
    from sqlalchemy import select

    from assay.store.models import ServeQuery

    port, service, keys = basic
    body = json.dumps({"inputs": iris(2).tolist()})
    assert request(port, "POST", "/invocations", body, key=keys["alice"])[0] == 200
    assert wait_for(lambda: service.writer.pending == 0, 30)
    with world["registry"].store.session(readonly=True) as s:
        rows = list(s.scalars(select(ServeQuery).where(ServeQuery.client == "alice")))
    import hashlib

    mine = [r for r in rows if r.input_digest == hashlib.sha256(body.encode()).hexdigest()]
    assert mine and mine[-1].status == 200 and mine[-1].rows == 2 and mine[-1].version == "1"
    assert mine[-1].sample == body and len(mine[-1].answer_digest) == 64


def _stream(port: int, key: str, stop: threading.Event, seen: list[tuple[int, str | None]]) -> None:
    body = json.dumps({"inputs": iris(3).tolist()})
    while not stop.is_set() and len(seen) < 5000:
        status, headers, _ = request(port, "POST", "/invocations", body, key=key)
        seen.append((status, headers.get("x-assay-version")))


def test_rollback_during_a_stream_swaps_without_failed_requests(world: dict[str, Any]) -> None:
    from assay.rollback.execute import rollback

    registry = world["registry"]
    register_known_good(registry, "iris-rb", world["models"][1.0], alias="production")
    register_known_good(registry, "iris-rb", world["models"][20.0], alias="production")
    service = service_for(world, "models:/iris-rb@production")
    assert service.current.version == "2"
    with running(service) as port:
        stop, seen = threading.Event(), []
        thread = threading.Thread(target=_stream, args=(port, world["keys"]["alice"], stop, seen))
        thread.start()
        try:
            assert wait_for(lambda: len(seen) >= 20, 60)
            rollback(registry, "iris-rb", reason="bad predictions")
            assert wait_for(lambda: seen and seen[-1][1] == "1", 60)
            count = len(seen)
            assert wait_for(lambda: len(seen) >= count + 20, 60)
        finally:
            stop.set()
            thread.join(60)
    assert {s for s, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert versions[0] == "2" and versions[-1] == "1"
    first_one = versions.index("1")
    assert set(versions[first_one:]) == {"1"}  # no flapping back after the swap


def test_swap_to_tampered_version_is_refused_and_audited(world: dict[str, Any]) -> None:
    from assay.mlflow_access.artifacts import local_path_of

    registry = world["registry"]
    register_known_good(registry, "iris-tamper", world["models"][1.0], alias="production")
    service = service_for(world, "models:/iris-tamper@production")
    with running(service) as port:
        # promote verified v2, then change its bytes in the artifact store; the follower is held
        # off meanwhile, so its next check sees the tampered bytes (not a race with the test)
        with service._swap_lock:
            v2 = register_known_good(
                registry, "iris-tamper", world["models"][20.0], alias="production"
            )
            folder = local_path_of(registry.backend.get_version("iris-tamper", v2).source)
            pkl = Path(folder) / "model.pkl"
            data = bytearray(pkl.read_bytes())
            data[len(data) // 2] ^= 0x01
            pkl.write_bytes(bytes(data))
        assert wait_for(lambda: v2 in service.stats.refused, 60)
        status, headers, _ = request(
            port, "POST", "/invocations", {"inputs": iris(1).tolist()}, key=world["keys"]["alice"]
        )
        assert status == 200 and headers["x-assay-version"] == "1"
        assert wait_for(lambda: service.writer.pending == 0, 30)
    events = [
        e
        for e in registry.audit_events()
        if e["action"] == "serve.swap-refused" and "iris-tamper" in e["subject"]
    ]
    assert len(events) == 1  # once per version, not once per check
    assert events[0]["payload"]["code"] == "tampered" and events[0]["payload"]["serving"] == "1"


def test_store_unreachable_keeps_serving_and_queues_writes(world: dict[str, Any]) -> None:
    from assay.store.store import Store

    registry = world["registry"]
    register_known_good(registry, "iris-down", world["models"][1.0], alias="production")
    service = service_for(world, "models:/iris-down@production")
    with running(service) as port:
        good = service.registry.store
        service.registry.store = Store(f"sqlite:///{world['root'] / 'gone' / 'nowhere' / 'x.db'}")
        body = {"inputs": iris(1).tolist()}
        try:
            service.check_once()
            assert service.stats.check_errors >= 1
            for _ in range(5):
                status, headers, _ = request(
                    port, "POST", "/invocations", body, key=world["keys"]["alice"]
                )
                assert status == 200 and headers["x-assay-version"] == "1"
            assert wait_for(lambda: service.writer.failures >= 1, 30)
            assert service.writer.pending >= 5
        finally:
            service.registry.store = good
        assert wait_for(lambda: service.writer.pending == 0, 60)


def test_first_load_refuses_a_version_that_fails_the_decision(world: dict[str, Any]) -> None:
    from assay.core.errors import IntegrityError
    from assay.registry.registration import register_model

    registry = world["registry"]
    register_model(
        registry, "iris-new", str(world["models"][1.0]), watermark=False, alias="staging"
    )
    from assay.registry.states import mark

    mark(registry, "iris-new", "1", "quarantined", reason="test")
    with pytest.raises(IntegrityError, match="quarantined"):
        service_for(world, "models:/iris-new@staging")


def test_retention_prunes_old_rows_and_quota_counts_today(world: dict[str, Any]) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select

    from assay.serving._querylog import prune_job, rows_today
    from assay.store.models import ServeQuery

    registry = world["registry"]
    old = datetime.now(timezone.utc) - timedelta(days=40)
    with registry.store.session() as s:
        s.add(ServeQuery(client="old", at=old, model_name="iris-ret", status=200, rows=3))
        s.add(ServeQuery(client="new", model_name="iris-ret", status=200, rows=4))
        s.add(ServeQuery(client="new", model_name="iris-ret", status=429, rows=9))
    assert rows_today(registry, "iris-ret") == {"new": 4}
    with registry.store.session() as s:
        prune_job(30)(s)
    with registry.store.session(readonly=True) as s:
        clients = [
            r.client
            for r in s.scalars(select(ServeQuery).where(ServeQuery.model_name == "iris-ret"))
        ]
    assert sorted(clients) == ["new", "new"]


def test_extraction_is_flagged_alerted_and_the_playbook_blocks_the_client(
    world: dict[str, Any], basic: tuple[int, Any, dict[str, str]]
) -> None:
    import numpy as np
    from click.testing import CliRunner

    from assay.cli import cli
    from assay.registry.serving_clients import add_client, list_clients

    port, service, _ = basic
    secret = add_client(world["registry"], "mallory")
    service.check_once()
    rng = np.random.default_rng(0)
    queries = list(iris(5))
    while len(queries) < 60:  # synthetic queries: small signed steps from earlier ones
        base = queries[rng.integers(len(queries))]
        queries.append(base + 0.05 * rng.choice([-1.0, 1.0], 4))
    statuses = [
        request(port, "POST", "/invocations", {"inputs": [q.tolist()]}, key=secret)[0]
        for q in queries
    ]
    # The detector runs beside the requests: the playbook may block the client before the loop
    # ends. Until then every answer is 200, afterwards every one is 403.
    first = statuses.index(403) if 403 in statuses else len(statuses)
    assert first > 10 and statuses == [200] * first + [403] * (len(statuses) - first), statuses
    service.detector.drain()
    assert wait_for(lambda: service.writer.pending == 0, 30)
    result = CliRunner().invoke(cli, ["serve", "alerts", "--client", "mallory", "--json"])
    assert result.exit_code == 0, result.output
    alerts = json.loads(result.output)
    assert alerts and alerts[0]["kind"] == "extraction" and alerts[0]["detail"]["shapiro_w"] < 0.9

    def blocked() -> bool:
        return any(c.name == "mallory" and c.blocked_at for c in list_clients(world["registry"]))

    assert wait_for(blocked, 120)  # the model-extraction playbook (policy: playbook: true)
    service.check_once()
    status, _, data = request(
        port, "POST", "/invocations", {"inputs": iris(1).tolist()}, key=secret
    )
    assert status == 403 and json.loads(data)["error_code"] == "PERMISSION_DENIED"
    assert any(e["action"] == "serve.alert" for e in world["registry"].audit_events())


def test_slow_body_is_cut_off(basic: tuple[int, Any, dict[str, str]]) -> None:
    import socket

    port, _, keys = basic
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {keys['alice']}\r\nContent-Length: 400\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"inputs": [[1')  # then nothing: a slowloris body
        reply = b""
        while b"REQUEST_TIMEOUT" not in reply and len(reply) < 65536:
            chunk = sock.recv(4096)  # bounded by the socket timeout
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "REQUEST_TIMEOUT" in reply


def _serve_process(uri: str, port: int, *extra: str) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", "from assay.cli import main; main()", "serve", uri,
         "--port", str(port), "--check-every", "0.5", *extra],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _up(port: int) -> bool:
    try:
        return request(port, "GET", "/ping")[0] == 200
    except OSError:
        return False


def test_cli_server_restarts_after_kill_9_on_a_verified_version(world: dict[str, Any]) -> None:
    import signal

    from serve_fixtures import free_port

    registry = world["registry"]
    register_known_good(registry, "iris-cli", world["models"][1.0], alias="production")
    port = free_port()
    proc = _serve_process("models:/iris-cli@production", port)
    try:
        assert wait_for(lambda: _up(port) or proc.poll() is not None, 180), "server did not start"
        assert proc.poll() is None, proc.stdout.read()
        body = {"inputs": iris(2).tolist()}
        status, headers, _ = request(port, "POST", "/invocations", body, key=world["keys"]["alice"])
        assert status == 200 and headers["x-assay-version"] == "1"
        register_known_good(registry, "iris-cli", world["models"][20.0], alias="production")
        proc.send_signal(signal.SIGKILL)  # while it notices the new version (or just after)
        proc.wait(30)
        proc = _serve_process("models:/iris-cli@production", port)
        assert wait_for(lambda: _up(port) or proc.poll() is not None, 180)
        status, headers, _ = request(port, "POST", "/invocations", body, key=world["keys"]["alice"])
        assert status == 200 and headers["x-assay-version"] == "2"
    finally:
        proc.kill()
        proc.wait(30)


def test_cli_server_closes_slow_header_clients_and_keeps_answering(
    world: dict[str, Any],
) -> None:
    import socket

    from serve_fixtures import free_port
    from test_header_timeout import HEAD, closed_by_server

    registry = world["registry"]
    register_known_good(registry, "iris-slow", world["models"][1.0], alias="production")
    port = free_port()
    proc = _serve_process(
        "models:/iris-slow@production", port, "--header-timeout", "1", "--limit-concurrency", "40"
    )
    slow: list[socket.socket] = []
    try:
        assert wait_for(lambda: _up(port) or proc.poll() is not None, 180), "server did not start"
        assert proc.poll() is None, proc.stdout.read()
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for sock in slow:
            sock.sendall(HEAD[:15])  # heads never finished
        body = {"inputs": iris(2).tolist()}
        for _ in range(3):
            status, headers, _ = request(
                port, "POST", "/invocations", body, key=world["keys"]["alice"]
            )
            assert status == 200 and headers["x-assay-version"] == "1"
        assert all(closed_by_server(sock) for sock in slow)
        status, _, _ = request(port, "POST", "/invocations", body, key=world["keys"]["alice"])
        assert status == 200
    finally:
        for sock in slow:
            sock.close()
        proc.kill()
        proc.wait(30)


def test_cli_serve_refuses_to_start_on_a_refused_version(world: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from assay.cli import cli
    from assay.registry.registration import register_model
    from assay.registry.states import mark

    registry = world["registry"]
    register_model(registry, "iris-q", str(world["models"][1.0]), watermark=False, alias="staging")
    mark(registry, "iris-q", "1", "compromised", reason="test")
    result = CliRunner().invoke(cli, ["serve", "models:/iris-q@staging", "--port", "0"])
    assert result.exit_code == 3 and "compromised" in result.output


def test_cli_keys(world: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from assay.cli import cli

    runner = CliRunner()
    added = runner.invoke(cli, ["serve", "key", "add", "carol"])
    assert added.exit_code == 0 and added.output.startswith("asy_")
    again = runner.invoke(cli, ["serve", "key", "add", "carol"])
    assert again.exit_code == 1 and "exists already" in again.output
    listed = json.loads(runner.invoke(cli, ["serve", "key", "list", "--json"]).output)
    carol = next(c for c in listed if c["name"] == "carol")
    assert carol["revoked_at"] is None and "secret" not in json.dumps(carol)
    revoked = runner.invoke(cli, ["serve", "key", "revoke", "carol", "--reason", "left", "--json"])
    assert revoked.exit_code == 0 and json.loads(revoked.output)["revoked_at"]
    throttled = runner.invoke(
        cli, ["serve", "key", "throttle", "alice", "--rate", "500", "--burst", "500"]
    )
    assert throttled.exit_code == 0
    missing = runner.invoke(cli, ["serve", "key", "block", "nobody"])
    assert missing.exit_code == 1 and "no serving client" in missing.output
    from sqlalchemy import select

    from assay.registry.serving_clients import hash_secret
    from assay.store.models import ServeClient

    with world["registry"].store.session(readonly=True) as s:
        row = s.scalar(select(ServeClient).where(ServeClient.name == "carol"))
    assert row.secret_hash == hash_secret(added.output.splitlines()[0].strip())


def test_status_needs_a_key_and_names_the_version(basic: tuple[int, Any, dict[str, str]]) -> None:
    port, _, keys = basic
    assert request(port, "GET", "/assay/status")[0] == 401
    status, _, data = request(port, "GET", "/assay/status", key=keys["alice"])
    body = json.loads(data)
    assert status == 200 and body["version"] == "1" and body["model"] == "iris-basic"


def test_client_changes_need_the_responder_role(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.core.errors import RefusedError
    from assay.core.settings import Settings
    from assay.integrity.keys import generate_key
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import add_client, block_client, list_clients

    ci = generate_key("ecdsa-p256")
    pem = tmp_path / "ci.pem"
    pem.write_bytes(ci.private_pem(None))
    world["registry"].keys.trust(ci.public_key.pem, name="ci-signer", roles=["signer"])
    monkeypatch.setenv("ASSAY_KEY", str(pem))
    signer = Registry.open(Settings.from_env())
    with pytest.raises(RefusedError, match="responder"):
        add_client(signer, "sneaky")
    with pytest.raises(RefusedError, match="responder"):
        block_client(signer, "alice")
    assert "sneaky" not in {c.name for c in list_clients(world["registry"])}  # nothing committed
    assert not next(c for c in list_clients(world["registry"]) if c.name == "alice").blocked_at
