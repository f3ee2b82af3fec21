"""Fault drills: every submitted media reaches a final status with no human action, and its
outputs are written once, whatever single fault happens.

    .venv/bin/python benchmarks/drills.py [--kill-trials 20] [--media 30]
        [--only kill,restarts,rolling,backlog,submit,server-kill,child-kill,slow-provider,outage]

Starts everything it restarts on its own: two PostgreSQL clusters (initdb in temporary
directories: the app database and Prefect's), a Redis, a Prefect server on them, the
OpenAI/Gemini stand-in of the tests, ``media-pipeline setup`` and two warm workers started
as the README says (no --limit, default names, default settings: detection time included).
Then runs each drill and prints one table: drill, trials, media submitted, media final
within the deadline, time to final after the fault (p50/p95), duplicates (derivative rows,
files, transcription versions beyond one), stranded, media FAILED (none may be, by a fault
of Prefect or a worker), and the most recoveries of one run beside the faults it met. The
drills of the orchestrator's and the providers' faults upload through ``media-pipeline
api`` as the app does: the Prefect server killed (-9) under uploads and started again 30 s
later, one flow run's process killed (its worker alive), a provider answering after 130 s
while photos are uploaded (their thumbnails' p95 against the same photos on an idle
pipeline), and ``complete`` while the server is away (its answer time, then the runs the
relay makes when it is back). Nothing of the machine's own PostgreSQL or Redis is touched;
everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.drill_site import (  # noqa: E402  (run as a script: the root is added above)
    Row,
    Site,
    count_recoveries,
    final_moments,
    mix,
    percentile,
    register,
    submit,
    wait_final,
    wait_in_flight,
    worker_slot,
)
from tests.support.api import complete, upload  # noqa: E402


def drill_kill(site: Site, trials: int) -> Row:
    row = Row("kill -9 a worker with runs in flight")
    for _ in range(trials):
        media = register(site, mix(3))
        run_ids = [r for runs in submit(media).values() for r in runs]
        flying = wait_in_flight(run_ids, 1)
        time.sleep(random.uniform(0, 2.0))  # before, at or after the first heartbeat
        slot = next((worker_slot(site, name) for name in flying.values()), None)
        slot = slot if slot is not None else random.choice(list(site.workers))
        site.kill_worker(slot)
        killed = time.monotonic()
        site.start_worker(slot)  # its supervisor starts it again (a new name)
        wait_final(media, killed, row)
        row.trials += 1
    return row


def drill_restarts(site: Site, count: int) -> list[Row]:
    faults = {
        "restart the app database": site.app_db.restart,
        "restart Prefect's database": site.prefect_db.restart,
        "restart the Prefect server": site.restart_server,
        "kill -9 Redis, start it empty": lambda: (site.redis.kill(), site.redis.start()),
    }
    rows = []
    for name, fault in faults.items():
        row = Row(name, trials=1)
        media = register(site, mix(count))
        run_ids = [r for runs in submit(media).values() for r in runs]
        wait_in_flight(run_ids, 3)
        fault()
        wait_final(media, time.monotonic(), row)
        rows.append(row)
    return rows


def drill_rolling(site: Site, count: int) -> Row:
    row = Row("rolling restart, SIGTERM each worker", trials=1)
    grace = float(os.environ.get("MEDIA_PIPELINE_WORKER_GRACE_SECONDS", "30"))
    media = register(site, mix(count))
    run_ids = [r for runs in submit(media).values() for r in runs]
    wait_in_flight(run_ids, 2)
    began = time.monotonic()
    for slot in sorted(site.workers):
        code, seconds = site.term_worker(slot)
        row.notes.append(f"worker {slot} exit {code} in {seconds:.1f} s (grace {grace:.0f})")
        site.start_worker(slot)
    wait_final(media, began, row)
    return row


def drill_backlog(site: Site) -> Row:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    row = Row("backlog: 40 voice notes, then 5 photos", trials=1)
    for slot in sorted(site.workers):
        site.term_worker(slot)
    notes, photos = register(site, ["AUDIO"] * 40), register(site, ["IMAGE"] * 5)
    runs = submit(notes + photos)
    began = time.monotonic()
    for slot in range(2):
        site.start_worker(slot)
    wait_final(notes + photos, began, row)

    def claimed(run_id: str) -> Any:
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(uuid.UUID(run_id))
        return min(s.timestamp for s in states if s.type is StateType.PENDING)

    thumbnails = [claimed(runs[p][0]) for p in photos]
    high = [claimed(runs[m][0]) for m in notes] + thumbnails
    waveforms = [claimed(runs[n][1]) for n in notes]
    early = sum(w < max(thumbnails) for w in waveforms)
    row.notes.append(f"waveforms claimed before the last thumbnail: {early}")
    row.notes.append(f"before the last high run: {sum(w < max(high) for w in waveforms)}")
    return row


def drill_submit(site: Site, count: int) -> Row:
    row = Row("10 concurrent submit_media of one media", trials=count)
    from flows.submission import submit_media

    media = register(site, mix(count))
    errors = 0
    answers: dict[uuid.UUID, set[tuple[str, ...]]] = {}
    began = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        for media_id in media:
            calls = [pool.submit(submit_media, media_id) for _ in range(10)]
            for call in calls:
                try:
                    answers.setdefault(media_id, set()).add(tuple(call.result()))
                except Exception:
                    errors += 1
    wait_final(media, began, row)
    row.notes.append(
        f"{errors} exceptions, {sum(len(a) > 1 for a in answers.values())} media with two answers"
    )
    return row


def drill_server_kill(site: Site, count: int) -> Row:
    """Uploads through the API, one a second; the server killed (-9) mid-way and started
    again 30 s later, while the uploads go on."""
    row = Row("kill -9 the Prefect server under uploads, start it 30 s later", trials=1)
    client = site.start_api()
    kinds = mix(count)
    uploaded = [upload(client, site.samples[kind], kind) for kind in kinds]
    run_ids: list[str] = []
    waits: list[float] = []

    def accept(path: str) -> tuple[list[str], float]:
        """complete's answer time, then the runs the relay makes (after the outage)."""
        began = time.monotonic()
        answer = client.post(path)
        answered = time.monotonic() - began
        assert answer.status_code == 202, answer.text
        return complete(client, path), answered

    with ThreadPoolExecutor(count) as pool:
        calls = []
        for index, (_, path) in enumerate(uploaded):
            calls.append(pool.submit(accept, path))
            if index == count // 2:
                site.kill_server()
                killed = time.monotonic()
                pool.submit(lambda: (time.sleep(30), site.server_start()))
            time.sleep(1.0)
        for call in calls:
            runs, answered = call.result()
            run_ids += runs
            waits.append(answered)
    wait_final([m for m, _ in uploaded], killed, row)
    count_recoveries(run_ids, row)
    row.notes.append(f"complete answered 202 within {max(waits):.2f} s, {len(waits)} calls")
    return row


