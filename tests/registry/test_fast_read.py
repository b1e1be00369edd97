"""The ``sqlite3`` read views (``assay.registry.fast_read``) against the SQLAlchemy code they
stand in for, on one real initialised home; and the store-only commands and ``verify
models:/NAME@ALIAS`` in a fresh process, importing neither SQLAlchemy, mlflow nor rich."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay.core.errors import NotFoundError
from assay.core.refs import DatasetRef, parse_model_ref
from assay.core.settings import Settings
from assay.integrity.keys import generate_key
from assay.mlflow_access.artifacts import local_path_of
from assay.registry.datasets import list_datasets, register_dataset, show_dataset
from assay.registry.facade import Registry
from assay.registry.fast_read import (
    SqliteStoreView,
    audit_events,
    list_keys,
    open_store_view,
    read_alias,
)
from assay.registry.fast_read import list_datasets as fast_list_datasets
from assay.registry.fast_read import show_dataset as fast_show_dataset
from assay.registry.registration import register_model
from assay.registry.states import mark
from assay.registry.uri_verify import resolve_model_version, verify_target, verify_uri
from assay.registry.versions import list_records, record_of, require_artifact
from assay.store.models import Artifact, ArtifactState, utcnow

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")


def _folder(root: Path, name: str, content: bytes) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "weights.bin").write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Registry]]:
    """Keys (one revoked, one trusted public-only), datasets with several versions and states,
    a pending and a stateless dataset row, models with lineage, aliases, audit events."""
    root = tmp_path_factory.mktemp("fast")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED:
            mp.delenv(var, raising=False)
        mp.setenv("ASSAY_HOME", str(home))
        mp.setenv("ASSAY_ACTOR", "test@assay")
        mp.setenv("HF_HUB_OFFLINE", "1")
        Registry.initialise(Settings.from_env())
        registry = Registry.open(Settings.from_env())
        old = registry.keys.generate(name="old")
        registry.keys.revoke(old.key_id, reason="rotated", compromised_since=utcnow())
        registry.keys.trust(generate_key("ed25519").public_key.pem, name="partner")

        for v in (1, 2, 3):
            data = root / f"customers-{v}"
            data.mkdir()
            (data / "rows.csv").write_text(f"a,b\n{v},2\n")
            register_dataset(registry, "customers", data)
        single = root / "labels.csv"
        single.write_text("x\n1\n")
        register_dataset(registry, "labels", single)
        mark(registry, "customers", "2", "quarantined", reason="poisoned rows", kind="dataset")
        mark(registry, "labels", "1", "known-good", reason="checked", kind="dataset")
        with registry.store.session() as session:  # a half-done registration, a stateless row
            pending = Artifact(kind="dataset", name="customers", version="4", created_at=utcnow())
            session.add(pending)
            session.flush()
            session.add(
                ArtifactState(
                    artifact_id=pending.id, state="registered", status="pending", labels="[]"
                )
            )
            session.add(Artifact(kind="dataset", name="raw", version="1", created_at=utcnow()))

        base = register_model(
            registry,
            "churn",
            str(_folder(root, "churn-1", b"\x01" * 4096)),
            datasets=[DatasetRef("customers", "1"), DatasetRef("labels", None)],
            alias="production",
            watermark=False,
        )
        register_model(
            registry,
            "churn-ft",
            str(_folder(root, "churn-ft-1", b"\x02" * 4096)),
            datasets=[DatasetRef("customers", "3")],
            parents=[parse_model_ref(f"churn/{base.version}")],
            alias="staging",
            watermark=False,
        )
        registry.backend.set_alias("churn", "canary", base.version)
        # production is a protected alias: what serves there must be known-good
        mark(registry, "churn", base.version, "known-good", reason="evaluated")
        yield home, registry


@pytest.fixture
def view(world: tuple[Path, Registry]) -> Iterator[SqliteStoreView]:
    _, registry = world
    opened = open_store_view(registry.settings)
    assert opened is not None
    yield opened
    opened.close()


def test_audit_events_agree(world: tuple[Path, Registry], view: SqliteStoreView) -> None:
    _, registry = world
    for limit in (None, 1, 3, 10_000):
        assert view.audit_events(limit) == registry.audit_events(limit)
    assert len(view.audit_events()) > 10
    assert audit_events(registry.settings, 5) == registry.audit_events(5)


def test_keys_agree(world: tuple[Path, Registry], view: SqliteStoreView) -> None:
    _, registry = world
    expected = registry.keys.list()
    assert view.keys() == expected
    assert list_keys(registry.settings) == expected
    statuses = {r.name: (r.status, r.has_private) for r in expected}
    assert statuses == {
        "default": ("active", True),
        "old": ("compromised", True),
        "partner": ("active", False),
    }
    for record in expected:  # aware UTC, as UTCDateTime returns
        assert record.created_at is not None and record.created_at.utcoffset() is not None


def test_versions_agree(world: tuple[Path, Registry], view: SqliteStoreView) -> None:
    _, registry = world
    with registry.store.session(readonly=True) as session:
        for kind in ("dataset", "model"):
            for name in (None, "customers", "churn-ft", "nope"):
                for complete_only in (True, False):
                    expected = list_records(session, kind, name, complete_only=complete_only)
                    got = view.versions(kind, name, complete_only=complete_only)
                    assert got == expected
        for kind, name, version in (
            ("dataset", "customers", None),
            ("dataset", "customers", "2"),
            ("dataset", "labels", None),
            ("dataset", "raw", "1"),
            ("model", "churn", "1"),
            ("model", "churn-ft", None),
        ):
            expected_record = record_of(session, require_artifact(session, kind, name, version))
            assert view.version(kind, name, version) == expected_record
    by_ref = {r.ref: r for r in view.versions("dataset", complete_only=False)}
    assert by_ref["dataset:customers@2"].state == "quarantined"
    assert by_ref["dataset:customers@2"].reason == "poisoned rows"
    assert by_ref["dataset:customers@4"].status == "pending"
    assert by_ref["dataset:raw@1"].key_id is None
    assert view.version("dataset", "customers", None).version == "3"  # 4 is pending
    ft = view.version("model", "churn-ft", "1")
    assert ft.datasets == ["customers@3"] and ft.parents == ["churn/1"]
    assert sorted(view.version("model", "churn", "1").datasets) == ["customers@1", "labels@1"]


def test_dataset_commands_agree_and_name_what_is_missing(world: tuple[Path, Registry]) -> None:
    _, registry = world
    settings = registry.settings
    assert fast_list_datasets(settings) == list_datasets(registry)
    assert fast_list_datasets(settings, "customers") == list_datasets(registry, "customers")
    for ref in (DatasetRef("customers", None), DatasetRef("customers", "2")):
        assert fast_show_dataset(settings, ref) == show_dataset(registry, ref)
    for ref in (DatasetRef("nobody", None), DatasetRef("customers", "9")):
        with pytest.raises(NotFoundError) as slow:
            show_dataset(registry, ref)
        with pytest.raises(NotFoundError) as fast:
            fast_show_dataset(settings, ref)
        assert str(fast.value) == str(slow.value)


def test_other_store_urls_go_through_sqlalchemy(
    world: tuple[Path, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, registry = world
    url = f"sqlite:///{home / 'assay.db'}?timeout=5"  # not a plain file URL: SQLAlchemy reads it
    other = Settings.from_env(str(home))
    other = Settings(**{**other.__dict__, "db_url": url})
    assert open_store_view(other) is None
    assert audit_events(other, 4) == registry.audit_events(4)
    assert list_keys(other) == registry.keys.list()
    assert fast_list_datasets(other, "customers") == list_datasets(registry, "customers")


def test_alias_reader_agrees_with_the_backend(world: tuple[Path, Registry]) -> None:
    _, registry = world
    uri = registry.settings.tracking_uri
    for name, alias in (("churn", "production"), ("churn", "canary"), ("churn-ft", "staging")):
        assert read_alias(uri, name, alias) == registry.backend.get_alias(name, alias)
        assert read_alias(uri, name, alias) is not None
    assert read_alias(uri, "churn", "nope") is None
    assert registry.backend.get_alias("churn", "nope") is None
    assert read_alias(uri, "nobody", "production") is None
    assert read_alias("http://127.0.0.1:1", "churn", "production") is None
    assert read_alias(f"sqlite:///{registry.settings.home / 'missing.db'}", "churn", "x") is None
    assert resolve_model_version(registry, "models:/churn@canary") == ("churn", "1")


def test_verify_target_agrees_with_verify_uri(world: tuple[Path, Registry]) -> None:
    _, registry = world
    for target in (
        "models:/churn/1",
        "models:/churn@production",
        "models:/churn-ft@staging",
        "dataset:customers@3",
        "dataset:labels@latest",
    ):
        fast = verify_target(registry.settings, target)
        assert fast.ok, fast.summary()
        assert fast.to_dict() == verify_uri(registry, target).to_dict()
    for bad in ("models:/churn/9", "models:/churn@nope", "models:/nobody@production"):
        with pytest.raises(NotFoundError) as slow:
            verify_uri(registry, bad)
        with pytest.raises(NotFoundError) as fast_error:
            verify_target(registry.settings, bad)
        assert str(fast_error.value) == str(slow.value)
    unsigned = verify_target(registry.settings, "dataset:raw@1")
    assert not unsigned.ok and unsigned.problems == ["assay holds no signature for it"]


def test_verify_target_reports_a_changed_byte(world: tuple[Path, Registry]) -> None:
    _, registry = world
    assert verify_target(registry.settings, "models:/churn-ft/1").ok
    with registry.store.session(readonly=True) as session:
        uri = require_artifact(session, "model", "churn-ft", "1").uri
    local = local_path_of(uri or "")
    assert local is not None
    weights = local / "weights.bin"
    original = weights.read_bytes()
    weights.write_bytes(b"\x03" + original[1:])
    try:
        report = verify_target(registry.settings, "models:/churn-ft@staging")
        assert not report.ok and report.modified == ["weights.bin"]
        assert report.to_dict() == verify_uri(registry, "models:/churn-ft@staging").to_dict()
    finally:
        weights.write_bytes(original)


# -- fresh processes: what they import ---------------------------------------------------------

# Runs the CLI as `assay ARGS...` would, then records its exit code and what it imported.
PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["assay", *sys.argv[2:]]
from assay.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = ("sqlalchemy", "mlflow", "rich")
with open(out, "w") as f:
    json.dump({"code": code, "imported": [m for m in heavy if m in sys.modules]}, f)
"""


