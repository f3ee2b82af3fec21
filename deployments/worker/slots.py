"""A warm worker's slots: CPU work apart from runs that only wait on a provider.

A transcription or an enhancement spends its run waiting for OpenAI or Gemini. Were those
runs to take the worker's CPU slots, a slow provider (130 s an answer) would hold them all
and every thumbnail would wait behind it. Runs whose jobs all call a provider (read from
the ``job-<name>`` tags every submitted run carries) take slots of their own,
``worker_provider_limit`` of them, beside the ``--limit`` CPU slots; so does a backfill's
own run, which only waits for its media's runs. A backfill's media runs leave one slot of
their kind to uploads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from tasks.table import BACKFILL_CONTROL_TAG, BACKFILL_TAG, JOB_TABLE

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import WorkerFlowRunResponse

PROVIDER_JOBS = frozenset(job.name for job in JOB_TABLE if job.provider)


def waits_on_providers(run: FlowRun) -> bool:
    """The run only waits: on a provider (all its jobs call one), or on other runs (a
    backfill's own run)."""
    if BACKFILL_CONTROL_TAG in run.tags:
        return True
    jobs = {tag.removeprefix("job-") for tag in run.tags if tag.startswith("job-")}
    return bool(jobs) and jobs <= PROVIDER_JOBS


class RunSlots:
    """What Prefect's worker uses of its ``CapacityLimiter`` (take and free a slot for a
    flow run, count them), over two limiters. ``choose`` picks the run and its kind of
    slot; the worker then takes the slot as it would take its one limiter's."""

    def __init__(self, cpu: int, provider: int) -> None:
        self.cpu = anyio.CapacityLimiter(cpu)
        self.provider = anyio.CapacityLimiter(provider)
        self._holder: dict[uuid.UUID, anyio.CapacityLimiter] = {}
        self._backfill: set[uuid.UUID] = set()  # held runs of backfills, their own included

    def choose(self, offered: Sequence[WorkerFlowRunResponse]) -> list[WorkerFlowRunResponse]:
        """The first run, in the order offered (priority), whose kind of slot is free. A
        backfill's run (offered last: its queue is the lowest) only while no upload's run
        of its kind runs here, and a slot of its kind stays free for one that comes."""
        for entry in offered:
            run = entry.flow_run
            limiter = self.provider if waits_on_providers(run) else self.cpu
            free = limiter.available_tokens >= 1
            if free and not (BACKFILL_TAG in run.tags and self.kept_for_uploads(limiter)):
                self._holder[run.id] = limiter
                if {BACKFILL_TAG, BACKFILL_CONTROL_TAG} & set(run.tags):
                    self._backfill.add(run.id)
                return [entry]
        return []

    def kept_for_uploads(self, limiter: anyio.CapacityLimiter) -> bool:
        """Whether a backfill's run must leave this kind of slot alone: an upload's run
        holds one, or a single one is left of several (kept for an upload that comes)."""
        uploads = [
            r for r, held in self._holder.items() if held is limiter and r not in self._backfill
        ]
        return bool(uploads) or (limiter.total_tokens > 1 and limiter.available_tokens < 2)

    def acquire_on_behalf_of_nowait(self, run_id: uuid.UUID) -> None:
        self._holder.get(run_id, self.cpu).acquire_on_behalf_of_nowait(run_id)

    def release_on_behalf_of(self, run_id: uuid.UUID) -> None:
        self._backfill.discard(run_id)
        self._holder.pop(run_id, self.cpu).release_on_behalf_of(run_id)

    @property
    def borrowed_tokens(self) -> float:
        return self.cpu.borrowed_tokens + self.provider.borrowed_tokens

    @property
    def available_tokens(self) -> float:
        return self.cpu.available_tokens + self.provider.available_tokens

    @property
    def total_tokens(self) -> float:
        return self.cpu.total_tokens + self.provider.total_tokens