def drill_child_kill(site: Site, trials: int) -> Row:
    """One flow run's process killed (-9) while its worker lives."""
    from prefect.client.orchestration import get_client

    row = Row("kill -9 one flow run's process, its worker alive")
    for _ in range(trials):
        media = register(site, mix(3))
        run_ids = [r for runs in submit(media).values() for r in runs]
        flying = wait_in_flight(run_ids, 1)
        time.sleep(random.uniform(0, 1.0))
        with get_client(sync_client=True) as client:
            pids = [client.read_flow_run(uuid.UUID(r)).infrastructure_pid for r in flying]
        pid = next((int(str(p).rsplit(":", 1)[-1]) for p in pids if p), None)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_final(media, time.monotonic(), row)
        count_recoveries(run_ids, row)
        row.trials += 1
    return row


def drill_slow_provider(site: Site) -> Row:
    """Five voice notes whose transcription answers after 130 s; six photos uploaded
    meanwhile. Their thumbnails' time to READY against the same on an idle pipeline."""
    from tests.support.fake_providers import Fault

    row = Row("OpenAI answers after 130 s; 5 voice notes, then 6 photos", trials=1)
    client = site.start_api()

    def photos() -> list[float]:
        """Seconds from each photo's complete to its READY."""
        completed: dict[uuid.UUID, float] = {}
        for _ in range(6):
            media_id, path = upload(client, site.samples["IMAGE"], "IMAGE")
            completed[media_id] = time.monotonic()
            complete(client, path)
        final = final_moments(list(completed))
        return [final[m] - completed[m] for m in completed]

    idle = photos()
    site.providers.queue("openai", *[Fault(delay=130.0)] * 5)
    notes = [upload(client, site.samples["AUDIO"], "AUDIO") for _ in range(5)]
    for _, path in notes:
        complete(client, path)
    time.sleep(3.0)  # the transcriptions are waiting on the provider
    slow = photos()
    wait_final([m for m, _ in notes], time.monotonic(), row)
    ratio = percentile(slow, 0.95) / percentile(idle, 0.95)
    row.notes.append(
        f"thumbnails to READY p95: idle {percentile(idle, 0.95):.1f} s, beside "
        f"the slow provider {percentile(slow, 0.95):.1f} s ({ratio:.2f}x, "
        "target <= 2x)"
    )
    return row


