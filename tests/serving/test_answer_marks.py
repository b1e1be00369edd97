"""DAWN-style answer marks and the behavioural trace (`assay trace --behaviour`).

Unit tests of the keyed choice and the binomial tail, then end to end: a digits classifier is
served with marks on, a client queries it, a surrogate trained on the API's answers (exported to
ONNX) is named at p <= 1e-9, and a model trained independently on the true labels is not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_fixtures import CLEARED, endpoint, register_known_good, request, running, wait_for

from assay.core.errors import UnsafeInputError
from assay.serving._answer_marks import AnswerMarker
from assay.serving.behaviour import log10_binom_tail, open_suspect


class _Loaded:
    name, version, labels = "digits", "1", tuple(range(10))


def test_marks_are_keyed_repeatable_and_change_the_label() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(4000, 8))
    own = rng.integers(0, 10, size=4000)
    marker = AnswerMarker(b"k" * 32)
    out, marks = marker.apply(_Loaded(), "c", rows, own, 0.05)
    again, marks2 = marker.apply(_Loaded(), "c", rows, own, 0.05)
    assert marks == marks2 and (out == again).all()
    changed = np.nonzero(out != own)[0]
    assert len(changed) == len(marks) and 100 < len(marks) < 300  # about 5 % of 4000
    other, _ = AnswerMarker(b"j" * 32).apply(_Loaded(), "c", rows, own, 0.05)
    assert set(np.nonzero(other != own)[0]) != set(changed)  # another key marks other inputs
    assert marker.apply(_Loaded(), "c", rows, own, 0.0)[1] == []
    floats, none = marker.apply(_Loaded(), "c", rows, own.astype(float), 0.05)
    assert none == [] and floats is not None  # regression answers are never changed


def test_binomial_tail() -> None:
    from scipy.stats import binom

    assert log10_binom_tail(0, 10, 0.5) == 0.0
    assert math.isclose(log10_binom_tail(7, 10, 0.3), math.log10(binom.sf(6, 10, 0.3)))
    assert log10_binom_tail(50, 50, 1 / 9) < -47


def test_a_looping_onnx_suspect_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    """A valid ONNX ``Loop`` of 10^12 turns (standard ops only) must not hang the trace: the
    replay's deadline sets onnxruntime's ``RunOptions.terminate`` (the review's F11)."""
    import time

    import numpy as np
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper as h

    from assay.core.errors import AssayError
    from assay.serving.behaviour import OnnxSuspect

    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            h.make_node("Identity", ["acc_in"], ["acc_out"]),
        ],
        "body",
        [
            h.make_tensor_value_info("i", TP.INT64, []),
            h.make_tensor_value_info("cond_in", TP.BOOL, []),
            h.make_tensor_value_info("acc_in", TP.FLOAT, None),
        ],
        [
            h.make_tensor_value_info("cond_out", TP.BOOL, []),
            h.make_tensor_value_info("acc_out", TP.FLOAT, None),
        ],
    )
    graph = h.make_graph(
        [
            h.make_node("Constant", [], ["M"], value=h.make_tensor("m", TP.INT64, [], [10**12])),
            h.make_node("Constant", [], ["c"], value=h.make_tensor("c0", TP.BOOL, [], [True])),
            h.make_node("Loop", ["M", "c", "X"], ["Y"], body=body),
        ],
        "g",
        [h.make_tensor_value_info("X", TP.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("Y", TP.FLOAT, ["N", 4])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "loop.onnx"
    onnx.save(model, str(path))
    started = time.monotonic()
    with pytest.raises(AssayError, match="did not answer the marked inputs within 1 s"):
        OnnxSuspect(path, deadline_s=1.0).outputs(np.zeros((3, 4), dtype=np.float32))
    assert time.monotonic() - started < 60  # a bound on a hang, not a timing claim


def test_pyfunc_suspect_needs_trust(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(UnsafeInputError, match="trust-suspect-code"):
        open_suspect(tmp_path)


POLICY = """
serving:
  require_api_key: true
  rate_per_second: 1000
  burst: 1000
  daily_quota: 1000000
  max_body_bytes: 1048576
  answer_marks: 0.05
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import add_client
    from assay.serving._follower import start_service
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    root = tmp_path_factory.mktemp("marks")
    x, y = load_digits(return_X_y=True)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(root / "home"))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        set_policy(registry, parse_policy_text(POLICY))
        folder = root / "digits"
        mlflow.sklearn.save_model(
            LogisticRegression(max_iter=2000).fit(x[:900], y[:900]),
            str(folder),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        register_known_good(registry, "digits", folder, alias="production")
        secret = add_client(registry, "thief")
        service = start_service(
            registry, "models:/digits@production", interval=1.0, workdir=root / "w"
        )
        with running(service) as port:
            queries = x[900:1700]
            answers = []
            for start in range(0, len(queries), 100):
                status, _, body = request(
                    port,
                    "POST",
                    "/invocations",
                    {"inputs": queries[start : start + 100].tolist()},
                    key=secret,
                )
                assert status == 200
                answers.extend(json.loads(body)["predictions"])
            again = request(
                port, "POST", "/invocations", {"inputs": queries[:100].tolist()}, key=secret
            )
            assert json.loads(again[2])["predictions"] == answers[:100]  # repeats: same answers
            assert wait_for(lambda: service.writer.pending == 0, 30)
            own = service.current.model.predict(queries)
        yield {
            "registry": registry,
            "root": root,
            "queries": queries,
            "answers": np.array(answers),
            "own": own,
            "x": x,
            "y": y,
        }


def _train_onnx(x: np.ndarray, y: np.ndarray, path: Path, seed: int) -> Path:
    import torch
    from wm_torch import export_onnx

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    for _ in range(600):  # full batch until the training answers are fitted
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    scaled = torch.nn.Sequential()
    scaled.add_module("scale", _Scale())
    scaled.add_module("net", model)
    return export_onnx(scaled.eval(), path)


class _Scale(__import__("torch").nn.Module):
    def forward(self, x):  # the surrogate sees the raw 0-16 pixels the API took
        return x / 16.0


@pytest.mark.slow
def test_marked_answers_are_recorded(served: dict[str, Any]) -> None:
    from sqlalchemy import select

    from assay.store.models import ServeMark

    changed = np.nonzero(served["answers"] != served["own"])[0]
    with served["registry"].store.session(readonly=True) as s:
        marks = list(s.scalars(select(ServeMark)))
    assert 15 <= len(changed) <= 80 and len(marks) >= len(changed)  # about 5 % of 800 (+ repeats)
    assert {json.dumps(json.loads(m.input)) for m in marks} >= {
        json.dumps([float(v) for v in served["queries"][i]]) for i in changed
    }


@pytest.mark.slow
def test_behavioural_trace_names_the_surrogate_not_an_independent_model(
    served: dict[str, Any],
) -> None:
    from click.testing import CliRunner

    from assay.cli import cli

    root = served["root"]
    surrogate = _train_onnx(served["queries"], served["answers"], root / "surrogate.onnx", 0)
    x, y = served["x"], served["y"]
    independent = _train_onnx(x[:900], y[:900], root / "independent.onnx", 1)
    out = {}
    for name, path in (("surrogate", surrogate), ("independent", independent)):
        result = CliRunner().invoke(cli, ["trace", str(path), "--behaviour", "--json"])
        assert result.exit_code == 0, result.output
        out[name] = json.loads(result.output)["candidates"][0]
    assert out["surrogate"]["verdict"] == "match" and out["surrogate"]["log10_p_corrected"] <= -9
    assert out["surrogate"]["model"] == "digits" and out["surrogate"]["version"] == "1"
    assert out["independent"]["verdict"] == "no-match"


@pytest.mark.slow
def test_endpoint_trace_names_a_served_surrogate_not_an_independent_model(
    served: dict[str, Any],
) -> None:
    """Black box: the same candidates and p-value as --behaviour, through a scoring API."""
    from click.testing import CliRunner

    from assay.cli import cli
    from assay.serving.behaviour import open_suspect

    root = served["root"]
    surrogate = open_suspect(
        _train_onnx(served["queries"], served["answers"], root / "surrogate-e.onnx", 0)
    )
    x, y = served["x"], served["y"]
    independent = open_suspect(_train_onnx(x[:900], y[:900], root / "independent-e.onnx", 1))
    out = {}
    for name, model in (("surrogate", surrogate), ("independent", independent)):

        def answer(rows: Any, model: Any = model) -> tuple[int, bytes, dict[str, str]]:
            return 200, json.dumps({"predictions": model.predict(rows)}).encode(), {}

        with endpoint(answer, token="copy-key") as url:
            args = ["trace", "--endpoint", url, "--api-key", "copy-key", "--json"]
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
            out[name] = json.loads(result.output)["candidates"][0]
            refused = CliRunner().invoke(cli, ["trace", "--endpoint", url])
            assert refused.exit_code == 1 and "HTTP 401" in refused.output
    assert out["surrogate"]["verdict"] == "match" and out["surrogate"]["log10_p_corrected"] <= -9
    assert out["surrogate"]["model"] == "digits" and out["surrogate"]["version"] == "1"
    assert out["independent"]["verdict"] == "no-match"
    assert out["surrogate"]["marks"] == out["independent"]["marks"] > 0
    capped = CliRunner().invoke(
        cli, ["trace", "--endpoint", "http://127.0.0.1:9", "--max-queries", "0"]
    )
    assert capped.exit_code == 2


def test_trace_takes_a_suspect_or_an_endpoint(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from assay.cli import cli

    (tmp_path / "m.onnx").write_bytes(b"x")
    both = ["trace", str(tmp_path / "m.onnx"), "--endpoint", "http://127.0.0.1:9"]
    for args in (["trace"], both, ["trace", str(tmp_path / "m.onnx"), "--api-key", "k"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
