"""`assay rollback`: usage and refusals that need no registered model. The behaviour on a real
registry (targets, candidates, dry run, --to, tampering, lineage, freezes, confirmation) is in
tests/rollback/test_rollback_real.py; kills and concurrency in tests/rollback/test_crash_resume.py."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_help_lists_the_options(invoke):
    out = invoke("rollback", "--help")
    assert out.exit_code == 0
    for option in ("--alias", "--to", "--dry-run", "--yes", "--reason", "--json"):
        assert option in out.stdout


def test_unknown_model_changes_nothing(home, invoke, audit_events_count):
    size = audit_events_count(home)
    out = invoke("rollback", "no-such-model", "--yes")
    assert out.exit_code == 1, out.output
    assert out.stderr.startswith("error: ")
    assert audit_events_count(home) == size


def test_needs_a_name(invoke):
    assert invoke("rollback").exit_code == 2
