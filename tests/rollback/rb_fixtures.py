"""Helpers for the rollback / incident tests on a real registry (embedded MLflow; assay's store on
SQLite and, when ``ASSAY_TEST_PG_URL`` is set, on PostgreSQL: see ``tests/store_backends.py``).

Import it by name (pyproject puts this folder on pytest's ``pythonpath``)::

    import rb_fixtures as rb
    world = rb.world_fixture()        # a module-scoped fixture: World(home, registry, root),
                                      # once per store backend

A home on PostgreSQL keeps its store in a database of its own; :func:`env_for` (every subprocess)
and :func:`copy_home` (a copy of the database too) know which one from :func:`use_database`.

``Registry.initialise`` creates MLflow's schema, which costs seconds, so each test module shares one
ASSAY_HOME and every test registers its own models (:func:`unique` names). The crash tests copy one
prepared home per crash point (:func:`copy_home`) and drive the real CLI in subprocesses
(:func:`cli`), since a crash kills the process.

What "the same end state" means for an interrupted-then-resumed incident versus an uninterrupted
one is :func:`registry_state` (aliases read from MLflow, version states, lineage, freezes, keys and
recorded alias moves) plus :func:`semantic_audit` (the audit log's multiset of
``(action, subject, payload)`` with incident ids, rollback ids and timestamps normalised, and the
incident's own bookkeeping events left out: see its docstring).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from store_backends import STORE_BACKENDS, drop_database, fresh_database

CLEARED = ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_KEY_PASSPHRASE")
CRASH_ENV = "ASSAY_TEST_CRASH_AT"
_counter = itertools.count(1)


# --- homes -----------------------------------------------------------------------------------


@dataclass
class World:
    home: Path
    registry: Any
    root: Path  # scratch folder for sources, reports, suspects
    backend: str = "sqlite"


# home -> ASSAY_DB_URL, for homes whose store is a PostgreSQL database
_DATABASES: dict[Path, str] = {}


def use_database(home: Path, url: str) -> None:
    """Record that ``home``'s store is the database ``url`` (a PostgreSQL home)."""
    _DATABASES[Path(home).resolve()] = url


def database_of(home: Path) -> str | None:
    return _DATABASES.get(Path(home).resolve())


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an assay subprocess working on ``home`` (and its database)."""
    env = {k: v for k, v in os.environ.items() if k not in (*CLEARED, CRASH_ENV)}
    env.update(ASSAY_HOME=str(home), ASSAY_ACTOR="test@assay", HF_HUB_OFFLINE="1")
    url = database_of(home)
    if url:
        env["ASSAY_DB_URL"] = url
    env.update(extra)
    return env


def open_in(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point this process's environment at ``home`` (and its database)."""
    for var in (*CLEARED, CRASH_ENV):
        mp.delenv(var, raising=False)
    for key, value in env_for(home).items():
        if key in ("ASSAY_HOME", "ASSAY_ACTOR", "HF_HUB_OFFLINE", "ASSAY_DB_URL"):
            mp.setenv(key, value)


def backend_home(backend: str, home: Path) -> Iterator[Path]:
    """Use as ``yield from``: ``home``, with a fresh PostgreSQL database when ``backend`` says so,
    dropped afterwards."""
    if backend != "postgresql":
        yield home
        return
    url = fresh_database()
    use_database(home, url)
    try:
        yield home
    finally:
        _DATABASES.pop(Path(home).resolve(), None)
        drop_database(url)


def settings_of(home: Path) -> Any:
    """Settings of ``home``: the database recorded for it by :func:`use_database`, else what the
    environment says (``ASSAY_DB_URL``, or the home's SQLite file)."""
    from dataclasses import replace

    from assay.core.settings import Settings

    settings = Settings.from_env(home)
    url = database_of(home)
    return replace(settings, db_url=url) if url else settings


def open_registry(home: Path) -> Any:
    from assay.registry.facade import Registry

    return Registry.open(settings_of(home))


def init_home(home: Path) -> Any:
    from assay.registry.facade import Registry

    Registry.initialise(settings_of(home))
    return open_registry(home)


