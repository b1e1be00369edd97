"""`assay serve` against a client that varies the request's form, and a serving version that is
refused later (security review findings F4, F7 and F10), on a real uvicorn server over a real
registry, on SQLite and, with ``ASSAY_TEST_PG_URL``, on PostgreSQL.

* The answer marks and the extraction detector read the rows the model receives: the same rows
  sent as ``dataframe_split``, as a dict of columns, or with an extra string column get the same
  marked answers, and every row counts towards the volume signal (also beyond the rows of one
  request the detector looks at).
* Near-duplicate rows (``-0.0`` for ``0.0``, one ulp) get the same mark decision.
* A version marked compromised or quarantined, or whose signer's key is revoked as compromised,
  stops answering (503 ``MODEL_REFUSED``, no ``X-Assay-Version``) with one
  ``serve.current-refused`` audit event and one alert; the alias moving to a good version swaps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_fixtures import register_known_good, request, running, serve_world, service_for, wait_for
from store_backends import STORE_BACKENDS

from assay.serving._answer_marks import AnswerMarker
from assay.serving._features import quantise, request_rows, row_key

POLICY = """
serving:
  require_api_key: true
  rate_per_second: 1000
  burst: 1000
  daily_quota: 1000000
  max_body_bytes: 1048576
  answer_marks: 0.5
  extraction: {min_queries: 20, threshold: 0.9, volume_per_day: 550, playbook: false}
