"""The sliding window of the external API rate limits, shared by every worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import ProviderCall, utcnow


def claim_provider_call(
    session: Session,
    provider: str,
    limit: int,
    window: timedelta = timedelta(seconds=60),
    waited: float = 0.0,
    reserve: int = 0,
) -> float:
    """Record a call to ``provider`` (that ``waited`` seconds for it) if fewer than
    ``limit - reserve`` were made in the last ``window``, and return 0; otherwise return
    the seconds until a slot frees. A caller that leaves a ``reserve`` (a backfill) never
    takes the window's last calls: they stay for uploads.

    A sliding window over every worker: calls of one provider are claimed one at a time
    (PostgreSQL: an advisory lock; SQLite: the write lock of the first statement), on the
    database's clock when it has one.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        key = func.hashtext(f"media-pipeline:provider-call:{provider}")
        session.execute(select(func.pg_advisory_xact_lock(key)))
        moment = session.scalar(select(func.clock_timestamp()))
    else:
        moment = utcnow()
    session.execute(
        delete(ProviderCall).where(
            ProviderCall.provider == provider, ProviderCall.called_at <= moment - window
        )
    )
    recent = session.scalars(
        select(ProviderCall.called_at)
        .where(ProviderCall.provider == provider)
        .order_by(ProviderCall.called_at)
    ).all()
    allowed = max(1, limit - reserve)
    if len(recent) < allowed:
        session.add(ProviderCall(provider=provider, called_at=moment, waited_seconds=waited))
        session.flush()
        return 0.0
    oldest = recent[-allowed]
    return max((oldest + window - moment).total_seconds(), 0.001)
