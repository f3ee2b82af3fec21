"""Provider rate limits as Prefect global concurrency limits with slot decay.

One limit per provider (``openai``, ``gemini``), one slot per API call, N calls a minute
across all workers. Limits are used strictly: a missing limit is created on first use
(and by ``media-pipeline setup``), never silently ignored.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import rate_limit
from prefect.exceptions import ObjectNotFound

from media_pipeline.settings import get_settings


def calls_per_minute() -> dict[str, int]:
    orchestration = get_settings().orchestration
    return {
        "openai": orchestration.openai_calls_per_minute,
        "gemini": orchestration.gemini_calls_per_minute,
    }


def ensure_rate_limits() -> dict[str, int]:
    """Create or update every provider's limit; returns {name: calls per minute}."""
    limits = calls_per_minute()
    with get_client(sync_client=True) as client:
        for name, per_minute in limits.items():
            decay = per_minute / 60
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=per_minute, slot_decay_per_second=decay
                    )
                )
            else:
                client.update_global_concurrency_limit(
                    name,
                    GlobalConcurrencyLimitUpdate(limit=per_minute, slot_decay_per_second=decay),
                )
    return limits


def acquire_call_slot(provider: str) -> None:
    """Wait for one call slot of ``provider``'s rate limit."""
    try:
        rate_limit(provider, occupy=1, strict=True)
    except ConcurrencySlotAcquisitionError:
        ensure_rate_limits()
        rate_limit(provider, occupy=1, strict=True)
