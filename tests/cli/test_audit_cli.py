"""`assay audit log|checkpoint|verify` through the CLI, including tampering with the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest


@pytest.fixture
def busy_home(invoke, home: Path, model_dir: Path) -> Path:
    """A home with a few recorded commands and one checkpoint."""
    for args in (
        ("key", "generate", "--name", "second"),
        ("sign", model_dir),
        ("sign", model_dir, "--key", "second"),
    ):
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
    checkpoint = invoke("audit", "checkpoint", "--json")
    assert checkpoint.exit_code == 0, checkpoint.stderr
    return home


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "assay.db")


def _events(invoke) -> list[dict]:
    result = invoke("audit", "log", "--limit", "0", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_log_lists_what_commands_did(invoke, busy_home: Path):
    events = _events(invoke)
    actions = [e["action"] for e in events]
    assert actions == ["assay.init", "trust.root", "key.generate", "key.trust", "sign", "sign"]
    assert [e["seq"] for e in events] == list(range(6))
    # the actor is the acting key's id; ASSAY_ACTOR is only its display name
    assert events[0]["actor"] == "unsigned (test@assay)"
    admin = events[1]["subject"].removeprefix("key:")
    assert all(e["actor"] == f"key:{admin[:16]} (test@assay)" for e in events[1:])
    assert events[4]["payload"]["files"] == 4
    limited = json.loads(invoke("audit", "log", "--limit", "2", "--json").stdout)
    assert [e["seq"] for e in limited] == [4, 5]
    table = invoke("audit", "log")
    assert table.exit_code == 0 and "key.generate" in table.stdout


def test_checkpoint_then_verify_ok(invoke, busy_home: Path):
    files = sorted((busy_home / "checkpoints").glob("checkpoint-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())  # a JSON document
    result = invoke("audit", "verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["tree_size"] == 6
    # more events after the checkpoint: still consistent; a second checkpoint too
    assert invoke("key", "generate", "--name", "third").exit_code == 0
    assert invoke("audit", "checkpoint").exit_code == 0
    result = invoke("audit", "verify", "--checkpoint", files[0])
    assert result.exit_code == 0 and "OK" in result.stdout
    report = json.loads(invoke("audit", "verify", "--json").stdout)
    assert report["ok"] and report["tree_size"] == 8 and report["checked_checkpoints"] >= 2


def test_edited_row_is_reported(invoke, busy_home: Path, expect_error):
    with _db(busy_home) as conn:
        (payload,) = conn.execute("SELECT payload FROM audit_events WHERE seq = 4").fetchone()
        conn.execute(
            "UPDATE audit_events SET payload = ? WHERE seq = 4",
            (payload.replace('"files":4', '"files":5'),),
        )
        assert conn.total_changes == 1
    conn.close()
    result = invoke("audit", "verify")
    expect_error(result, 3, "audit event 4")
    assert "audit event 4 was modified" in " ".join(result.stdout.split())
    as_json = invoke("audit", "verify", "--json")
    assert as_json.exit_code == 3
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert any("audit event 4" in p for p in report["problems"])


def test_edited_actor_is_reported(invoke, busy_home: Path, expect_error):
    with _db(busy_home) as conn:
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    conn.close()
    expect_error(invoke("audit", "verify"), 3, "audit event 1")


def test_deleted_last_row_is_reported(invoke, busy_home: Path, expect_error):
    with _db(busy_home) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 5")
    conn.close()
    expect_error(invoke("audit", "verify"), 3, "5")


def test_truncated_tail_with_head_rewritten_is_reported(invoke, busy_home: Path, expect_error):
    """Deleting the last rows and lowering the head still contradicts the signed checkpoint."""
    with _db(busy_home) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq >= 3")
        conn.execute("UPDATE audit_head SET tree_size = 3")
    conn.close()
    expect_error(invoke("audit", "verify"), 3, "checkpoint")


def test_deleted_middle_row_is_reported(invoke, busy_home: Path, expect_error):
    with _db(busy_home) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 2")
    conn.close()
    expect_error(invoke("audit", "verify"), 3, "2")


def test_tampered_checkpoint_file(invoke, busy_home: Path, expect_error):
    path = next((busy_home / "checkpoints").glob("checkpoint-*.json"))
    doc = json.loads(path.read_text())
    size_key = next(k for k in doc if "size" in k)
    doc[size_key] = doc[size_key] - 1
    path.write_text(json.dumps(doc))
    expect_error(invoke("audit", "verify"), 3, "checkpoint")


def test_failed_commands_record_nothing(
    invoke, busy_home: Path, model_dir: Path, audit_events_count
):
    events = audit_events_count(busy_home)
    assert invoke("key", "export", "deadbeefdeadbeef").exit_code == 1
    assert invoke("sign", model_dir, "--key", "deadbeefdeadbeef").exit_code == 1
    (model_dir / "weights.bin").write_bytes(b"changed")
    assert invoke("verify", model_dir).exit_code == 3
    assert audit_events_count(busy_home) == events
    assert invoke("audit", "verify").exit_code == 0