"""

COLUMNS = ["a", "b", "c", "d"]
ONE = {"dataframe_split": {"columns": COLUMNS, "data": [[5.0, 3.0, 1.5, 0.2]]}}


class _Loaded:
    name, version, labels = "digits", "1", tuple(range(10))


def test_near_duplicate_rows_share_the_mark_decision() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(2000, 6))
    rows[:100, 0] = 0.0
    own = rng.integers(0, 10, size=2000)
    nudged = rows.copy()
    nudged[:100, 0] = -0.0  # a no-op change of the sign of zero
    nudged[100:] = np.nextafter(rows[100:], np.inf)  # one ulp up, every cell
    marker = AnswerMarker(b"k" * 32)
    out, marks = marker.apply(_Loaded(), "c", rows, own, 0.2)
    again, _ = marker.apply(_Loaded(), "c", nudged, own, 0.2)
    assert 250 < len(marks) < 550  # about 20 % of 2000
    assert (out == again).all()  # asking twice with a no-op change reveals no mark
    assert row_key(np.array([np.nan, 1.0])) == row_key(np.array([-np.nan, 1.0]))
    assert row_key(rows[0]) != row_key(rows[0] * 1.001)  # a real change is another row
    assert quantise(-0.0) == 0.0 and not np.signbit(quantise(-0.0))


def test_rows_that_are_not_numeric_are_still_marked() -> None:
    rows = [[f"word {i}", float(i)] for i in range(2000)]
    own = np.zeros(2000, dtype=int)
    marker = AnswerMarker(b"k" * 32)
    out, marks = marker.apply(_Loaded(), "c", rows, own, 0.2)
    again, _ = marker.apply(_Loaded(), "c", [list(r) for r in rows], own, 0.2)
    assert 250 < len(marks) < 550 and (out == again).all()
    assert json.loads(marks[0]["input"])[0].startswith("word ")


def test_request_rows_follow_what_the_model_receives() -> None:
    import pandas as pd
    from mlflow.types import ColSpec, Schema

    schema = Schema([ColSpec("double", c) for c in COLUMNS])
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    split = request_rows(pd.DataFrame(x, columns=COLUMNS), schema, 3)
    as_dict = request_rows({c: x[:, COLUMNS.index(c)] for c in reversed(COLUMNS)}, schema, 3)
    assert as_dict.numeric is not None  # a dict of columns is read in the schema's order
    extra = pd.DataFrame(x, columns=COLUMNS).assign(junk="x")
    junk = request_rows(extra, schema, 3)  # the extra column the model never sees is dropped
    inf = x.copy()
    inf[1, 2] = np.inf
    masked = request_rows(pd.DataFrame(inf, columns=COLUMNS), schema, 3)
    assert (split.numeric == x).all() and (junk.numeric == x).all()
    assert (as_dict.numeric == x).all()  # the schema's column order, not the request's
    assert masked.numeric[1, 2] == 0.0 and np.isinf(masked.marked[1, 2])  # masked, not dropped
    text = request_rows(pd.DataFrame({"t": ["x", "y"], "n": [1.0, 2.0]}), None, 2)
    assert text.numeric is None and text.count == 2 and len(text.marked) == 2
    assert row_key(text.marked[0]) != row_key(text.marked[1])  # still keyed, row by row
    ragged = request_rows({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, None, 3)
    assert ragged.marked is None and ragged.count == 3  # not split: marks refuse it (400)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("serve-sec")
    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x, columns=COLUMNS)
    models = {}
    for c in (1.0, 20.0):
        folder = root / f"m{c}"
        model = LogisticRegression(C=c, max_iter=500).fit(frame, y)
        mlflow.sklearn.save_model(
            model,
            str(folder),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=infer_signature(frame, model.predict(frame)),
        )
        models[c] = folder
    with serve_world(root, request.param, POLICY, models, ("alice", "bob", "carol")) as world:
        yield world


def _ask(port: int, key: str, body: dict[str, Any]) -> np.ndarray:
    status, headers, data = request(port, "POST", "/invocations", body, key=key)
    assert status == 200, data
    assert headers["x-assay-version"]
    return np.array(json.loads(data)["predictions"])


@pytest.mark.slow
def test_marks_and_detector_are_not_bypassed_by_the_request_form(world: dict[str, Any]) -> None:
    import pandas as pd

    from assay.serving.alerts import list_alerts

    registry = world["registry"]
    register_known_good(registry, "iris-form", world["models"][1.0], alias="production")
    service = service_for(world, "models:/iris-form@production")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)) * 2 + 4
    with running(service) as port:
        own = service.current.model.predict(pd.DataFrame(x, columns=COLUMNS))
        key = world["keys"]["alice"]
        split = _ask(port, key, {"dataframe_split": {"columns": COLUMNS, "data": x.tolist()}})
        as_dict = _ask(port, key, {"inputs": {c: x[:, i].tolist() for i, c in enumerate(COLUMNS)}})
        junk = _ask(
            port,
            key,
            {
                "dataframe_split": {
                    "columns": [*COLUMNS, "junk"],
                    "data": [[*row, "x"] for row in x.tolist()],
                }
            },
        )
        marked = split != own
        assert 60 < int(marked.sum()) < 240  # about half of the rows whose answer can change
        assert (as_dict == split).all() and (junk == split).all()  # the same marks, every form
        # volume: one dict request of 600 rows (over the 512 the detector looks at) from bob
        big = rng.normal(size=(600, 4))
        _ask(
            port,
            world["keys"]["bob"],
            {"inputs": {c: big[:, i].tolist() for i, c in enumerate(COLUMNS)}},
        )
        service.detector.drain()
        assert wait_for(lambda: service.writer.pending == 0, 30)
        assert len(service.detector.histories["alice"].queries) > 0  # the dict rows were seen
        volume = {c: n for (c, _), n in service.detector.volume.items()}
        assert volume == {"alice": 900, "bob": 600}  # 3 x 300 rows, every form; every row of 600
    bob = [a for a in list_alerts(registry, client="bob") if a["kind"] == "volume"]
    assert len(bob) == 1 and bob[0]["detail"]["rows_today"] == 600
    alice = [a for a in list_alerts(registry, client="alice") if a["kind"] == "volume"]
    assert len(alice) == 1 and alice[0]["detail"]["rows_today"] == 600  # the dict request crossed


def _refused_events(registry: Any, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in registry.audit_events()
        if e["action"] == "serve.current-refused" and name in e["subject"]
    ]


def _withheld(port: int, key: str) -> bool:
    status, headers, data = request(port, "POST", "/invocations", ONE, key=key)
    if status != 503:
        assert status == 200 and headers["x-assay-version"], data
        return False
    assert "x-assay-version" not in headers
    body = json.loads(data)
    assert set(body) == {"error_code", "message"} and body["error_code"] == "MODEL_REFUSED"
    return True


@pytest.mark.slow
@pytest.mark.parametrize("state", ["compromised", "quarantined"])
def test_a_serving_version_marked_bad_stops_answering(world: dict[str, Any], state: str) -> None:
    from assay.registry.states import mark
    from assay.serving.alerts import list_alerts

    registry = world["registry"]
    name = f"iris-{state}"
    register_known_good(registry, name, world["models"][1.0], alias="production")
    service = service_for(world, f"models:/{name}@production")
    key = world["keys"]["carol"]
    with running(service) as port:
        assert not _withheld(port, key)
        mark(registry, name, "1", state, reason="backdoor found")
        assert wait_for(lambda: _withheld(port, key), 60)
        status, headers, _ = request(port, "GET", "/ping")
        assert status == 503 and "x-assay-version" not in headers
        for _ in range(3):
            service.check_once()  # more checks: still one event
        assert _withheld(port, key)
        status, _, data = request(port, "GET", "/assay/status", key=key)
        assert json.loads(data)["version"] is None
        assert json.loads(data)["withheld"]["code"] == state
        # the alias moves to a good version: it swaps and answers again
        v2 = register_known_good(registry, name, world["models"][20.0], alias="production")
        assert wait_for(lambda: service.current.version == v2, 60)
        status, headers, _ = request(port, "POST", "/invocations", ONE, key=key)
        assert status == 200 and headers["x-assay-version"] == v2
        assert wait_for(lambda: service.writer.pending == 0, 30)
    events = _refused_events(registry, name)
    assert len(events) == 1 and events[0]["payload"]["code"] == state
    alerts = [a for a in list_alerts(registry) if a["kind"] == "model-refused"]
    assert [a["detail"]["code"] for a in alerts if a["model"] == name] == [state]


@pytest.mark.slow
def test_a_serving_version_whose_signer_is_revoked_stops_answering(
    world: dict[str, Any], tmp_path: Path
) -> None:
    from datetime import timedelta

    from assay.core.settings import Settings
    from assay.integrity.keys import generate_key
    from assay.registry.facade import Registry
    from assay.registry.registration import register_model
    from assay.registry.states import mark, promote
    from assay.store.models import utcnow

    registry = world["registry"]
    name = "iris-revoked"
    ci = generate_key("ecdsa-p256")
    pem = tmp_path / "ci.pem"
    pem.write_bytes(ci.private_pem(None))
    registry.keys.trust(ci.public_key.pem, name="ci-serve", roles=["signer"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASSAY_KEY", str(pem))
        ci_registry = Registry.open(Settings.from_env())
        version = register_model(
            ci_registry, name, str(world["models"][1.0]), watermark=False
        ).version
        ci_registry.store.dispose()
    mark(registry, name, version, "known-good", reason="evaluated")
    promote(registry, name, version, alias="production")
    service = service_for(world, f"models:/{name}@production")
    key = world["keys"]["carol"]
    with running(service) as port:
        assert not _withheld(port, key)
        registry.keys.revoke(
            ci.key_id, reason="leaked", compromised_since=utcnow() - timedelta(hours=1)
        )
        assert wait_for(lambda: _withheld(port, key), 60)
        assert wait_for(lambda: service.writer.pending == 0, 30)
    events = _refused_events(registry, name)
    assert len(events) == 1 and events[0]["payload"]["code"] == "tampered"
    assert "compromised since" in events[0]["payload"]["reason"]


@pytest.mark.slow
def test_store_unreachable_during_a_recheck_keeps_serving(world: dict[str, Any]) -> None:
    from assay.store.store import Store

    registry = world["registry"]
    register_known_good(registry, "iris-away", world["models"][1.0], alias="production")
    service = service_for(world, "models:/iris-away@production")
    with running(service) as port:
        with service._swap_lock:
            good = service.registry.store
            service.registry.store = Store(f"sqlite:///{world['root'] / 'gone' / 'x.db'}")
        try:
            errors = service.stats.check_errors
            assert wait_for(lambda: service.stats.check_errors > errors, 30)
            status, headers, _ = request(
                port,
                "POST",
                "/invocations",
                ONE,
                key=world["keys"]["carol"],
            )
            assert status == 200 and headers["x-assay-version"] == "1"
            assert service.withheld is None
        finally:
            service.registry.store = good
    assert _refused_events(registry, "iris-away") == []
