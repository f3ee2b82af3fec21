"""``media-pipeline metrics``: Prometheus metrics of the pipeline, read at each scrape.

Flow runs per queue and state and the age of the oldest waiting run come from the Prefect
API (``media_pipeline_prefect_up`` 0 while it does not answer); the outbox (planned runs not
created yet), jobs, attempts, durations, estimated cost, provider calls and the media of
unfinished backfills from the app database.
Nothing personal is exported: no file names, no alert ids, no transcript text, only
queue, job, state and provider names. ``grafana/media-pipeline.json`` charts exactly these
names (tests/test_metrics.py checks it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterWorkQueueName,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prometheus_client import start_http_server
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from db.models import ProcessingJob, ProviderCall
from db.outbox import outbox_depth
from db.session import session_scope
from deployments.operations.backfill import list_backfills
from flows.faults import is_infrastructure_fault
from flows.submission import FLOW_NAME
from media_pipeline.enums import JobState
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_QUEUE, tiers

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_STATES = (
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.COMPLETED,
    StateType.FAILED,
    StateType.CRASHED,
    StateType.CANCELLED,
)


class PipelineCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        # The app database's first: they are what operators need while Prefect is away.
        yield from self.outbox()
        yield from self.jobs()
        yield from self.backfills()
        yield from self.runs()

    def outbox(self) -> Iterator[Metric]:
        with session_scope() as session:
            depth = outbox_depth(session)
        yield GaugeMetricFamily(
            "media_pipeline_outbox_runs",
            "Planned flow runs a relay has not created yet (accepted uploads waiting)",
            value=depth.runs,
        )
        yield GaugeMetricFamily(
            "media_pipeline_outbox_oldest_seconds",
            "Age of the oldest of them (0: none)",
            value=depth.age_seconds(datetime.now(UTC)),
        )
        yield GaugeMetricFamily(
            "media_pipeline_outbox_failing_runs",
            "Of them, those whose last attempt failed (Prefect away, say)",
            value=depth.failing,
        )

    def backfills(self) -> Iterator[Metric]:
        media = GaugeMetricFamily(
            "media_pipeline_backfill_media",
            "Media of unfinished backfills, by state",
            labels=["backfill", "job", "state"],
        )
        cost = GaugeMetricFamily(
            "media_pipeline_backfill_estimated_cost_usd",
            "Estimated provider cost of an unfinished backfill so far",
            labels=["backfill", "job"],
        )
        for backfill in list_backfills(limit=50):
            if backfill["status"] in ("DONE", "CANCELLED", "FAILED"):
                continue
            counts = backfill["counts"]
            for state in ("selected", "submitted", "done", "failed", "skipped"):
                media.add_metric([backfill["id"], backfill["job"], state], counts[state])
            cost.add_metric([backfill["id"], backfill["job"]], counts["estimated_cost"])
        yield from (media, cost)

    def runs(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "media_pipeline_prefect_up", "1 when the Prefect API answered this scrape"
        )
        try:
            families = list(self.flow_runs())
        except Exception as error:
            if not is_infrastructure_fault(error):
                raise
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def flow_runs(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "media_pipeline_flow_runs", "Flow runs of the pipeline", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "media_pipeline_oldest_waiting_seconds",
            "Age of the oldest run due and waiting in the queue (0: none)",
            labels=["queue"],
        )
        moment = datetime.now(UTC)
        with get_client(sync_client=True) as client:
            for queue in [*tiers(), BACKFILL_QUEUE]:
                for state in RUN_STATES:
                    count = client.count_flow_runs(
                        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                        flow_run_filter=run_filter(queue, state),
                    )
                    runs.add_metric([queue, state.value.lower()], count)
                waiting = client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                    flow_run_filter=run_filter(queue, StateType.SCHEDULED),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=1,
                )
                due = waiting[0].expected_start_time if waiting else None
                age = (moment - due).total_seconds() if due and due < moment else 0.0
                oldest.add_metric([queue], age)
        yield runs
        yield oldest

    def jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "media_pipeline_jobs", "Jobs by job and state", labels=["job", "state"]
        )
        attempts = CounterMetricFamily(
            "media_pipeline_job_attempts", "Attempts made", labels=["job"]
        )
        cost = CounterMetricFamily(
            "media_pipeline_estimated_cost_usd",
            "Estimated provider cost of finished jobs",
            labels=["job"],
        )
        calls = GaugeMetricFamily(
            "media_pipeline_provider_calls_in_window",
            "Provider calls counting against the rate limit now",
            labels=["provider"],
        )
        waits = GaugeMetricFamily(
            "media_pipeline_rate_limit_wait_seconds_in_window",
            "Seconds those calls waited for their slot, in all",
            labels=["provider"],
        )
        durations = HistogramMetricFamily(
            "media_pipeline_job_duration_seconds",
            "Time from a job's first attempt to its end",
            labels=["job"],
        )
        with session_scope() as session:
            for job, state, count, tries, spent in session.execute(
                select(
                    ProcessingJob.job,
                    ProcessingJob.state,
                    func.count(),
                    func.sum(ProcessingJob.attempts),
                    func.sum(ProcessingJob.estimated_cost),
                ).group_by(ProcessingJob.job, ProcessingJob.state)
            ):
                jobs.add_metric([job, state.value.lower()], count)
                attempts.add_metric([job], tries or 0)
                cost.add_metric([job], spent or 0.0)
            window = timedelta(seconds=get_settings().orchestration.rate_window_seconds)
            for provider, count, waited in session.execute(
                select(ProviderCall.provider, func.count(), func.sum(ProviderCall.waited_seconds))
                .where(ProviderCall.called_at > datetime.now(UTC) - window)
                .group_by(ProviderCall.provider)
            ):
                calls.add_metric([provider], count)
                waits.add_metric([provider], waited or 0.0)
            spans: dict[str, list[float]] = {}
            for job, started, finished in session.execute(
                select(
                    ProcessingJob.job, ProcessingJob.started_at, ProcessingJob.finished_at
                ).where(
                    ProcessingJob.state.in_([JobState.SUCCEEDED, JobState.FAILED]),
                    ProcessingJob.started_at.is_not(None),
                    ProcessingJob.finished_at.is_not(None),
                )
            ):
                spans.setdefault(job, []).append((finished - started).total_seconds())
        for job, values in sorted(spans.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in DURATION_BUCKETS]
            durations.add_metric([job], [*buckets, ("+Inf", len(values))], sum(values))
        yield from (jobs, attempts, cost, calls, waits, durations)


def run_filter(queue: str, state: StateType) -> FlowRunFilter:
    return FlowRunFilter(
        work_queue_name=FlowRunFilterWorkQueueName(any_=[queue]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])),
    )


def serve(host: str, port: int) -> None:
    """Serve ``/metrics`` until interrupted."""
    REGISTRY.register(PipelineCollector())
    start_http_server(port, addr=host)
    while True:
        time.sleep(3600)
