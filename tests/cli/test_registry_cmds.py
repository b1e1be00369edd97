"""`assay mark | promote | freeze | unfreeze | status | lineage` as a user runs them: output,
one-line errors and exit codes (0 ok, 1 error, 2 usage, 3 integrity)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import registry_fixtures as fx  # noqa: E402
from click.testing import CliRunner

from assay.cli import cli
from assay.cli.registry_cmds import COMMANDS

world = fx.home_fixture()
pytestmark = pytest.mark.slow

for _command in COMMANDS:  # until cli/__init__.py registers them
    if _command.name not in cli.commands:
        cli.add_command(_command)


@pytest.fixture
def reg(world: tuple[Path, Any]) -> Any:
    return world[1]


def assay(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_command_names() -> None:
    assert [c.name for c in COMMANDS] == [
        "mark",
        "label",
        "promote",
        "freeze",
        "unfreeze",
        "status",
        "lineage",
    ]


def test_mark_promote_freeze_flow(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("cli")
    fx.model(reg, name, tmp_path)
    fx.model(reg, name, tmp_path)

    code, _, err = assay("promote", name, "1")
    assert code == 1 and "not known-good" in one_error_line(err)

    code, out, _ = assay("mark", name, "1", "known-good", "--reason", "CI passed", "--json")
    assert code == 0 and json.loads(out)["state"] == "known-good"

    code, out, _ = assay("promote", name, "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["moved"] and doc["to_version"] == "1" and doc["verified"]

    code, out, _ = assay("promote", name, "1")
    assert code == 0 and "already at 1" in out

    code, _, err = assay("promote", name, "2", "--force")
    assert code == 2 and "--force needs --reason" in err

    code, out, _ = assay("freeze", name, "--reason", "incident 12")
    assert code == 0 and "frozen (incident 12)" in out
    code, _, err = assay("promote", name, "2", "--force", "--reason", "now")
    line = one_error_line(err)
    assert code == 1 and "frozen (incident 12)" in line and "assay unfreeze" in line

    code, out, _ = assay("unfreeze", name, "--reason", "over")
    assert code == 0 and "unfrozen" in out
    code, out, _ = assay("promote", name, "2", "--force", "--reason", "hotfix")
    assert code == 0 and "forced" in out and "moved 2 (was 1)" in out


def test_unknown_things_are_one_line_errors(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("known")
    fx.model(reg, name, tmp_path)
    cases = [
        (("promote", fx.unique("nosuch"), "1"), "no model named"),
        (("promote", name, "9"), "has no version 9"),
        (("mark", name, "9", "quarantined", "--reason", "r"), "has no version 9"),
        (("lineage", f"models:/{name}@nosuch"), "no alias 'nosuch'"),
        (("lineage", "dataset:nosuch@1"), "no dataset named"),
        (("status", fx.unique("nowhere")), "no model named"),
        (("freeze", fx.unique("nowhere"), "--reason", "r"), "no model named"),
    ]
    for args, message in cases:
        code, _, err = assay(*args)
        assert code == 1, (args, err)
        assert message in one_error_line(err), (args, err)
    code, _, err = assay("mark", name, "1", "great", "--reason", "r")
    assert code == 2
    code, _, err = assay("mark", name, "1", "quarantined")
    assert code == 2 and "--reason" in err


def test_status_shows_drift_and_deep_exits_3(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("st")
    fx.model(reg, name, tmp_path, alias="production")
    code, out, _ = assay("status", name)
    assert code == 0 and "no drift" in out and "production" in out

    reg.backend.set_alias(name, "production", "1")  # no-op: same version
    fx.model(reg, name, tmp_path)
    reg.backend.set_alias(name, "production", "2")  # moved behind assay's back
    code, out, _ = assay("status", name)
    assert code == 0 and "alias-moved-outside-assay" in out and "1 drift finding(s)" in out

    code, out, _ = assay("status", name, "--json")
    doc = json.loads(out)
    assert code == 0 and not doc["ok"]
    assert [d["kind"] for d in doc["drift"]] == ["alias-moved-outside-assay"]

    fx.tamper(reg, name, "1")
    code, out, err = assay("status", name, "--deep", "--json")
    assert code == 3 and "no longer verify" in one_error_line(err)
    assert "bytes-changed" in [d["kind"] for d in json.loads(out)["drift"]]


def test_status_fail_on_drift_exits_3_only_with_findings(reg: Any, tmp_path: Path) -> None:
    name = fx.unique("ci")
    fx.model(reg, name, tmp_path, alias="production")
    code, out, err = assay("status", name, "--fail-on-drift")
    assert (code, err) == (0, "") and "no drift" in out
    code, out, _ = assay("status", name, "--fail-on-drift", "--json")
    assert code == 0 and json.loads(out)["ok"] is True

    fx.model(reg, name, tmp_path)
    reg.backend.set_alias(name, "production", "2")  # moved behind assay's back
    code, out, err = assay("status", name, "--fail-on-drift")
    assert code == 3 and "alias-moved-outside-assay" in out
    line = one_error_line(err)
    assert f"1 drift finding(s) (alias-moved-outside-assay): {name}/2" in line
    code, out, err = assay("status", name, "--fail-on-drift", "--json")
    assert code == 3 and "--fail-on-drift" in one_error_line(err)
    assert [d["kind"] for d in json.loads(out)["drift"]] == ["alias-moved-outside-assay"]
    # Without the flag, drift is reported and the exit stays 0.
    assert assay("status", name)[0] == 0


def test_first_registration_interrupted_is_pending_not_unmanaged(
    reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.registry import registration

    name = fx.unique("half")
    with monkeypatch.context() as mp:
        mp.setattr(registration, "_record", lambda *a, **k: (_ for _ in ()).throw(OSError("cut")))
        with pytest.raises(OSError):
            fx.model(reg, name, tmp_path)
    code, out, _ = assay("status", name, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["unmanaged"] == []
    assert [(d["kind"], d["version"]) for d in doc["drift"]] == [("pending-registration", "1")]
    assert [(m["name"], m["pending"], m["versions"]) for m in doc["models"]] == [(name, ["1"], [])]
    code, out, _ = assay("status", name)
    assert code == 0 and "pending-registration" in out and "unmanaged" not in out
    code, out, _ = assay("status", "--json")
    doc = json.loads(out)
    assert name not in doc["unmanaged"]
    assert ("pending-registration", "1") in [
        (d["kind"], d["version"]) for d in doc["drift"] if d["model"] == name
    ]
    code, _, err = assay("status", name, "--fail-on-drift")
    assert code == 3 and "pending-registration" in one_error_line(err)


def test_lineage_command(reg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    data, base, tuned = fx.unique("data"), fx.unique("base"), fx.unique("tuned")
    fx.dataset(reg, data, tmp_path)
    fx.model(reg, base, tmp_path, datasets=(f"{data}@1",), alias="production")
    fx.model(reg, tuned, tmp_path, parents=(f"{base}/1",))
    code, out, _ = assay("lineage", f"dataset:{data}@1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["versions"] == [f"{base}/1", f"{tuned}/1"]
    assert doc["serving"] == [{"model": base, "alias": "production", "version": "1"}]
    code, out, _ = assay("lineage", f"models:/{tuned}/1")
    assert code == 0 and f"{base}/1" in out and f"dataset {data}@1" in out


def test_status_help_lists_every_drift_kind() -> None:
    from assay.core.drift import DRIFT_KINDS, DriftKind

    code, out, _ = assay("status", "--help")
    listed = out.split("Drift findings:", 1)[1].split("Exit codes", 1)[0]
    assert code == 0
    assert [line.split()[0] for line in listed.strip().splitlines()] == list(DRIFT_KINDS)
    assert tuple(k.value for k in DriftKind) == DRIFT_KINDS
    assert "--fail-on-drift" in out


def test_label_needs_add_or_remove() -> None:
    from click.testing import CliRunner

    from assay.cli import cli

    out = CliRunner().invoke(cli, ["label", "x", "1"])
    assert out.exit_code == 2
    assert "give --add LABEL and/or --remove LABEL" in out.output


def test_ci_log_tables_never_cut_states_versions_or_aliases(reg: Any, tmp_path: Path) -> None:
    """CliRunner is not a terminal, as a CI log: rich used to cut these tables to 80 columns
    (`known-go…`, `producti…`); every state, version and alias now shows in full."""
    name = fx.unique("a-model-name-long-enough-to-fill-a-ci-log-line-by-itself-" + "x" * 60)
    data = fx.unique("training-data-with-a-long-name-" + "y" * 60)
    fx.dataset(reg, data, tmp_path)
    fx.model(reg, name, tmp_path, datasets=(f"{data}@1",))
    fx.model(reg, name, tmp_path, datasets=(f"{data}@1",))
    alias = "production-eu-west-serving-" + "z" * 40
    for v in ("1", "2"):
        assert assay("mark", name, v, "known-good", "--reason", "eval passed")[0] == 0
    assert assay("promote", name, "2", "--alias", alias)[0] == 0
    assert assay("mark", name, "2", "quarantined", "--reason", "drift")[0] == 0

    code, out, _ = assay("status", name)
    assert code == 0 and "…" not in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["1"], ["2"]) and "version(s)" not in line
    }
    assert "known-good" in rows["1"], out
    assert "quarantined" in rows["2"] and alias in rows["2"], out
    assert f"{alias}->2" in out and name in out

    code, out, _ = assay("lineage", f"dataset:{data}@1")
    assert code == 0 and "…" not in out
    assert f"{name}/1" in out and f"{name}/2" in out and alias in out
    assert "known-good" in out and "quarantined" in out
