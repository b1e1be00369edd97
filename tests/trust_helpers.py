"""Test helper: give a bare store (``Store.open(create=True)``, no ``assay init``) its admin key.

Import it by name (``tests`` is on pytest's ``pythonpath``)::

    from trust_helpers import bootstrap_admin
"""

from __future__ import annotations

from typing import Any


def bootstrap_admin(registry: Any, name: str = "admin") -> Any:
    """Generate the keyring's default key and make it the store's trust root (as `assay init`)."""
    from assay.integrity.keyring import resolve_signing_key

    if registry.keys.keyring.default_key() is None:
        registry.keys.keyring.generate(name, "ecdsa-p256", None)
    return registry.keys.bootstrap(resolve_signing_key(registry.settings), name)
