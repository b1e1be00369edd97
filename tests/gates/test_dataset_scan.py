"""`assay dataset scan` and `dataset register --scan` on real registered tables."""

from __future__ import annotations

import json

import gate_fixtures as gf
import pandas as pd
import pytest
import registry_fixtures as fx
from click.testing import CliRunner

from assay.cli import cli
from assay.core.errors import FormatError

world = fx.home_fixture()


def test_flipped_labels_duplicates_and_shift(world, tmp_path):
    from assay.gates.dataset_scan import scan_dataset

    registry = world[1]
    name = fx.unique("ds")
    clean, frame = gf.table(tmp_path, rows=600, seed=3)
    gf.register_table(registry, name, clean)
    flipped = frame.copy()
    rows = list(range(0, 600, 10))  # 10 % of the labels flipped
    flipped.loc[rows, "label"] = 1 - flipped.loc[rows, "label"]
    flipped = pd.concat([flipped, flipped.iloc[:5]], ignore_index=True)  # 5 exact duplicates
    path = tmp_path / "v2" / "data.parquet"
    path.parent.mkdir()
    flipped.to_parquet(path, index=False)
    ref = gf.register_table(registry, name, path)

    scan = scan_dataset(registry, ref, "label")
    assert scan.rows == 605 and scan.duplicates == 5
    found = {s["row"] for s in scan.suspect_rows}
    recall = len(found & set(rows)) / len(rows)
    assert recall >= 0.5, recall
    assert all(0.0 <= s["score"] <= 1.0 for s in scan.suspect_rows)
    assert scan.shift["against"] == f"{name}@1"
    assert scan.shift["label_tvd"] >= 0.0 and scan.shift["max_ks"] < 0.2
    events = [e for e in registry.audit_events() if e["action"] == "dataset.scan"]
    assert events[-1]["subject"] == f"dataset:{name}@2"


def test_scan_bad_input(world, tmp_path):
    from assay.gates.dataset_scan import scan_dataset

    registry = world[1]
    path, _ = gf.table(tmp_path)
    ref = gf.register_table(registry, fx.unique("ds"), path)
    with pytest.raises(FormatError, match="no label column 'y'"):
        scan_dataset(registry, ref, "y")


def test_register_scan_cli(world, tmp_path):
    path, _ = gf.table(tmp_path)
    name = fx.unique("cli")
    runner = CliRunner()
    result = runner.invoke(cli, ["dataset", "register", name, str(path), "--scan", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["scan"]["rows"] == 400 and "suspect_rows" in doc["scan"]
    result = runner.invoke(
        cli,
        ["dataset", "register", fx.unique("none"), str(path), "--scan", "--label-column", "nope"],
    )
    assert result.exit_code == 1 and result.output.startswith("error: the dataset has no label")
    result = runner.invoke(cli, ["dataset", "scan", f"{name}@1", "--label-column", "label"])
    assert result.exit_code == 0 and "label issues" in result.output


def test_a_table_over_the_bounds_is_refused_and_not_registered(world, tmp_path):
    from assay.gates.tables import MAX_COLUMNS
    from assay.registry.datasets import list_datasets

    path = tmp_path / "wide" / "t.csv"
    path.parent.mkdir()
    n = 2 * MAX_COLUMNS
    path.write_text(",".join(f"c{i}" for i in range(n)) + ",y\n" + "0," * n + "0\n")
    name = fx.unique("wide")
    result = CliRunner().invoke(
        cli, ["dataset", "register", name, str(path), "--scan", "--label-column", "y"]
    )
    assert result.exit_code == 1, result.output
    assert result.output == f"error: t.csv: more than {MAX_COLUMNS} columns\n"
    assert list_datasets(world[1], name) == []


@pytest.mark.slow
def test_a_badnets_finding_opens_a_data_poisoning_incident_with_gate_results(world, tmp_path):
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from assay.gates.runner import run_gates
    from assay.incident import service as incidents

    registry = world[1]
    x, y, _ = gf.badnets_digits(0.05)
    frame = pd.DataFrame(x, columns=[f"px{i}" for i in range(64)]).assign(label=y)
    path = tmp_path / "badnets" / "digits.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    name = fx.unique("bad")
    ref = gf.register_table(registry, name, path)
    model_dir = tmp_path / "lr"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=200).fit(x, y), str(model_dir), serialization_format="skops"
    )
    model = fx.unique("onbad")
    version = gf.register(registry, model, model_dir, ref)
    run_gates(registry, f"models:/{model}/{version}", ["pickle-scan"])
    runner = CliRunner()
    args = ["dataset", "scan", f"dataset:{ref}", "--label-column", "label", "--json"]
    reported = runner.invoke(cli, args)  # report only: exit 0, the finding in the JSON
    assert reported.exit_code == 0, reported.output
    assert any("carry a trigger" in f for f in json.loads(reported.output)["findings"])
    failed = runner.invoke(cli, [*args, "--on-finding", "fail"])
    assert failed.exit_code == 3 and "incident" not in failed.output
    opened = runner.invoke(cli, [*args, "--on-finding", "incident"])
    assert opened.exit_code == 3, opened.output
    doc = json.loads(opened.output[: opened.output.rindex("}") + 1])
    incident_id = doc["incident"]["incident_id"]
    assert doc["incident"]["status"] == "completed"
    with registry.store.session(readonly=True) as session:
        from assay.registry.versions import record_of, require_artifact

        assert record_of(session, require_artifact(session, "dataset", name, "1")).state == (
            "quarantined"
        )
    report = incidents.report(registry, incident_id, "md")
    assert "## Gate results of the affected versions" in report
    assert f"models:/{model}/{version} | pickle-scan | passed" in report
    data = json.loads(incidents.report(registry, incident_id, "json"))
    assert data["gate_results"][0]["key_id"]
