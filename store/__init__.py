"""assay's own database (SQLAlchemy 2: SQLite or PostgreSQL): tables, Alembic migrations, the store
and its write lock, the read-only SQLite opener of the fast read paths, and the append-only audit
log over an RFC 9162 Merkle tree.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "HEAD_REVISION": "assay.store.store",
    "Store": "assay.store.store",
    "lock_store": "assay.store.store",
    "AuditEvent": "assay.store.audit",
    "AuditLog": "assay.store.audit",
    "AuditReport": "assay.store.audit",
    "CheckpointFile": "assay.store.audit",
    "MerkleTree": "assay.store.merkle",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
