"""Backfill benchmark: a backfill's throughput, alone and beside uploads, and what it costs
the uploads (issue 26).

On a site of its own (PostgreSQL for the app and for Prefect, Redis, a Prefect server,
``media-pipeline setup``, two warm workers, the HTTP API), it registers photos without
thumbnails and voice notes without waveforms in two alerts, then:

1. idle: a client uploads a photo every ``--every`` seconds through the HTTP API; the time
   from its ``complete`` to its three thumbnails (p50, p95) is the baseline;
2. alone: backfills of the first alert (thumbnails and waveforms together) with nothing
   else running: media a minute;
3. beside uploads: backfills of the second alert while the client uploads as in 1: media a
   minute, the uploads' p50/p95 against 1, and the most runs of each backfill found on
   the queues at once (sampled), against ``MEDIA_PIPELINE_BACKFILL_IN_FLIGHT``. Each run
   does ``MEDIA_PIPELINE_BACKFILL_BATCH`` media, at ``MEDIA_PIPELINE_BACKFILL_PER_MINUTE``
   (set them to compare).

    .venv/bin/python benchmarks/backfill.py [--photos 1000] [--notes 200] [--every 2]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.drill_site import Site, percentile  # noqa: E402
from benchmarks.latency import (  # noqa: E402
    scratch_environment,
    tree_cpu_seconds,
    watch_thumbnails,
)

ALONE_SHARE = 0.3  # of the media, backfilled alone; the rest beside uploads
SAMPLE_SECONDS = 3.0  # how often the runs of each backfill are counted


def register(site: Site, kind: str, count: int, alert: uuid.UUID) -> list[uuid.UUID]:
    from deployments.operations.registration import register_media

    return [register_media(site.samples[kind], alert, "AUTRE").id for _ in range(count)]


class Uploader:
    """A client that uploads a photo every ``every`` seconds through the HTTP API and
    notes when each ``complete`` answered."""

    def __init__(self, site: Site, every: float) -> None:
        self.site, self.every = site, every
        self.completed: dict[uuid.UUID, float] = {}
        self.runs: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from tests.support.api import complete, upload

        client = self.site.start_api()
        while not self.stop.is_set():
            began = time.monotonic()
            media_id, path = upload(client, self.site.samples["IMAGE"], "IMAGE")
            moment = time.monotonic()
            runs = complete(client, path)
            self.completed[media_id] = moment
            self.runs += runs
            self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))

    def stages(self) -> dict[str, float]:
        """Median seconds of each stage of the uploads' runs: waiting for a worker to claim
        it, claimed until it starts, running."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType

        spans: dict[str, list[float]] = {"queued": [], "starting": [], "running": []}
        with get_client(sync_client=True) as client:
            for run_id in self.runs:
                moments = {
                    s.type: s.timestamp for s in client.read_flow_run_states(uuid.UUID(run_id))
                }
                if not {StateType.SCHEDULED, StateType.RUNNING} <= set(moments):
                    continue
                pending = moments.get(StateType.PENDING, moments[StateType.RUNNING])
                end = moments.get(StateType.COMPLETED, moments[StateType.RUNNING])
                spans["queued"].append((pending - moments[StateType.SCHEDULED]).total_seconds())
                spans["starting"].append((moments[StateType.RUNNING] - pending).total_seconds())
                spans["running"].append((end - moments[StateType.RUNNING]).total_seconds())
        return {k: statistics.median(v) for k, v in spans.items() if v}

    def latencies(self, done: dict[uuid.UUID, float], timeout: float = 120) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(self.completed) <= set(done):
            time.sleep(0.2)
        return [done[m] - t for m, t in self.completed.items() if m in done]