def world_fixture() -> Any:
    """A module-scoped fixture: an initialised home, the environment pointing at it."""

    @pytest.fixture(scope="module", params=STORE_BACKENDS)
    def world(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[World]:
        base = tmp_path_factory.mktemp("rb")
        for home in backend_home(request.param, base / "home"):
            with pytest.MonkeyPatch.context() as mp:
                open_in(mp, home)
                registry = init_home(home)
                try:
                    yield World(home, registry, base, request.param)
                finally:
                    registry.store.dispose()

    return world


def checkpoint_sqlite(home: Path) -> None:
    """Fold the WAL into the database files, so that a copy of the folder is complete."""
    for db in ("assay.db", "mlflow.db"):
        path = home / db
        if path.exists():
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()


def copy_home(template: Path, dest: Path, *, checkpoint: bool = True) -> Path:
    """A copy of ``template``, and of its PostgreSQL database if it has one (MLflow's artifact
    URIs still point at the template's artifacts: read them, never tamper with them through a
    copy). A copied database lives until the session ends."""
    if checkpoint:
        checkpoint_sqlite(template)
    shutil.copytree(template, dest, symlinks=True)
    url = database_of(template)
    if url:
        use_database(dest, fresh_database(template=url))
    return dest


def cli(
    home: Path, *args: object, crash_at: str | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `assay` in a subprocess on ``home`` (optionally with the crash hook set)."""
    extra = dict(env)
    if crash_at:
        extra[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", "from assay.cli import main; main()", *map(str, args)],
        env=env_for(home, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(home: Path, *args: object, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from assay.cli import main; main()", *map(str, args)],
        env=env_for(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- registering -----------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def folder(root: Path, content: str) -> Path:
    """A small model (or dataset) folder with unique bytes."""
    path = root / f"src-{os.getpid()}-{next(_counter)}"
    (path / "sub").mkdir(parents=True)
    (path / "weights.bin").write_bytes(content.encode() + os.urandom(64))
    (path / "sub" / "config.json").write_text('{"layers": 2}')
    return path


def dataset(registry: Any, name: str, root: Path) -> str:
    from assay.registry.datasets import register_dataset

    return register_dataset(registry, name, folder(root, name)).version


def model(
    registry: Any,
    name: str,
    root: Path,
    *,
    datasets: tuple[str, ...] = (),
    parents: tuple[str, ...] = (),
    alias: str | None = None,
    source: Path | None = None,
    watermark: bool = False,
) -> str:
    """Register a model version (``datasets`` as NAME@V, ``parents`` as NAME/V); its version."""
    from assay.core.refs import parse_dataset_ref, parse_model_ref
    from assay.registry.registration import register_model

    return register_model(
        registry,
        name,
        str(source or folder(root, name)),
        datasets=[parse_dataset_ref(d, require_version=True) for d in datasets],
        parents=[parse_model_ref(p) for p in parents],
        alias=alias,
        watermark=watermark,
    ).version


def mark(registry: Any, name: str, version: str, state: str, reason: str = "ci") -> None:
    from assay.registry.states import mark as mark_

    mark_(registry, name, version, state, reason=reason)


@dataclass
class Drill:
    """Datasets D@1, D@2; model M versions 1, 2 (trained on D@1) and 3 (on D@2) serving production,
    all three known-good."""

    dataset: str
    model: str

    @property
    def poisoned(self) -> str:
        return f"{self.dataset}@2"


def build_drill(registry: Any, root: Path, prefix: str = "churn") -> Drill:
    ds, name = unique(f"{prefix}-data"), unique(prefix)
    dataset(registry, ds, root)
    dataset(registry, ds, root)
    model(registry, name, root, datasets=(f"{ds}@1",))
    model(registry, name, root, datasets=(f"{ds}@1",))
    model(registry, name, root, datasets=(f"{ds}@2",), alias="production")
    for v in ("1", "2", "3"):
        mark(registry, name, v, "known-good")
    return Drill(ds, name)


def stored_folder(registry: Any, name: str, version: str) -> Path:
    """The version's folder in the (local) artifact store."""
    from assay.mlflow_access.artifacts import local_path_of

    path = local_path_of(registry.backend.get_version(name, version).source)
    assert path is not None and path.is_dir(), path
    return path


def tamper(registry: Any, name: str, version: str, file: str = "weights.bin") -> None:
    """Flip one bit of one byte of the version's file in the artifact store."""
    target = stored_folder(registry, name, version) / file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


# --- observing -------------------------------------------------------------------------------


def audit_size(registry: Any) -> int:
    return registry.audit.tree_size()


def alias_moves(registry: Any, name: str, alias: str = "production") -> list[tuple[Any, ...]]:
    """Every recorded move of ``name@alias``: (from, to, via)."""
    from sqlalchemy import select

    from assay.store.models import AliasMove

    with registry.store.session(readonly=True) as session:
        rows = session.scalars(
            select(AliasMove)
            .where(AliasMove.model_name == name, AliasMove.alias == alias)
            .order_by(AliasMove.id)
        )
        return [(r.from_version, r.to_version, r.via) for r in rows]


def states(registry: Any) -> dict[str, str]:
    """``kind:name/version -> state`` for every artifact in the store."""
    from sqlalchemy import select

    from assay.store.models import Artifact, ArtifactState

    with registry.store.session(readonly=True) as session:
        rows = session.execute(
            select(Artifact.kind, Artifact.name, Artifact.version, ArtifactState.state).join(
                ArtifactState, ArtifactState.artifact_id == Artifact.id, isouter=True
            )
        ).all()
    return {f"{k}:{n}/{v}": s or "registered" for k, n, v, s in rows}


def state_of(registry: Any, name: str, version: str, kind: str = "model") -> str:
    return states(registry)[f"{kind}:{name}/{version}"]


def frozen(registry: Any) -> set[str]:
    from sqlalchemy import select

    from assay.store.models import Freeze

    with registry.store.session(readonly=True) as session:
        return set(session.scalars(select(Freeze.model_name)))


def registry_state(registry: Any, models: list[str]) -> dict[str, Any]:
    """Everything an incident may change, free of ids and timestamps.

    Aliases and the ``assay.state`` version tags are read from MLflow itself.
    """
    from sqlalchemy import select

    from assay.store.models import AliasMove, Artifact, Key, Lineage

    backend = registry.backend
    with registry.store.session(readonly=True) as session:
        names = {a.id: f"{a.kind}:{a.name}/{a.version}" for a in session.scalars(select(Artifact))}
        lineage = sorted(
            (names[c], names[p], kind)
            for c, p, kind in session.execute(
                select(Lineage.child_id, Lineage.parent_id, Lineage.relation)
            )
        )
        moves = sorted(
            (
                (m.model_name, m.alias, m.from_version, m.to_version, m.via)
                for m in session.scalars(select(AliasMove))
            ),
            key=repr,
        )
        keys = sorted(
            (k.key_id, k.revoked_at is not None, str(k.compromised_since))
            for k in session.scalars(select(Key))
        )
    tags = {}
    for name in models:
        for v in backend.list_versions(name):
            tags[f"{name}/{v.version}"] = (v.tags or {}).get("assay.state")
    return {
        "aliases": {name: backend.aliases(name) for name in models},
        "tags": tags,
        "states": states(registry),
        "lineage": lineage,
        "frozen": sorted(frozen(registry)),
        "alias_moves": moves,
        "keys": keys,
    }


#: The incident's own bookkeeping: when it was opened, which steps ran and its status. A crash
#: changes how often the engine says "running" or "resumed", not what was done to the registry.
BOOKKEEPING = ("incident.open", "incident.status", "incident.step")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def semantic_audit(registry: Any, *, since: int = 0) -> Counter[tuple[str, str, str]]:
    """The audit log's meaning: the multiset of (action, subject, payload).

    Normalised: the incident id (random per run) becomes ``<incident>``, a rollback's id
    ``<id>``, timestamps ``<time>``; payloads stay otherwise, so a second ``rollback.intent`` or a
    state change recorded twice, or with a different reason, shows. Left out: ``incident.*``
    bookkeeping (a resumed run legitimately has its own open/status/step history: those are
    checked separately, as "every step finished once").
    """
    incident_ids = {
        e.subject.removeprefix("incident:")
        for e in registry.audit.events(since)
        if e.action == "incident.open"
    }
    out: Counter[tuple[str, str, str]] = Counter()
    for e in registry.audit.events(since):
        if e.action in BOOKKEEPING:
            continue
        payload = e.payload_dict
        if isinstance(payload, dict) and "id" in payload and e.action.startswith("rollback."):
            payload = {**payload, "id": "<id>"}
        text = json.dumps(payload, sort_keys=True)
        for iid in incident_ids:
            text = text.replace(iid, "<incident>")
        text = _ISO.sub("<time>", text)
        out[(e.action, e.subject, text)] += 1
    return out


def step_records(registry: Any, incident_id: str) -> dict[tuple[str, Any], str]:
    from assay.incident.service import show

    _, steps = show(registry, incident_id)
    return {(s.step_id, s.item_index): s.status for s in steps}


def audit_verify(home: Path) -> None:
    """`assay audit verify` on ``home`` passes (in-process: the log, its chain and checkpoints)."""
    report = open_registry(home).audit_verify()
    assert report.ok, report


def incident_id_of(result: subprocess.CompletedProcess[str]) -> str:
    data = json.loads(result.stdout)
    return data["incident_id"]


def last_incident(registry: Any) -> Any:
    from assay.incident.service import list_incidents

    incidents = list_incidents(registry)
    return incidents[-1] if incidents else None
