"""The queue board: Bull Board's counts for operators, in the Prefect UI and from ``stats``.

Per priority queue (and the backfill queue below them): waiting (due, or claimed and not
started), active, completed and failed (in a window), delayed (scheduled later), total,
whether the queue is paused, and the age of its oldest waiting run; the same per job and per
media type (runs are tagged with both at creation); the newest backfills and their counts;
and the newest failures with their reason; and the outbox's depth (the accepted uploads whose
runs are not created yet). ``all`` is the sum of the queues. Warm workers
publish it as the Markdown artifact ``queue-board`` every ``MEDIA_PIPELINE_BOARD_SECONDS``;
``media-pipeline stats`` prints the same numbers.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterTags,
    FlowRunFilterWorkQueueName,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from db.outbox import outbox_depth
from db.session import session_scope
from deployments.operations.failures import FAILED_STATES, failed_runs, state_filter
from flows.submission import FLOW_NAME
from media_pipeline.enums import MediaType
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_QUEUE, JOB_TABLE, tiers

COUNTS = ("waiting", "active", "completed", "failed", "delayed", "total")
BACKFILL_COUNTS = ("selected", "submitted", "done", "failed", "skipped", "estimated_cost")
BOARD_KEY = "queue-board"


class Counter:
    """Counts the pipeline's flow runs matching a queue or tags."""

    def __init__(self, client: SyncPrefectClient, moment: datetime) -> None:
        self.client, self.moment = client, moment

    def count(self, scope: dict[str, Any], **filters: Any) -> int:
        return self.client.count_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(**scope, **filters),
        )

    def counts(self, scope: dict[str, Any], since: datetime | None) -> dict[str, int]:
        ended = {"end_time": FlowRunFilterEndTime(after_=since)} if since else {}
        later = FlowRunFilterNextScheduledStartTime(after_=self.moment)
        delayed = self.count(
            scope, state=state_filter(StateType.SCHEDULED), next_scheduled_start_time=later
        )
        scheduled = self.count(scope, state=state_filter(StateType.SCHEDULED))
        claimed = self.count(scope, state=state_filter(StateType.PENDING))
        return {
            "waiting": scheduled - delayed + claimed,
            "active": self.count(scope, state=state_filter(StateType.RUNNING)),
            "completed": self.count(scope, state=state_filter(StateType.COMPLETED), **ended),
            "failed": self.count(scope, state=state_filter(*FAILED_STATES), **ended),
            "delayed": delayed,
            "total": self.count(scope),
        }

    def oldest_waiting_seconds(self, scope: dict[str, Any]) -> float:
        runs = self.client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(**scope, state=state_filter(StateType.SCHEDULED)),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
        due = runs[0].expected_start_time if runs else None
        return round((self.moment - due).total_seconds(), 1) if due and due < self.moment else 0.0


def queue_stats(client: SyncPrefectClient, since: datetime | None = None) -> dict[str, Any]:
    """Per queue (and ``all``, their sum): the counts, paused, oldest waiting age."""
    counter = Counter(client, datetime.now(UTC))
    pool = get_settings().orchestration.work_pool
    try:
        paused = {q.name: q.is_paused for q in client.read_work_queues(work_pool_name=pool)}
    except ObjectNotFound:  # no work pool yet (nothing set up or processed): none paused
        paused = {}
    stats: dict[str, Any] = {}
    queues = [*tiers(), BACKFILL_QUEUE]
    for queue in queues:
        scope = {"work_queue_name": FlowRunFilterWorkQueueName(any_=[queue])}
        stats[queue] = {
            **counter.counts(scope, since),
            "paused": paused.get(queue, False),
            "oldest_waiting_seconds": counter.oldest_waiting_seconds(scope),
        }
    stats["all"] = {
        **{c: sum(stats[q][c] for q in queues) for c in COUNTS},
        "paused": any(stats[q]["paused"] for q in queues),
        "oldest_waiting_seconds": max(stats[q]["oldest_waiting_seconds"] for q in queues),
    }
    return stats


def outbox_summary() -> dict[str, Any]:
    """The planned runs no relay has created yet (from the app database alone: it is what
    operators watch while Prefect is away)."""
    with session_scope() as session:
        depth = outbox_depth(session)
    return {
        "runs": depth.runs,
        "oldest_seconds": round(depth.age_seconds(datetime.now(UTC)), 1),
        "failing": depth.failing,
        "last_error": get_settings().redact(depth.last_error) if depth.last_error else None,
    }


