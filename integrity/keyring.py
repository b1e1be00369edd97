"""The on-disk keyring under ``$ASSAY_HOME/keys``.

Layout, one key per key id::

    keys/            (0700)
      <key_id>.key.pem   private key, PKCS#8 PEM, mode 0600, optionally passphrase-encrypted
      <key_id>.pub.pem   public key
      <key_id>.json      {"key_id", "name", "key_type", "created_at"}
      default            the default key's id

Private key files are written to a 0600 temp file and linked into place (create-only,
``assay.core.atomic``), so they are never world-readable, even briefly, and never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from assay.core.atomic import atomic_write, write_new_file
from assay.core.errors import AssayError, ConfigError, FormatError, NotFoundError, RefusedError
from assay.integrity.keys import (
    DEFAULT_KEY_TYPE,
    PublicKey,
    SigningKey,
    generate_key,
    load_private_pem,
)

if TYPE_CHECKING:
    from assay.core.settings import Settings

__all__ = ["KeyInfo", "Keyring", "resolve_signing_key"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
MIN_PREFIX = 8


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    key_type: str
    created_at: str
    has_private: bool
    path: Path  # the private key file if present, else the public one

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` and write ``data``; never overwrites."""
    write_new_file(path, data, mode, error=RefusedError, what="a key file")


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.endswith(".pem") or ref.startswith("~")


