"""The ``Registry`` facade: open before init, idempotent initialise, audit events per action."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.errors import ConfigError, IntegrityError
from assay.core.settings import Settings
from assay.registry.facade import Registry, _safe_url


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip MLflow's schema creation (seconds; covered by the CLI tests' real `assay init`)."""
    monkeypatch.setattr(Registry, "_initialise_mlflow", lambda self: None)


@pytest.fixture
def settings(assay_home: Path, no_mlflow) -> Settings:
    return Settings.from_env()


def _actions(registry: Registry) -> list[str]:
    return [e["action"] for e in registry.audit_events()]


def test_open_before_initialise_raises_config_error(settings: Settings):
    with pytest.raises(ConfigError, match="run `assay init`"):
        Registry.open(settings)
    assert not settings.home.exists()


def test_open_from_environment(settings: Settings):
    Registry.initialise()
    registry = Registry.open()
    assert registry.settings.home == settings.home
    assert registry.settings.actor == "test@assay"


def test_initialise_is_idempotent(settings: Settings):
    first = Registry.initialise(settings)
    assert first.created_key is not None
    assert first.created_key.name == "default" and first.created_key.key_type == "ecdsa-p256"
    assert first.home == str(settings.home)
    assert first.tracking_uri is None  # MLflow skipped here
    assert (settings.home.stat().st_mode & 0o777) == 0o700
    registry = Registry.open(settings)
    events = registry.audit_events()

    second = Registry.initialise(settings)
    assert second.created_key is None
    registry = Registry.open(settings)
    assert registry.audit_events() == events
    keys = registry.keys.list()
    assert [k.key_id for k in keys] == [first.created_key.key_id]
    assert keys[0].has_private
    assert len(list(settings.keys_dir.glob("*.key.pem"))) == 1
    assert first.to_dict()["created_key"]["key_id"] == first.created_key.key_id
    assert second.to_dict()["created_key"] is None


def test_initialise_with_ed25519(settings: Settings):
    result = Registry.initialise(settings, key_type="ed25519")
    assert result.created_key is not None and result.created_key.key_type == "ed25519"


def test_first_init_with_ci_key_is_refused(settings: Settings, monkeypatch, tmp_path: Path):
    """The first init creates the admin key; a CI key never becomes the admin by accident."""
    from assay.core.errors import ConfigError
    from assay.integrity.keys import generate_key

    pem = tmp_path / "ci.pem"
    pem.write_bytes(generate_key("ecdsa-p256").private_pem(None))
    monkeypatch.setenv("ASSAY_KEY", str(pem))
    with pytest.raises(ConfigError, match="no admin key yet"):
        Registry.initialise(Settings.from_env())


def test_joining_init_adds_no_trusted_key(settings: Settings, monkeypatch, tmp_path: Path):
    """A CI job's `assay init` on a shared store (its own home) adds no key and needs the root."""
    from assay.core.errors import ConfigError
    from assay.integrity.keys import generate_key

    first = Registry.initialise(settings)
    monkeypatch.setenv("ASSAY_DB_URL", settings.db_url)
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "ci-home"))
    pem = tmp_path / "ci.pem"
    pem.write_bytes(generate_key("ecdsa-p256").private_pem(None))
    monkeypatch.setenv("ASSAY_KEY", str(pem))
    with pytest.raises(ConfigError, match="--trust-root"):
        Registry.initialise(Settings.from_env())
    joined = Registry.initialise(Settings.from_env(), trust_root=first.trust_root)
    assert joined.created_key is None and joined.trust_root == first.trust_root
    keys = Registry.open(Settings.from_env()).keys.list()
    assert [k.key_id for k in keys if k.trusted] == [first.created_key.key_id]
    wrong = generate_key("ecdsa-p256").key_id
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "ci-home-2"))
    with pytest.raises(IntegrityError, match="not signed by the pinned trust root"):
        Registry.initialise(Settings.from_env(), trust_root=wrong)


def test_audit_events_for_init_key_and_sign(settings: Settings, tmp_path: Path):
    init = Registry.initialise(settings)
    registry = Registry.open(settings)
    assert _actions(registry) == ["assay.init", "trust.root"]

    registry.keys.generate(name="second", key_type="ed25519")
    partner = registry.keys.trust(
        __import__("assay.integrity.keys", fromlist=["generate_key"])
        .generate_key("ecdsa-p256")
        .public_key.pem,
        name="partner",
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    (model / "empty").write_bytes(b"")
    signed = registry.sign_path(model)
    registry.keys.revoke("second", reason="rotated")

    events = registry.audit_events()
    assert [e["action"] for e in events] == [
        "assay.init",
        "trust.root",
        "key.generate",
        "key.trust",  # the admin key acting here trusts the key it generated
        "key.trust",
        "sign",
        "key.revoke",
    ]
    assert [e["seq"] for e in events] == list(range(7))
    admin = init.created_key.key_id
    assert events[0]["actor"] == "unsigned (test@assay)"  # before any key existed
    assert all(e["actor"] == f"key:{admin[:16]} (test@assay)" for e in events[1:])
    assert events[1]["subject"] == f"key:{admin}"
    assert events[2]["payload"] == {"name": "second", "key_type": "ed25519"}
    assert events[3]["payload"]["roles"] == ["signer"]
    assert events[4]["subject"] == f"key:{partner.key_id}"
    sign = events[5]
    assert sign["subject"] == f"path:{model.resolve()}"
    assert sign["payload"]["root_digest"] == signed.root_digest
    assert sign["payload"]["key_id"] == admin
    assert sign["payload"]["files"] == 2
    assert events[6]["payload"]["reason"] == "rotated"
    assert [e["seq"] for e in registry.audit_events(limit=2)] == [5, 6]

    report = registry.verify_path(model)
    assert report.ok, report.summary()
    checkpoint = registry.audit_checkpoint()
    assert checkpoint["tree_size"] == 7
    assert Path(checkpoint["path"]).parent == settings.checkpoints_dir
    assert registry.latest_checkpoint() is not None
    audit = registry.audit_verify()
    assert audit.ok and audit.tree_size == 7 and audit.checked_checkpoints >= 1


def test_failed_sign_records_nothing(settings: Settings, tmp_path: Path):
    Registry.initialise(settings)
    registry = Registry.open(settings)
    before = registry.audit_events()
    from assay.core.errors import AssayError

    with pytest.raises(AssayError):
        registry.sign_path(tmp_path / "missing")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    with pytest.raises(AssayError):
        registry.sign_path(model, key="deadbeefdeadbeef")
    assert registry.audit_events() == before
    assert not (model / "model.sig").exists()


def test_safe_url_masks_passwords():
    assert _safe_url("postgresql://bob:secret@db/assay") == "postgresql://bob:***@db/assay"
    assert _safe_url("postgresql://bob@db/assay") == "postgresql://bob@db/assay"
    assert _safe_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
