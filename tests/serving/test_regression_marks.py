"""Perturbation marks end to end: a regression model served by a real uvicorn server on
127.0.0.1 answers a keyed fraction of queries within the policy's bound and records them; `assay
trace --endpoint` names a copy that answers what the client was taught (a 1-nearest-neighbour
copy of the API), and an independently fitted model is `no-match`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from serve_fixtures import CLEARED, endpoint, register_known_good, request, running, wait_for

pytestmark = pytest.mark.slow

POLICY = """
serving:
  rate_per_second: 1000
  burst: 1000
  daily_quota: 1000000
  max_body_bytes: 1048576
  answer_marks: 0.05
  answer_mark_bound: 0.05
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import mlflow.sklearn
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import add_client
    from assay.serving._follower import start_service
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    root = tmp_path_factory.mktemp("regression-marks")
    x, y = load_diabetes(return_X_y=True)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(root / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        set_policy(registry, parse_policy_text(POLICY))
        folder = root / "diabetes"
        model = Ridge(alpha=0.1).fit(x[:300], y[:300])
        mlflow.sklearn.save_model(
            model, str(folder), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
        )
        register_known_good(registry, "diabetes", folder, alias="production")
        secret = add_client(registry, "thief")
        service = start_service(
            registry, "models:/diabetes@production", interval=1.0, workdir=root / "w"
        )
        queries = np.random.default_rng(0).normal(0, 0.05, size=(1500, x.shape[1]))
        with running(service) as port:
            answers = []
            for start in range(0, len(queries), 250):
                body = {"inputs": queries[start : start + 250].tolist()}
                status, _, data = request(port, "POST", "/invocations", body, key=secret)
                assert status == 200
                answers.extend(json.loads(data)["predictions"])
            assert wait_for(lambda: service.writer.pending == 0, 30)
        yield {
            "registry": registry,
            "queries": queries,
            "answers": np.array(answers, dtype=float),
            "own": model.predict(queries),
            "x": x,
            "y": y,
        }


def test_marks_are_within_the_bound_and_recorded(served: dict[str, Any]) -> None:
    from sqlalchemy import select

    from assay.store.models import ServeMark

    answers, own = served["answers"], served["own"]
    changed = np.nonzero(~np.isclose(answers, own, rtol=1e-9, atol=0))[0]
    assert 30 <= len(changed) <= 130  # about 5 % of 1500
    assert np.allclose(np.abs(answers[changed] - own[changed]), 0.05 * np.abs(own[changed]))
    with served["registry"].store.session(readonly=True) as s:
        marks = list(s.scalars(select(ServeMark)))
    assert len(marks) == len(changed)
    assert {json.dumps(json.loads(m.answer)) for m in marks} == {
        json.dumps(float(answers[i])) for i in changed
    }


def _nearest(queries: np.ndarray, answers: np.ndarray):
    def answer(rows: Any) -> tuple[int, bytes, dict[str, str]]:
        rows = np.asarray(rows)
        idx = ((rows[:, None, :] - queries[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        return 200, json.dumps({"predictions": answers[idx].tolist()}).encode(), {}

    return answer


def test_endpoint_trace_names_a_copy_not_an_independent_model(served: dict[str, Any]) -> None:
    from click.testing import CliRunner
    from sklearn.linear_model import Ridge

    from assay.cli import cli

    x, y = served["x"], served["y"]
    independent = Ridge(alpha=1.0).fit(x[150:], y[150:])

    def other(rows: Any) -> tuple[int, bytes, dict[str, str]]:
        body = {"predictions": independent.predict(np.asarray(rows)).tolist()}
        return 200, json.dumps(body).encode(), {}

    out = {}
    for name, answer in (
        ("copy", _nearest(served["queries"], served["answers"])),
        ("other", other),
    ):
        with endpoint(answer) as url:
            result = CliRunner().invoke(cli, ["trace", "--endpoint", url, "--json"])
            assert result.exit_code == 0, result.output
            out[name] = json.loads(result.output)["candidates"][0]
    assert out["copy"]["test"] == "direction" and out["copy"]["verdict"] == "match"
    assert out["copy"]["agreed"] == out["copy"]["trials"] >= 30
    assert out["other"]["verdict"] == "no-match" and out["other"]["trials"] >= 30