def board() -> dict[str, Any]:
    """Everything the board shows, as plain values."""
    from deployments.operations.backfill import list_backfills

    moment = datetime.now(UTC)
    outbox = outbox_summary()
    with get_client(sync_client=True) as client:
        counter = Counter(client, moment)
        day = moment - timedelta(days=1)
        tagged = {f"job {job.name}": f"job-{job.name}" for job in JOB_TABLE}
        tagged |= {f"type {t.value}": f"type-{t.value.lower()}" for t in MediaType}
        return {
            "generated_at": moment.isoformat(timespec="seconds"),
            "outbox": outbox,
            "last_hour": queue_stats(client, moment - timedelta(hours=1)),
            "last_day": queue_stats(client, day),
            "by_job_and_type_last_day": {
                name: counter.counts({"tags": FlowRunFilterTags(all_=[tag])}, day)
                for name, tag in tagged.items()
            },
            "backfills": [
                {
                    "id": b["id"],
                    "job": b["job"],
                    "selection": b["selection"],
                    "status": b["status"],
                    **b["counts"],
                }
                for b in list_backfills(limit=10)
            ],
            "newest_failures": [
                {
                    "when": r.when.isoformat(timespec="seconds") if r.when else None,
                    "media": r.media_id,
                    "type": r.media_type,
                    "tier": r.tier,
                    "jobs": list(r.jobs),
                    "state": r.state,
                    "reason": r.message,
                    "run": r.id,
                }
                for r in failed_runs(since=timedelta(days=1), limit=10)
            ],
        }


def outbox_line(outbox: dict[str, Any]) -> str:
    line = (
        f"Outbox: {outbox['runs']} planned runs not created yet, the oldest "
        f"{outbox['oldest_seconds']:.0f} s old"
    )
    if not outbox["failing"]:
        return line
    why = (outbox.get("last_error") or "").splitlines()[:1]
    return f"{line}; {outbox['failing']} failed to be created so far" + (
        f", the oldest because: {why[0][:200]}" if why else ""
    )


def board_markdown(content: dict[str, Any]) -> str:
    lines = [
        f"# Queue board ({content['generated_at']} UTC)",
        "",
        outbox_line(content["outbox"]),
        "",
    ]
    for window, title in (("last_hour", "last hour"), ("last_day", "last day")):
        lines += [
            f"## Queues, {title}",
            "",
            "| queue | waiting | active | completed | failed | delayed | total | paused "
            "| oldest waiting |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for queue, row in content[window].items():
            cells = [str(row[c]) for c in COUNTS]
            paused = "**paused**" if row["paused"] else "no"
            lines.append(
                f"| {queue} | {' | '.join(cells)} | {paused} | "
                f"{row['oldest_waiting_seconds']:.0f} s |"
            )
        lines.append("")
    lines += [
        "## Per job and media type, last day",
        "",
        "| | " + " | ".join(COUNTS) + " |",
        "|---" * (len(COUNTS) + 1) + "|",
    ]
    for name, row in content["by_job_and_type_last_day"].items():
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in COUNTS) + " |")
    lines += ["", "## Backfills", ""]
    if not content["backfills"]:
        lines.append("None.")
    else:
        lines += [
            "| backfill | job | selection | status | " + " | ".join(BACKFILL_COUNTS) + " |",
            "|---" * (4 + len(BACKFILL_COUNTS)) + "|",
        ]
    for backfill in content["backfills"]:
        cells = [str(backfill[c]) for c in ("id", "job", "selection", "status", *BACKFILL_COUNTS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Newest failures", ""]
    if not content["newest_failures"]:
        lines.append("None in the last day.")
    for failure in content["newest_failures"]:
        lines.append(
            f"- {failure['when']} · {failure['type']} {failure['media']} · "
            f"{failure['tier']} · {failure['state']}: {failure['reason']}"
        )
    return "\n".join(lines) + "\n"


def publish_queue_board() -> dict[str, Any]:
    """Refresh the ``queue-board`` artifact; returns what it shows."""
    content = board()
    with warnings.catch_warnings():
        # Published by the workers between runs, as Prefect 3.9 allows; it announces that a
        # later version will want a run around it (benchmarks/prefect_canary.py will tell).
        warnings.filterwarnings("ignore", "Artifact creation outside", FutureWarning)
        create_markdown_artifact(
            markdown=board_markdown(content),
            key=BOARD_KEY,
            description="Queues, jobs and failures of the media pipeline",
        )
    return content
