"""Settings read from the environment, in one place.

Environment variables (all optional):

* ``ASSAY_HOME``: assay's folder (keys, store, checkpoints); default: the platform's app folder.
* ``ASSAY_DB_URL``: SQLAlchemy URL of assay's store; default ``sqlite:///$ASSAY_HOME/assay.db``.
* ``MLFLOW_TRACKING_URI``: MLflow tracking/registry URI; default ``sqlite:///$ASSAY_HOME/mlflow.db``.
* ``ASSAY_KEY``: a private signing key for CI, as PEM text or a path to a PEM file.
* ``ASSAY_KEY_PASSPHRASE``: passphrase of encrypted private keys.
* ``ASSAY_TRUST_ROOT``: the admin key id of a shared store (read by ``assay.trust.trust_list``).
* ``ASSAY_ENFORCE``: enforcement at model load (read by ``assay.registry.enforcement``).
* ``ASSAY_ACTOR``: a display name next to the acting key's id in the audit log; default ``$USER@host``.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

ENV_VARS = {
    "ASSAY_HOME": "assay's folder (keys, store, checkpoints)",
    "ASSAY_DB_URL": "SQLAlchemy URL of assay's store (default sqlite:///$ASSAY_HOME/assay.db)",
    "MLFLOW_TRACKING_URI": "MLflow tracking URI (default sqlite:///$ASSAY_HOME/mlflow.db)",
    "ASSAY_KEY": "private signing key for CI: PEM text or a path",
    "ASSAY_KEY_PASSPHRASE": "passphrase of encrypted private keys",
    "ASSAY_TRUST_ROOT": "the store's admin key id (trust root), for a home joining a shared store",
    "ASSAY_ENFORCE": "enforcement at model load: enforce (default), warn, off",
    "ASSAY_ACTOR": "a display name recorded next to the acting key's id in the audit log",
}


def default_home() -> Path:
    """The platform's per-user application folder for assay (the folder ``click.get_app_dir``
    names, computed with the standard library so that core needs nothing else): ``%APPDATA%``
    on Windows, ``~/Library/Application Support`` on macOS, else ``$XDG_CONFIG_HOME`` or
    ``~/.config``."""
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or os.path.expanduser("~")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Application Support")
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "assay"


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Settings:
    """Where assay keeps its state and who is acting."""

    home: Path
    db_url: str
    tracking_uri: str
    key: str | None = None
    key_passphrase: str | None = field(default=None, repr=False)
    actor: str = "unknown"

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> Settings:
        env = os.environ
        root = Path(home or env.get("ASSAY_HOME") or default_home()).expanduser().resolve()
        return cls(
            home=root,
            db_url=env.get("ASSAY_DB_URL") or f"sqlite:///{root / 'assay.db'}",
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}",
            key=env.get("ASSAY_KEY") or None,
            key_passphrase=env.get("ASSAY_KEY_PASSPHRASE") or None,
            actor=env.get("ASSAY_ACTOR") or default_actor(),
        )

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"