def drill_outage(site: Site) -> Row:
    """complete while the Prefect server is away: its answer (202 at once: the app
    database alone accepts it), then the runs the relay makes once the server is back."""
    row = Row("complete while the Prefect server is away (30 s)", trials=1)
    client = site.start_api()
    uploaded = [upload(client, site.samples[kind], kind) for kind in mix(3)]
    site.kill_server()
    killed = time.monotonic()
    answers = []
    for _, path in uploaded:
        began = time.monotonic()
        answer = client.post(path)
        answers.append((answer.status_code, time.monotonic() - began))
    time.sleep(max(0.0, 30 - (time.monotonic() - killed)))
    site.server_start()
    run_ids = [r for _, path in uploaded for r in complete(client, path)]
    wait_final([m for m, _ in uploaded], killed, row)
    count_recoveries(run_ids, row)
    again = [r for _, path in uploaded for r in complete(client, path)]
    codes = ", ".join(f"{code} in {seconds:.1f} s" for code, seconds in answers)
    row.notes.append(
        f"during the outage: {codes}; the same runs on a later call: {again == run_ids}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kill-trials", type=int, default=20)
    parser.add_argument("--media", type=int, default=30)
    parser.add_argument(
        "--only",
        default="kill,restarts,rolling,backlog,submit,server-kill,child-kill,slow-provider,outage",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started
    from benchmarks.latency import scratch_environment

    work = scratch_environment("drills-")
    site = Site(work)
    rows: list[Row] = []
    try:
        from db.migrate import upgrade
        from deployments.operations.setup import setup

        upgrade()
        setup()
        for slot in range(2):
            site.start_worker(slot)
        wanted = args.only.split(",")
        if "kill" in wanted:
            rows.append(drill_kill(site, args.kill_trials))
        if "restarts" in wanted:
            rows += drill_restarts(site, args.media)
        if "rolling" in wanted:
            rows.append(drill_rolling(site, args.media))
        if "backlog" in wanted:
            rows.append(drill_backlog(site))
        if "submit" in wanted:
            rows.append(drill_submit(site, 10))
        if "server-kill" in wanted:
            rows.append(drill_server_kill(site, 13))
        if "child-kill" in wanted:
            rows.append(drill_child_kill(site, args.kill_trials))
        if "slow-provider" in wanted:
            rows.append(drill_slow_provider(site))
        if "outage" in wanted:
            rows.append(drill_outage(site))
    finally:
        site.close()
    headers = [
        "drill",
        "trials",
        "media",
        "final",
        "time to final p50 / p95",
        "duplicates",
        "stranded",
        "FAILED",
        "recoveries / faults of one run",
        "notes",
    ]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |", flush=True)
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