class Keyring:
    """Keys stored in one folder."""

    def __init__(self, keys_dir: str | os.PathLike[str]) -> None:
        self.keys_dir = Path(keys_dir)

    # -- storage ---------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)

    def _private_path(self, key_id: str) -> Path:
        return self.keys_dir / f"{key_id}.key.pem"

    def _public_path(self, key_id: str) -> Path:
        return self.keys_dir / f"{key_id}.pub.pem"

    def _meta_path(self, key_id: str) -> Path:
        return self.keys_dir / f"{key_id}.json"

    def _read_meta(self, meta_path: Path) -> KeyInfo | None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            key_id = meta["key_id"]
            priv = self._private_path(key_id)
            has_private = priv.exists()
            return KeyInfo(
                key_id=key_id,
                name=meta["name"],
                key_type=meta["key_type"],
                created_at=meta["created_at"],
                has_private=has_private,
                path=priv if has_private else self._public_path(key_id),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _add(self, name: str, public_key: PublicKey, private_pem: bytes | None) -> KeyInfo:
        if not _NAME_RE.match(name):
            raise AssayError(
                f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (max 64)"
            )
        self._ensure_dir()
        existing = self.list()
        if any(k.name == name for k in existing):
            raise RefusedError(f"a key named {name!r} already exists in {self.keys_dir}")
        if any(k.key_id == public_key.key_id for k in existing):
            raise RefusedError(f"key {public_key.key_id[:16]} is already in {self.keys_dir}")
        if private_pem is not None:
            _write_new(self._private_path(public_key.key_id), private_pem, 0o600)
        _write_new(self._public_path(public_key.key_id), public_key.pem_bytes, 0o644)
        info = {
            "key_id": public_key.key_id,
            "name": name,
            "key_type": public_key.key_type,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _write_new(
            self._meta_path(public_key.key_id),
            (json.dumps(info, indent=2) + "\n").encode(),
            0o644,
        )
        if private_pem is not None and self._default_id() is None:
            self.set_default(public_key.key_id)
        result = self._read_meta(self._meta_path(public_key.key_id))
        assert result is not None
        return result

    # -- public API ------------------------------------------------------------------------
    def generate(
        self, name: str, key_type: str = DEFAULT_KEY_TYPE, passphrase: str | None = None
    ) -> KeyInfo:
        """Create a new key pair named ``name``; the first one becomes the default."""
        key = generate_key(key_type)
        return self._add(name, key.public_key, key.private_pem(passphrase))

    def import_private(
        self, name: str, pem: bytes, passphrase: str | None = None, *, source: str = "key"
    ) -> KeyInfo:
        """Add an existing private key (stored as given, encrypted or not)."""
        key = load_private_pem(pem, passphrase, source=source)
        return self._add(name, key.public_key, bytes(pem))

    def import_public(self, name: str, pem: str | bytes) -> KeyInfo:
        """Add a public key only (for verification)."""
        return self._add(name, PublicKey.from_pem(pem), None)

    def list(self) -> list[KeyInfo]:
        if not self.keys_dir.is_dir():
            return []
        infos = [self._read_meta(p) for p in sorted(self.keys_dir.glob("*.json"))]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.created_at, i.name))

    def _default_id(self) -> str | None:
        try:
            text = (self.keys_dir / "default").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None

    def remove(self, key_id: str) -> None:
        """Delete a key's files (used to undo a generation whose recording failed)."""
        for path in (
            self._private_path(key_id),
            self._public_path(key_id),
            self._meta_path(key_id),
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._default_id() == key_id:
            with contextlib.suppress(FileNotFoundError):
                (self.keys_dir / "default").unlink()

    def set_default(self, ref: str) -> KeyInfo:
        info = self.find(ref)
        if not info.has_private:
            raise RefusedError(f"key {info.name} has no private key; it cannot be the default")
        self._ensure_dir()
        atomic_write(self.keys_dir / "default", (info.key_id + "\n").encode(), mode=0o600)
        return info

    def default_key(self) -> KeyInfo | None:
        """The default signing key, or None when the keyring has none."""
        key_id = self._default_id()
        if key_id is None:
            return None
        return self._read_meta(self._meta_path(key_id))

    def find(self, ref: str) -> KeyInfo:
        """A key by id, unique id prefix (>= 8 hex chars) or name. NotFoundError otherwise."""
        keys = self.list()
        ref_l = ref.strip().lower()
        for k in keys:
            if k.key_id == ref_l:
                return k
        by_name = [k for k in keys if k.name == ref.strip()]
        if by_name:
            return by_name[0]
        if len(ref_l) >= MIN_PREFIX and _HEX_RE.match(ref_l):
            matches = [k for k in keys if k.key_id.startswith(ref_l)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AssayError(f"key id prefix {ref} is ambiguous: give more characters")
        raise NotFoundError(f"no key {ref!r} in keyring {self.keys_dir}")

    def load_signing_key(self, ref: str | None = None, passphrase: str | None = None) -> SigningKey:
        """The private key named by ``ref`` (id, id prefix, name or PEM path; None: default)."""
        if ref is None:
            info = self.default_key()
            if info is None:
                raise ConfigError(
                    f"no default signing key in {self.keys_dir}: generate one or set ASSAY_KEY"
                )
        elif _looks_like_path(ref) and Path(ref).expanduser().is_file():
            return _load_key_file(Path(ref).expanduser(), passphrase)
        else:
            info = self.find(ref)
        if not info.has_private:
            raise NotFoundError(f"key {info.name} ({info.key_id[:16]}) has no private key here")
        return _load_key_file(info.path, passphrase)

    def public_key(self, ref: str) -> PublicKey:
        if _looks_like_path(ref) and Path(ref).expanduser().is_file():
            return _public_from_file(Path(ref).expanduser())
        info = self.find(ref)
        return _public_from_file(self._public_path(info.key_id))

    def public_pem(self, ref: str) -> str:
        return self.public_key(ref).pem


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise AssayError(f"cannot read key file {path}: {exc.strerror or exc}") from exc


def _load_key_file(path: Path, passphrase: str | None) -> SigningKey:
    return load_private_pem(_read(path), passphrase, source=str(path))


def _public_from_file(path: Path) -> PublicKey:
    data = _read(path)
    if b"PRIVATE KEY-----" in data:
        raise FormatError(f"{path} holds a private key; give the public key")
    try:
        return PublicKey.from_pem(data)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def resolve_signing_key(settings: Settings, ref: str | None = None) -> SigningKey:
    """The key to sign with: explicit ``ref`` > ``ASSAY_KEY`` (PEM or path) > keyring default."""
    keyring = Keyring(settings.keys_dir)
    passphrase = settings.key_passphrase
    if ref:
        return keyring.load_signing_key(ref, passphrase)
    if settings.key:
        value = settings.key
        if "-----BEGIN" in value:
            return load_private_pem(value.encode("utf-8"), passphrase, source="ASSAY_KEY")
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"ASSAY_KEY is neither PEM text nor an existing file: {value}")
        return _load_key_file(path, passphrase)
    return keyring.load_signing_key(None, passphrase)
