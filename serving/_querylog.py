"""The query log's reads and retention: rows per client today, pruning old rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.registry.facade import Registry

__all__ = ["prune_job", "rows_today"]


def _midnight() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def rows_today(registry: Registry, model: str) -> dict[str, int]:
    """Rows answered per client since 00:00 UTC (the daily quota's starting point)."""
    from sqlalchemy import func, select

    from assay.store.models import ServeQuery

    with registry.store.session(readonly=True) as session:
        rows = session.execute(
            select(ServeQuery.client, func.sum(ServeQuery.rows))
            .where(ServeQuery.at >= _midnight(), ServeQuery.status == 200)
            .where(ServeQuery.model_name == model)
            .group_by(ServeQuery.client)
        ).all()
    return {client: int(total or 0) for client, total in rows}


def prune_job(retention_days: int, now: datetime | None = None):
    """A writer job deleting query-log rows older than ``retention_days``."""
    from sqlalchemy import delete

    from assay.store.models import ServeQuery

    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)

    def job(session: Any) -> None:
        session.execute(delete(ServeQuery).where(ServeQuery.at < cutoff))

    return job
