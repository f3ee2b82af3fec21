"""Fault drills: every submitted media reaches a final status with no human action, and its
outputs are written once, whatever single fault happens.

    .venv/bin/python benchmarks/drills.py [--kill-trials 20] [--media 30]
                                          [--only kill,restarts,rolling,backlog,submit]

Starts everything it restarts on its own: two PostgreSQL clusters (initdb in temporary
directories: the app database and Prefect's), a Redis, a Prefect server on them, the
OpenAI/Gemini stand-in of the tests, ``media-pipeline setup`` and two warm workers started
as the README says (no --limit, default names, default settings: detection time included).
Then runs each drill and prints one table: drill, trials, media submitted, media final
within the deadline, time to final after the fault (p50/p95), duplicates (derivative rows,
files, transcription versions beyond one), stranded. Nothing of the machine's own
PostgreSQL or Redis is touched; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEADLINE = 300.0  # seconds after a fault by which every media must be final
FINAL = {"READY", "PARTIAL", "FAILED"}
DERIVATIVES = {"IMAGE": 3, "AUDIO": 1, "VIDEO": 2}
FILES = {"IMAGE": 4, "AUDIO": 3, "VIDEO": 3}  # the original and the derivatives


@dataclass
class Row:
    drill: str
    trials: int = 0
    media: int = 0
    final: int = 0
    times: list[float] = field(default_factory=list)
    duplicates: int = 0
    stranded: int = 0
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        p50 = f"{statistics.median(self.times):.0f}" if self.times else "-"
        p95 = f"{percentile(self.times, 0.95):.0f}" if self.times else "-"
        return [self.drill, str(self.trials), str(self.media), f"{self.final}/{self.media}",
                f"{p50} / {p95} s", str(self.duplicates), str(self.stranded),
                "; ".join(self.notes)]  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Site:
    """The services, the workers, and the sample files of a drill run."""

    def __init__(self, work: Path) -> None:
        from tests.support.fake_providers import FakeProviders
        from tests.support.processes import free_port
        from tests.support.services import PrivatePostgres, PrivateRedis

        self.work = work
        self.workers: dict[int, Any] = {}
        self.logs: dict[int, Path] = {}
        self.started = 0
        self.server: Any = None
        self.app_db = PrivatePostgres()
        self.prefect_db = PrivatePostgres()
        self.redis = PrivateRedis(work / "redis")
        self.providers = FakeProviders().start()
        self.port = free_port()
        try:
            self.start_services()
        except BaseException:
            self.close()  # what started is stopped
            raise

    def start_services(self) -> None:
        self.app_db.start().create_database("app")
        self.prefect_db.start().create_database("prefect")
        self.redis.start()
        self.providers.latency = 1.5  # a transcription is in flight for a while
        os.environ.update({
            "DATABASE_URL": self.app_db.url("app"),
            "PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api",
            "OPENAI_API_KEY": "sk-drill", "OPENAI_BASE_URL": f"{self.providers.url}/v1",
            "GEMINI_API_KEY": "gm-drill", "GEMINI_BASE_URL": self.providers.url,
            "MEDIA_PIPELINE_OPENAI_CALLS_PER_MINUTE": "6000",
        })  # fmt: skip
        self.server = self.start_server()
        self.samples = self.make_samples()

    def start_server(self) -> Any:
        from tests.support.services import start_prefect_server

        url = self.prefect_db.url("prefect", driver="asyncpg")
        return start_prefect_server(url, self.redis.url, self.work / "server.log", self.port)

    def restart_server(self) -> None:
        from tests.support.processes import stop_process

        stop_process(self.server)
        self.server = self.start_server()

    def make_samples(self) -> dict[str, Path]:
        from tests.support.media import make_jpeg, make_tone, make_video

        return {
            "AUDIO": make_tone(self.work / "note.m4a", 2.0, codec_args=("-c:a", "aac")),
            "IMAGE": make_jpeg(self.work / "photo.jpg", 1600, 1200),
            "VIDEO": make_video(self.work / "clip.mp4", 3),
        }

    def start_worker(self, slot: int) -> None:
        from tests.support.processes import start_process, wait_until

        log = self.work / f"worker-{self.started}.log"
        self.started += 1
        prefect = str(Path(sys.executable).parent / "prefect")
        process = start_process([prefect, "worker", "start", "--pool", "media"],
                                dict(os.environ), log)  # fmt: skip
        wait_until(lambda: "started!" in log.read_text() or process.poll() is not None, 120,
                   "a worker")  # fmt: skip
        self.workers[slot], self.logs[slot] = process, log

    def kill_worker(self, slot: int) -> None:
        """kill -9 of the worker's process group: the worker, its interpreter, its runs."""
        process = self.workers.pop(slot)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def term_worker(self, slot: int) -> tuple[int | None, float]:
        """SIGTERM to the worker alone; its exit code and how long it took."""
        process = self.workers.pop(slot)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(120)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            code = None
        return code, time.monotonic() - began

    def close(self) -> None:
        from tests.support.processes import stop_process

        for process in self.workers.values():
            stop_process(process)
        if self.server is not None:
            stop_process(self.server)
        self.providers.stop()
        self.redis.close()
        self.app_db.close()
        self.prefect_db.close()


