"""`assay bom`: the CycloneDX 1.6 ML-BOM and the signed SLSA provenance validate against their
schemas and say what the store says."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import gate_fixtures as gf
import jsonschema
import registry_fixtures as fx
from click.testing import CliRunner

from assay.cli import cli

world = fx.home_fixture()
SCHEMA = Path(__file__).parent / "schemas" / "slsa_provenance_v1.schema.json"


def test_bom_and_provenance_validate(world, tmp_path):
    from assay.gates.bom import build_bom, validate_cyclonedx
    from assay.gates.runner import run_gates
    from assay.trust.statements import open_statement, statement_signed_by

    registry = world[1]
    path, frame = gf.table(tmp_path)
    ds = fx.unique("tab")
    data = gf.register_table(registry, ds, path)
    name = fx.unique("m")
    version = gf.register(registry, name, gf.sklearn_model(tmp_path, frame), data)
    uri = f"models:/{name}/{version}"
    run_gates(registry, uri, ["pickle-scan", "label-issues"])

    result = build_bom(registry, uri)
    bom = result.bom
    validate_cyclonedx(bom)  # the library's strict CycloneDX 1.6 schema
    assert bom["specVersion"] == "1.6"
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model" and model["bom-ref"] == uri
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props["assay:gate:pickle-scan"].startswith("passed")
    assert model["modelCard"]["modelParameters"]["datasets"] == [{"ref": f"dataset:{data}"}]
    metrics = {m["type"] for m in model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]}
    assert "label-issues:issue_rate" in metrics
    (dataset,) = bom["components"]
    assert dataset["type"] == "data" and dataset["bom-ref"] == f"dataset:{data}"
    (dep,) = [d for d in bom["dependencies"] if d["ref"] == uri]
    assert dep["dependsOn"] == [f"dataset:{data}"]

    envelope = json.loads(result.provenance)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    jsonschema.validate(statement, json.loads(SCHEMA.read_text()))
    assert statement["subject"][0]["digest"]["sha256"] == model["hashes"][0]["content"]
    opened = open_statement(result.provenance, "https://slsa.dev/provenance/v1", what="provenance")
    key = registry.keys.trust_list().get(opened.key_ids[0])
    assert statement_signed_by(opened, key.public_key)

    out, prov = tmp_path / "bom.json", tmp_path / "prov.json"
    cli_result = CliRunner().invoke(cli, ["bom", uri, "-o", str(out), "--provenance", str(prov)])
    assert cli_result.exit_code == 0, cli_result.output
    validate_cyclonedx(json.loads(out.read_text()))
    assert json.loads(prov.read_text())["payloadType"] == "application/vnd.in-toto+json"


def test_a_broken_bom_does_not_validate():
    import pytest

    from assay.core.errors import FormatError
    from assay.gates.bom import validate_cyclonedx

    with pytest.raises(FormatError, match="does not validate"):
        validate_cyclonedx({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{}]})