def queued_runs(backfill_ids: list[str]) -> dict[str, int]:
    """Runs of each backfill that exist now: waiting, claimed or running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    live = FlowRunFilterState(
        type=FlowRunFilterStateType(
            any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
        )
    )
    with get_client(sync_client=True) as client:
        return {
            b: client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=live, tags=FlowRunFilterTags(all_=["backfill", f"backfill-{b}"])
                )
            )
            for b in backfill_ids
        }


def run_backfills(alert: uuid.UUID, media: int) -> tuple[float, dict[str, int], list[dict]]:  # type: ignore[type-arg]
    """Backfill the alert's photos and voice notes; media a minute, the most runs of each
    found at once, and the backfills as they ended."""
    from deployments.operations.backfill import get_backfill, start_backfill

    began = time.monotonic()
    ids = [
        start_backfill(job, "missing", alert_id=str(alert))["id"]
        for job in ("generate-thumbnails", "generate-waveform")
    ]
    most = dict.fromkeys(ids, 0)
    ended: list[dict[str, Any]] = []
    sampled = 0.0
    while len(ended) < len(ids):
        if time.monotonic() - sampled > SAMPLE_SECONDS:  # it costs the server too
            sampled = time.monotonic()
            for backfill_id, count in queued_runs(ids).items():
                most[backfill_id] = max(most[backfill_id], count)
        ended = [b for b in map(get_backfill, ids) if b["status"] in ("DONE", "CANCELLED")]
        time.sleep(0.2)
    return media / (time.monotonic() - began) * 60, most, ended


def uploads_during(site: Site, every: float, done: dict[uuid.UUID, float], work: Any) -> tuple:  # type: ignore[type-arg]
    """Uploads every ``every`` s while ``work()`` runs; its result, the latencies, and the
    median time of each stage of the uploads' runs."""
    uploader = Uploader(site, every)
    uploader.thread.start()
    try:
        result = work()
    finally:
        uploader.stop.set()
        uploader.thread.join(60)
    return result, uploader.latencies(done), uploader.stages()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between uploads")
    parser.add_argument("--idle-uploads", type=int, default=25)
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="API processes of the Prefect server (its --workers)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started

    work = scratch_environment("backfill-")
    site = Site(work, args.server_workers)
    try:
        from db.migrate import upgrade
        from deployments.operations.setup import setup
        from media_pipeline.settings import get_settings

        upgrade()
        setup()
        for slot in range(2):
            site.start_worker(slot)
        site.start_api()
        alone, beside = uuid.uuid4(), uuid.uuid4()
        split = {"IMAGE": args.photos, "AUDIO": args.notes}
        first = {k: round(n * ALONE_SHARE) for k, n in split.items()}
        for kind, count in split.items():
            register(site, kind, first[kind], alone)
            register(site, kind, count - first[kind], beside)
        print(f"registered {args.photos} photos and {args.notes} voice notes", flush=True)

        done: dict[uuid.UUID, float] = {}
        stop = threading.Event()
        threading.Thread(target=watch_thumbnails, args=(done, stop), daemon=True).start()
        idle_seconds = args.idle_uploads * args.every
        idle_cpu = sum(tree_cpu_seconds(site.server.pid))
        _, idle, idle_stages = uploads_during(
            site, args.every, done, lambda: time.sleep(idle_seconds)
        )
        idle_cpu = (sum(tree_cpu_seconds(site.server.pid)) - idle_cpu) / max(1, len(idle))
        server_cpu = sum(tree_cpu_seconds(site.server.pid))
        rate_alone, most_alone, _ = run_backfills(alone, sum(first.values()))
        server_cpu = (sum(tree_cpu_seconds(site.server.pid)) - server_cpu) / sum(first.values())
        rest = sum(split.values()) - sum(first.values())
        (rate_beside, most_beside, ended), busy, busy_stages = uploads_during(
            site, args.every, done, lambda: run_backfills(beside, rest)
        )
        stop.set()
        policy = get_settings().orchestration
        in_flight, batch = policy.backfill_in_flight, policy.backfill_batch
    finally:
        site.close()

    def cells(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} / {percentile(values, 0.95):.2f} s"

    failed = sum(b["counts"]["failed"] for b in ended)
    print("| figure | value | against |")
    print("|---|---|---|")
    print(
        f"| upload to thumbnails, idle (p50 / p95, {len(idle)} uploads) | {cells(idle)} | "
        f"Prefect server CPU {idle_cpu * 1000:.0f} ms an upload |"
    )
    print(
        f"| upload to thumbnails during the backfill ({len(busy)} uploads) | {cells(busy)} | "
        f"p95 {percentile(busy, 0.95) / percentile(idle, 0.95):.2f}x idle (goal <= 1.5x) |"
    )
    for name, stages in (("idle", idle_stages), ("during the backfill", busy_stages)):
        spans = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in stages.items())
        print(f"| an upload's run, {name} (medians) | {spans} | |")
    print(
        f"| backfill alone ({sum(first.values())} media) | {rate_alone:.0f} media/min | "
        f"Prefect server CPU {server_cpu * 1000:.0f} ms a media |"
    )
    print(
        f"| backfill beside uploads ({rest} media, {failed} failed) | {rate_beside:.0f} "
        f"media/min | {rate_beside / rate_alone:.2f}x alone (goal >= 0.7x) |"
    )
    most = max([*most_alone.values(), *most_beside.values()])
    print(
        f"| most runs of one backfill at once ({batch} media a run) | {most} | "
        f"BACKFILL_IN_FLIGHT {in_flight} |"
    )
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
