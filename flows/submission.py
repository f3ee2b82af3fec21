"""Creating a media's flow runs on the deployments: one per priority tier it needs.

Idempotent, also under concurrency: the job rows are planned under the media's row lock,
and each tier's run has an idempotency key, so every caller gets the same run ids. The
planned rows record their run, so a run lost before it starts is found from the media's
side too (see ``deployments/reconciler.py``).
"""

from __future__ import annotations

import uuid

from prefect.deployments import run_deployment

from db.jobs import assign_runs, plan_jobs
from db.session import transaction
from flows.sources import load_source
from media_pipeline.settings import get_settings
from tasks.table import JOB_TABLE

FLOW_NAME = "process-media"


def deployment_name(tier: str) -> str:
    return f"{FLOW_NAME}/media-{tier}"


def run_name(media_id: str, tier: str | None) -> str:
    """``media · <8 characters of the media id> · <tier>``, at creation and at start."""
    return f"media · {media_id[:8]} · {tier or 'all'}"


def submit_media(media_id: str, reprocess: bool = False) -> list[str]:
    """Create the media's flow runs (one per priority tier) and return their ids at once.

    Calling it again returns the same runs, unless ``reprocess`` asks for new ones.
    """
    source = load_source(media_id)
    categories = get_settings().gemini.enhancement_categories
    wanted = JOB_TABLE.select(source, categories)
    transaction(
        lambda session: plan_jobs(
            session, source.media_id, [job.name for job in wanted], reset=reprocess
        )
    )
    generation = uuid.uuid4().hex[:8] if reprocess else "first"
    runs: dict[str, str] = {}
    for tier in JOB_TABLE.tiers_for(source, categories):
        # Named and tagged at creation, so that a run waiting in a queue can be found by
        # its media, its alert or its jobs in the UI's search.
        run = run_deployment(
            deployment_name(tier),
            parameters={"media_id": str(source.media_id), "tier": tier},
            flow_run_name=run_name(str(source.media_id), tier),
            timeout=0,
            idempotency_key=f"{source.media_id}:{tier}:{generation}",
            tags=[
                f"media-{source.media_id}",
                f"alert-{source.alert_id}",
                f"type-{source.type.value.lower()}",
                f"category-{source.category.lower()}",
                f"tier-{tier}",
                *(f"job-{job.name}" for job in wanted if job.queue == tier),
            ],
            as_subflow=False,
        )
        runs[tier] = str(run.id)
    by_job = {job.name: runs[job.queue] for job in wanted}
    transaction(lambda session: assign_runs(session, source.media_id, by_job))
    return list(runs.values())
