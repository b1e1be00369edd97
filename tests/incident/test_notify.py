"""notify: signed canonical JSON to a webhook on 127.0.0.1, JSON lines to a file, never aborts."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from assay.incident._notify import canonical_json, redact_url, send_notification
from assay.incident.actions import ActionContext, NotifyAction

SECRET = "s3cret-for-tests"


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(self.headers.get("X-Assay-Signature", ""), expected)
        type(self).received.append(
            {
                "body": json.loads(body),
                "raw": body,
                "signed": signed,
                "delivery": self.headers.get("X-Assay-Delivery"),
            }
        )
        self.send_response(self.status if signed else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    _Hook.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN", _Hook
    server.shutdown()
    server.server_close()


def ctx(step="notify") -> ActionContext:
    return ActionContext(incident_id="inc-1", playbook_id="data-poisoning", step_id=step)


def test_signed_webhook_delivery(webhook, monkeypatch):
    url, hook = webhook
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    c = ctx()
    out = NotifyAction().run(
        c,
        {
            "message": "dataset poisoned",
            "webhook": url,
            "secret_env": "HOOK_SECRET",
            "data": {"n": 2},
        },
    )
    assert out["delivered"] is True and out["error"] is None
    assert out["webhook"] == {"url": f"{url.split('/hooks')[0]}/...", "status": 200, "ok": True}
    assert "T0KEN" not in json.dumps(out)  # the URL path may be a secret
    assert c.warnings == []
    (got,) = hook.received
    assert got["signed"] and got["delivery"] == "inc-1:notify"
    assert got["raw"] == canonical_json(got["body"])
    assert got["body"]["message"] == "dataset poisoned" and got["body"]["data"] == {"n": 2}
    assert got["body"]["incident"] == "inc-1" and got["body"]["delivery_id"] == "inc-1:notify"


def test_wrong_secret_is_a_warning_not_an_abort(webhook, monkeypatch):
    url, hook = webhook
    monkeypatch.setenv("HOOK_SECRET", "wrong")
    c = ctx()
    out = NotifyAction().run(c, {"message": "m", "webhook": url, "secret_env": "HOOK_SECRET"})
    assert out["delivered"] is False and "HTTP 401" in out["error"]
    assert c.warnings and "not delivered" in c.warnings[0]


def test_missing_secret_env_refuses_to_send_unsigned(webhook, monkeypatch):
    url, hook = webhook
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    out = send_notification({"m": 1}, delivery_id="d", webhook=url, secret_env="NOPE_SECRET")
    assert out["delivered"] is False and "NOPE_SECRET is not set" in out["error"]
    assert hook.received == []


def test_unreachable_and_bad_urls_never_raise():
    out = send_notification({"m": 1}, delivery_id="d", webhook="http://127.0.0.1:9/x", timeout=0.5)
    assert out["delivered"] is False and out["error"]
    out = send_notification({"m": 1}, delivery_id="d", webhook="file:///etc/passwd")
    assert out["delivered"] is False and "http(s)" in out["error"]
    out = send_notification({"m": 1}, delivery_id="d")
    assert out == {"delivery_id": "d", "delivered": False, "error": "no webhook or file given"}


def test_file_channel_is_idempotent(tmp_path: Path):
    path = tmp_path / "sub" / "notes.jsonl"
    for _ in range(2):  # a resumed incident re-runs the step
        out = NotifyAction().run(ctx(), {"message": "hello", "file": str(path)})
        assert out["delivered"] is True
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "hello"
    NotifyAction().run(ctx("notify2"), {"message": "again", "file": str(path)})
    assert len(path.read_text().splitlines()) == 2


def test_file_error_is_reported(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = ctx()
    out = NotifyAction().run(c, {"message": "m", "file": str(blocker / "notes.jsonl")})
    assert out["delivered"] is False and c.warnings


def test_redact_url():
    assert redact_url("https://hooks.slack.com/services/A/B/C?x=1") == "https://hooks.slack.com/..."
    assert redact_url("http://127.0.0.1:8080/p") == "http://127.0.0.1:8080/..."
