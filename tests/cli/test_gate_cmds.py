"""`assay gate run/show/list` and `assay mark --force` through click's CliRunner."""

from __future__ import annotations

import json

import gate_fixtures as gf
import registry_fixtures as fx
from click.testing import CliRunner

from assay.cli import cli

world = fx.home_fixture()


def _set_policy(registry, text: str) -> None:
    from assay.trust.policy import parse_policy_text
    from assay.trust.policy_service import set_policy

    set_policy(registry, parse_policy_text(text))


def test_gate_run_json_show_and_mark(world, tmp_path):
    registry = world[1]
    path, frame = gf.table(tmp_path)
    ds = fx.unique("tab")
    data = gf.register_table(registry, ds, path)
    name = fx.unique("m")
    version = gf.register(registry, name, gf.sklearn_model(tmp_path, frame), data)
    uri = f"models:/{name}/{version}"
    runner = CliRunner()

    result = runner.invoke(cli, ["gate", "list", "--json"])
    assert result.exit_code == 0
    assert {"pickle-scan", "robustness", "privacy"} <= set(json.loads(result.output)["gates"])

    _set_policy(registry, f"gates:\n  {name}: {{label-issues: {{max_issue_rate: 0.0}}}}\n")
    result = runner.invoke(cli, ["mark", name, version, "known-good", "--reason", "x"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "label-issues (no result" in result.output

    result = runner.invoke(cli, ["gate", "run", uri, "--json"])
    doc = json.loads(result.stdout)
    assert doc["data"] == f"dataset:{data}" and doc["results"][0]["gate"] == "label-issues"
    assert doc["results"][0]["status"] == "failed"  # a noisy table and a ceiling of 0 %
    assert result.exit_code == 1
    assert "1 of 1 gate(s) did not pass: label-issues failed" in result.stderr

    result = runner.invoke(
        cli, ["gate", "run", uri, "--gate", "pickle-scan", "--gate", "robustness"]
    )
    assert result.exit_code == 0, result.output
    assert "passed pickle-scan" in result.output

    result = runner.invoke(cli, ["gate", "show", uri, "--json"])
    shown = json.loads(result.output)
    assert {r["gate"] for r in shown["results"]} == {"label-issues", "pickle-scan", "robustness"}
    assert shown["missing_for_known_good"] == ["label-issues (last result failed)"]

    result = runner.invoke(cli, ["mark", name, version, "known-good", "--reason", "ok", "--force"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["status", name, "--json"])
    gates = json.loads(result.output)["models"][0]["versions"][0]["gates"]
    assert gates == {"label-issues": "failed", "pickle-scan": "passed", "robustness": "passed"}
    _set_policy(registry, "enforcement: enforce\n")


def test_gate_run_bad_input_is_one_line(world, tmp_path):
    registry = world[1]
    name = fx.unique("plain")
    version = fx.model(registry, name, tmp_path)
    result = CliRunner().invoke(cli, ["gate", "run", f"models:/{name}/{version}", "--gate", "nope"])
    assert result.exit_code == 1
    assert (
        result.output.startswith("error: no gate named 'nope'") and result.output.count("\n") == 1
    )
    result = CliRunner().invoke(
        cli, ["gate", "run", f"models:/{name}/{version}", "--gate", "robustness"]
    )
    assert result.exit_code == 1
    assert "needs a dataset" in result.output
