"""The README's "three jobs" commands, run as written on a real scikit-learn model.

A scikit-learn model (``mlflow.sklearn.save_model``) holds no weight tensors: registration signs
it without a watermark and says so, without ``--no-watermark``. The commands are read from the
README's code block (and the register line is also copied here verbatim), so the README cannot
drift from what works. Only placeholders are filled in: ``INC-...`` becomes the incident's id,
and the interactive rollback gets ``--yes`` (CliRunner is not a terminal).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from assay.cli import cli

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
#: Copied verbatim from the README; the test checks that the README still says exactly this.
README_REGISTER = "assay register churn ./model --dataset customers@1 --alias staging"


def readme_commands() -> list[list[str]]:
    """The ``assay ...`` command lines of the code block under "## The three jobs"."""
    text = README.read_text()
    section = text.split("## The three jobs", 1)[1]
    block = section.split("```", 2)[1]
    commands = []
    for line in block.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] == "assay":
                commands.append(words[1:])
    return commands


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def save_sklearn(path: Path, column: int) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("sklearn")
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(column)
    x = rng.random((60, 3))
    y = (x[:, column] > 0.5).astype(int)
    mlflow.sklearn.save_model(LogisticRegression().fit(x, y), str(path))


def small_onnx(path: Path) -> None:
    """A one-layer ONNX model (a suspect copy nobody registered) for `assay trace`."""
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 4)).astype("float32"), name="w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "suspect",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[weight],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph).SerializeToString())


def test_readme_register_line_is_the_one_tested() -> None:
    assert README_REGISTER in README.read_text()
    assert shlex.split(README_REGISTER)[1:] in readme_commands()


def test_readme_three_jobs_on_a_sklearn_model(
    assay_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_sklearn(tmp_path / "model", 0)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("age,churned\n31,0\n58,1\n")
    # What the README's verify/trace lines point at.
    save_sklearn(tmp_path / "some" / "model", 1)
    small_onnx(tmp_path / "found" / "model.onnx")

    commands = readme_commands()
    jobs = iter(commands)
    seen = []
    for args in jobs:
        if args[0] == "rollback":
            break
        if args == ["verify", "./some/model", "--signature", "model.sig"]:
            assert run("sign", "./some/model", "--signature", "model.sig").exit_code == 0
        result = run(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        seen.append((args, result.stdout))
        if args == shlex.split(README_REGISTER)[1:]:
            assert "registered models:/churn/1" in result.stdout
            assert "watermark: none (no weight tensors)" in result.stdout
            assert "alias staging -> 1" in result.stdout
    assert [a[0] for a, _ in seen][:6] == [
        "init",
        "dataset",
        "register",
        "mark",
        "label",
        "promote",
    ]

    # The same registration in --json names why there is no watermark.
    result = run("register", "churn", "./model", "--json")
    doc = json.loads(result.stdout)
    assert (doc["reused"], doc["watermark"]) == (True, None)
    assert doc["watermark_note"] == "none (no weight tensors)"

    # Job 3 needs something to roll back from: churn/2, trained on customers@2, serving.
    (tmp_path / "data" / "train.csv").write_text("age,churned\n31,1\n58,0\n")
    save_sklearn(tmp_path / "model2", 2)
    for args in (
        ["dataset", "register", "customers", "./data"],
        ["register", "churn", "./model2", "--dataset", "customers@2"],
        ["mark", "churn", "2", "known-good", "--reason", "passed evaluation"],
        ["promote", "churn", "2", "--alias", "production"],
    ):
        assert run(*args).exit_code == 0, args

    rollback = next(a for a in commands if a[0] == "rollback")
    result = run(*rollback, "--yes")  # the README's is interactive: plan, confirm, move
    assert result.exit_code == 0, result.stderr
    assert "moved 1 (was 2)" in result.stdout
    incident_id = None
    for args in jobs:
        args = [incident_id if a == "INC-..." else a for a in args]
        result = run(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        found = re.search(r"incident (inc-[0-9a-z-]+)", result.stdout)
        if args[:2] == ["incident", "run"] and found:
            incident_id = found.group(1)
    assert incident_id is not None
    assert (tmp_path / "report.html").is_file()
