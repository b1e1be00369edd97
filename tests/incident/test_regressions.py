"""Named regressions of issue 13, each with the original hostile input, through the real CLI in a
subprocess capped at 1 GiB of address space (``RLIMIT_AS``): exit 1, one line ``error: ...`` on
stderr, nothing on stdout, nothing recorded or written. The timeout only guards the suite against
a hang; nothing here measures time.

* D3: YAML billion laughs (aliases nested 9 x 9 deep) in a playbook;
* D4: a run of 100,000 unclosed ``{{`` in a template (quadratic with the old regex);
* D9: ``not`` repeated 1,500 times in a template and in ``when``; rich markup in playbook text;
* PostgreSQL: ``incidents.playbook_digest`` held ``sha256:`` + 64 hex in a ``String(64)``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import rb_fixtures as rb  # noqa: E402

pytestmark = pytest.mark.slow
world = rb.world_fixture()
LIMIT_BYTES = 1 << 30

HEADER = "id: hostile\nseverity: low\nsteps:\n"


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n" + HEADER + "  - {id: s, action: notify, with: {message: *a9}}\n"


def unclosed_braces() -> str:
    return HEADER + "  - id: s\n    action: notify\n    with: {message: '" + "{{" * 100_000 + "'}\n"


def not_template() -> str:
    nots = "not " * 1500
    return (
        HEADER + f"  - id: s\n    action: notify\n    with: {{message: '{{{{ {nots}true }}}}'}}\n"
    )


def not_condition() -> str:
    nots = "not " * 1500
    return (
        HEADER
        + f"  - id: s\n    action: notify\n    when: '{nots}true'\n    with: {{message: x}}\n"
    )


def _limit() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def bounded_cli(home: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from assay.cli import main; main()", *map(str, args)],
        env=rb.env_for(home),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit,
    )


def _files(home: Path) -> set[str]:
    return {
        str(p.relative_to(home))
        for p in home.rglob("*")
        if not p.name.endswith(("-wal", "-shm", "-journal"))
    }


def refused(world, tmp_path: Path, text: str, fragment: str) -> None:
    """`playbook validate` and `incident run --dry-run` (and a real run) of ``text`` refuse it."""
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    reg = world.registry
    before = (rb.audit_size(reg), _files(world.home), sorted(tmp_path.iterdir()))
    incidents = len(json.loads(rb.cli(world.home, "incident", "list", "--json").stdout))
    for args in (
        ("playbook", "validate", path),
        ("incident", "run", path, "--dry-run"),
        ("incident", "run", path, "--yes"),
    ):
        out = bounded_cli(world.home, *args)
        assert out.returncode == 1, (args, out.returncode, out.stderr[-2000:])
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
        assert "hostile.yaml:" in lines[0]
        assert fragment in lines[0] and len(lines[0]) < 400, lines[0]
        assert out.stdout == ""
    assert (rb.audit_size(reg), _files(world.home), sorted(tmp_path.iterdir())) == before
    assert len(json.loads(rb.cli(world.home, "incident", "list", "--json").stdout)) == incidents


def test_d3_yaml_billion_laughs(world, tmp_path):
    text = billion_laughs()
    assert len(text.encode()) < 800  # the input: 740 bytes that expanded to 3.9 GB
    refused(world, tmp_path, text, "anchors and aliases")


def test_d4_unclosed_template_braces(world, tmp_path):
    refused(world, tmp_path, unclosed_braces(), "unclosed '{{'")


def test_d9_not_repeated_1500_times_in_a_template(world, tmp_path):
    refused(world, tmp_path, not_template(), "longer than")


def test_d9_not_repeated_1500_times_in_when(world, tmp_path):
    refused(world, tmp_path, not_condition(), "longer than")


def test_d9_deep_expression_within_the_length_limit(world, tmp_path):
    nots = "not " * 450  # 1,800 characters: parsed, then refused for its depth
    text = (
        HEADER
        + f"  - id: s\n    action: notify\n    when: '{nots}true'\n    with: {{message: x}}\n"
    )
    refused(world, tmp_path, text, "nested more than")


def test_postgresql_playbook_digest_fits(world):
    """Every `assay incident run` failed on PostgreSQL: 'value too long for character varying(64)'."""
    notes = world.root / f"notify-{world.backend}.jsonl"
    out = rb.cli(
        world.home,
        "incident",
        "run",
        "backdoored-model",
        "--set",
        "model=nothing-registered-here",
        "--set",
        "reason=regression",
        "--set",
        f"notify_file={notes}",
        "--yes",
        "--json",
    )
    assert "value too long" not in out.stderr, out.stderr
    data = json.loads(out.stdout)
    incident = rb.last_incident(world.registry)
    assert incident is not None and incident.id == data["incident_id"]
    assert incident.playbook_digest.startswith("sha256:") and len(incident.playbook_digest) == 71
