"""Provider rate limits: at most N calls a minute per provider, in any 60-second window,
across every worker.

One limit per provider (``openai``, ``gemini``), one slot per API call (a chunked
transcription takes one per chunk). The window is kept in the app database, which every
worker shares (``db.repository.claim_provider_call``). Prefect's global concurrency limits
were the first choice, but their slot decay is a token bucket (``limit`` calls at once,
then one per 1/decay seconds: about 19 calls in the first minute for "10 a minute"), and
a slot held by a lease is lost for good when the lease storage restarts empty.
"""

from __future__ import annotations

import time
from datetime import timedelta

from db.provider_calls import claim_provider_call
from db.session import transaction
from media_pipeline.settings import get_settings


def calls_per_minute() -> dict[str, int]:
    orchestration = get_settings().orchestration
    return {
        "openai": orchestration.openai_calls_per_minute,
        "gemini": orchestration.gemini_calls_per_minute,
    }


def backfill_reserve(limit: int) -> int:
    """Calls of each window that a backfill leaves to uploads: a fifth, at least one."""
    return max(1, limit // 5) if limit > 1 else 0


def acquire_call_slot(provider: str, backfill: bool = False) -> float:
    """Wait until ``provider`` may be called again, and claim that call; a ``backfill``'s
    call leaves ``backfill_reserve`` calls of the window to uploads. Returns the seconds
    waited."""
    limit = calls_per_minute()[provider]
    reserve = backfill_reserve(limit) if backfill else 0
    seconds = get_settings().orchestration.rate_window_seconds
    # A call reaches the provider a little after its slot is claimed, and the first call
    # of a process later than the next (its client is new): the window is kept a bit
    # longer than the provider's so that it holds on the provider's side too.
    window = timedelta(seconds=seconds + min(1.0, max(0.25, seconds / 50)))
    began = time.monotonic()
    while wait := transaction(
        lambda session: claim_provider_call(
            session, provider, limit, window, time.monotonic() - began, reserve
        )
    ):
        time.sleep(wait)
    return time.monotonic() - began
