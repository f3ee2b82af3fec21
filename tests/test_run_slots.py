"""A warm worker's slots: which offered run takes which slot, uploads before backfills."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anyio

from deployments.worker.slots import RunSlots
from tasks.table import BACKFILL_CONTROL_TAG, BACKFILL_TAG


def offer(*tags: str) -> Any:
    """What the worker's poll hands ``choose``: a flow run (id, tags) in a response."""
    return SimpleNamespace(flow_run=SimpleNamespace(id=uuid.uuid4(), tags=list(tags)))


def take(slots: RunSlots, *offered: Any) -> Any:
    [chosen] = slots.choose(offered) or [None]
    if chosen is not None:
        slots.acquire_on_behalf_of_nowait(chosen.flow_run.id)
    return chosen


def in_event_loop(test: Callable[[], None]) -> Callable[[], None]:
    """The worker's limiters live in its event loop: so does the test."""

    def run() -> None:
        async def main() -> None:
            test()

        anyio.run(main)

    run.__name__ = test.__name__
    return run


UPLOAD = ("job-generate-thumbnails",)
BACKFILL = ("job-generate-thumbnails", BACKFILL_TAG)
PROVIDER_BACKFILL = ("job-transcribe-audio", BACKFILL_TAG)


@in_event_loop
def test_an_upload_takes_the_slot_a_backfill_waits_for():
    slots = RunSlots(cpu=2, provider=4)
    upload, backfill = offer(*UPLOAD), offer(*BACKFILL)
    assert take(slots, upload, backfill) is upload  # offered first: its queue is higher


@in_event_loop
def test_a_backfill_leaves_one_slot_free_and_waits_while_an_upload_runs():
    slots = RunSlots(cpu=2, provider=4)
    first = take(slots, offer(*BACKFILL))
    assert first is not None
    assert take(slots, offer(*BACKFILL)) is None  # the last CPU slot stays for an upload
    upload = take(slots, offer(*UPLOAD))
    assert upload is not None
    slots.release_on_behalf_of(first.flow_run.id)
    assert take(slots, offer(*BACKFILL)) is None  # an upload runs here: the backfill waits
    slots.release_on_behalf_of(upload.flow_run.id)
    assert take(slots, offer(*BACKFILL)) is not None


@in_event_loop
def test_a_backfills_own_run_does_not_hold_back_its_media_runs():
    slots = RunSlots(cpu=2, provider=4)
    control = take(slots, offer(BACKFILL_CONTROL_TAG))
    assert control is not None and slots.provider.borrowed_tokens == 1  # it only waits
    assert take(slots, offer(*PROVIDER_BACKFILL)) is not None  # not taken for an upload


@in_event_loop
def test_a_worker_with_one_slot_still_runs_backfills():
    slots = RunSlots(cpu=1, provider=1)
    assert take(slots, offer(*BACKFILL)) is not None
