"""The queues' counts: the seed's getQueueStats.

GET /api/queues/stats   -> per queue (high, normal, low, backfill) and ``all``
"""

from __future__ import annotations

from fastapi import APIRouter

from deployments.api.camel import Camel
from deployments.api.links import IngestDep
from deployments.operations.client_api import get_queue_stats


class QueueStats(Camel):
    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    delayed: int = 0
    total: int = 0
    paused: bool = False
    oldest_waiting_seconds: float = 0.0


def queues_router() -> APIRouter:
    router = APIRouter(prefix="/api/queues", tags=["queues"])

    @router.get("/stats")
    def queue_stats(ingest: IngestDep) -> dict[str, QueueStats]:
        """The seed's getQueueStats, per queue and ``all``."""
        return {
            queue: QueueStats.model_validate(counts)
            for queue, counts in get_queue_stats(ingest.prefect).items()
        }

    return router