def register(site: Site, kinds: list[str]) -> list[uuid.UUID]:
    from deployments.registration import register_media

    return [register_media(site.samples[kind], category="AUTRE").id for kind in kinds]


def submit(media: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    from flows.submission import submit_media

    return {m: submit_media(str(m)) for m in media}


def mix(count: int) -> list[str]:
    return [("AUDIO", "IMAGE", "VIDEO")[i % 3] for i in range(count)]


def wait_final(media: list[uuid.UUID], since: float, row: Row) -> None:
    """Poll the app database until every media is final or the deadline passes; record
    the time to final (from ``since``), duplicates and stranded media in ``row``."""
    from db.models import Media
    from db.session import session_scope

    done: dict[uuid.UUID, float] = {}
    while len(done) < len(media) and time.monotonic() - since < DEADLINE:
        try:
            with session_scope() as session:
                for media_id in media:
                    if media_id not in done and session.get(Media, media_id).status in FINAL:
                        done[media_id] = time.monotonic() - since
        except Exception:
            pass  # the database is restarting
        time.sleep(0.5)
    row.media += len(media)
    row.final += len(done)
    row.times += list(done.values())
    row.stranded += len(media) - len(done)
    row.duplicates += count_duplicates(media)


def count_duplicates(media: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select

    from db.models import Media, Transcription
    from db.session import session_scope
    from media_pipeline.settings import get_settings

    extra = 0
    root = get_settings().media_root
    with session_scope() as session:
        for media_id in media:
            item = session.get(Media, media_id)
            kind = item.type.value
            extra += max(0, len(item.derivatives) - DERIVATIVES[kind])
            folder = root / f"alerts/{item.alert_id}/media/{item.id}"
            files = [p for p in folder.iterdir() if not p.name.startswith(".")]
            extra += max(0, len(files) - FILES[kind])
            versions = session.scalar(
                select(func.count()).where(Transcription.media_id == media_id)
            )
            extra += max(0, versions - 1)
    return extra


def runs_in_flight(run_ids: list[str]) -> dict[str, str]:
    """Run id -> worker name of the runs claimed or running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[uuid.UUID(r) for r in run_ids])))  # fmt: skip
    return {
        str(r.id): str(r.labels.get("prefect.worker.name", ""))
        for r in runs
        if r.state and r.state.type in (StateType.PENDING, StateType.RUNNING)
    }


def wait_in_flight(run_ids: list[str], at_least: int, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = runs_in_flight(run_ids)
        if len(found) >= at_least:
            return found
        time.sleep(0.2)
    return {}


def worker_slot(site: Site, name: str) -> int | None:
    """Which of our running workers carries ``name`` (read from its log)."""
    for slot in site.workers:
        if f"Worker '{name}'" in site.logs[slot].read_text():
            return slot
    return None


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
            calls = [pool.submit(submit_media, str(media_id)) for _ in range(10)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kill-trials", type=int, default=20)
    parser.add_argument("--media", type=int, default=30)
    parser.add_argument("--only", default="kill,restarts,rolling,backlog,submit")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started
    from benchmarks.latency import scratch_environment

    work = scratch_environment("drills-")
    site = Site(work)
    rows: list[Row] = []
    try:
        from db.migrate import upgrade
        from deployments.setup import setup

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
    finally:
        site.close()
    headers = ["drill", "trials", "media", "final", "time to final p50 / p95", "duplicates",
               "stranded", "notes"]  # fmt: skip
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |", flush=True)
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