def _probe(home: Path, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="test@assay", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), result.stderr
    return json.loads(out.read_text()), result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "log", "--json"),
        ("key", "list", "--json"),
        ("dataset", "list", "--json"),
        ("dataset", "show", "customers@2", "--json"),
        ("verify", "models:/churn@production", "--json"),
        ("verify", "models:/churn-ft/1", "--json"),
        ("verify", "dataset:customers@latest", "--json"),
        ("audit", "log"),  # not a terminal: plain text, no rich either
        ("key", "list"),
        ("dataset", "list"),
        ("verify", "models:/churn@production"),
    ],
    ids=lambda a: " ".join(a),
)
def test_commands_import_no_sqlalchemy_mlflow_or_rich(
    world: tuple[Path, Registry], tmp_path: Path, args: tuple[str, ...]
) -> None:
    home, registry = world
    probe, stdout = _probe(home, tmp_path, *args)
    assert probe == {"code": 0, "imported": []}, stdout
    if "--json" in args and args[0] == "audit":
        assert json.loads(stdout) == registry.audit_events(50)
    if "--json" in args and args[0] == "key":
        assert json.loads(stdout) == [r.to_dict() for r in registry.keys.list()]
    if "--json" in args and args[:2] == ("dataset", "list"):
        assert json.loads(stdout) == [r.to_dict() for r in list_datasets(registry)]
    if args == ("key", "list"):
        assert "partner" in stdout and "compromised" in stdout
    if args == ("verify", "models:/churn@production"):
        assert stdout.startswith("OK models:/churn/1: 1 files match")


def test_missing_alias_still_gets_mlflows_answer(
    world: tuple[Path, Registry], tmp_path: Path
) -> None:
    home, _ = world
    probe, _ = _probe(home, tmp_path, "verify", "models:/churn@nope")
    assert probe["code"] == 1  # the backend (mlflow) gave the answer: no such alias


def test_plain_console_prints_what_rich_prints() -> None:
    import io

    from rich.console import Console

    from assay.cli.context import plain_text

    for markup in (
        "[green]OK[/green] models:/x/1: 3 files match",
        "[red]FAILED[/red] dataset:d@1",
        "registered: [1, 2] and \\[literal] and [bold red]loud[/]",
        "no markup at all",
    ):
        buffer = io.StringIO()
        Console(file=buffer, width=500).print(markup)
        assert plain_text(markup) + "\n" == buffer.getvalue()
