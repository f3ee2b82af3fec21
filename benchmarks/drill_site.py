"""What the fault drills of ``benchmarks/drills.py`` stand on: the services they restart
(``Site``), one table row per drill, and the ways a drill submits media (directly, or
through ``media-pipeline api`` as the app does) and checks them (final, duplicates, FAILED,
recoveries per run)."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEADLINE = 300.0  # seconds after a fault by which every media must be final
FINAL = {"READY", "PARTIAL", "FAILED"}
DERIVATIVES = {"IMAGE": 3, "AUDIO": 1, "VIDEO": 2}
FILES = {"IMAGE": 4, "AUDIO": 3, "VIDEO": 3}  # the original and the derivatives
TOKEN = "drill-token-0123456789"


@dataclass
class Row:
    drill: str
    trials: int = 0
    media: int = 0
    final: int = 0
    times: list[float] = field(default_factory=list)
    duplicates: int = 0
    stranded: int = 0
    failed: int = 0
    recoveries: int = 0  # the most of one run
    faults: int = 0  # faults that one run met, at most
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        p50 = f"{statistics.median(self.times):.0f}" if self.times else "-"
        p95 = f"{percentile(self.times, 0.95):.0f}" if self.times else "-"
        return [
            self.drill,
            str(self.trials),
            str(self.media),
            f"{self.final}/{self.media}",
            f"{p50} / {p95} s",
            str(self.duplicates),
            str(self.stranded),
            str(self.failed),
            f"{self.recoveries} / {self.faults}",
            "; ".join(self.notes),
        ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Site:
    """The services, the workers, and the sample files of a drill run."""

    def __init__(self, work: Path, server_workers: int = 1) -> None:
        from tests.support.fake_providers import FakeProviders
        from tests.support.processes import free_port
        from tests.support.services import PrivatePostgres, PrivateRedis

        self.work = work
        self.server_workers = server_workers  # API processes of the Prefect server
        self.workers: dict[int, Any] = {}
        self.logs: dict[int, Path] = {}
        self.started = 0
        self.server: Any = None
        self.api: Any = None
        self.client: Any = None
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
        os.environ.update(
            {
                "DATABASE_URL": self.app_db.url("app"),
                "PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api",
                "OPENAI_API_KEY": "sk-drill",
                "OPENAI_BASE_URL": f"{self.providers.url}/v1",
                "GEMINI_API_KEY": "gm-drill",
                "GEMINI_BASE_URL": self.providers.url,
                "MEDIA_PIPELINE_OPENAI_CALLS_PER_MINUTE": "6000",
            }
        )
        self.server = self.start_server()
        self.samples = self.make_samples()

    def start_server(self) -> Any:
        from tests.support.services import start_prefect_server

        url = self.prefect_db.url("prefect", driver="asyncpg")
        return start_prefect_server(
            url, self.redis.url, self.work / "server.log", self.port, workers=self.server_workers
        )

    def restart_server(self) -> None:
        from tests.support.processes import stop_process

        stop_process(self.server)
        self.server = self.start_server()

    def server_start(self) -> None:
        self.server = self.start_server()

    def make_samples(self) -> dict[str, Path]:
        from tests.support.media import make_jpeg, make_tone, make_video

        return {
            "AUDIO": make_tone(self.work / "note.m4a", 2.0, codec_args=("-c:a", "aac")),
            "IMAGE": make_jpeg(self.work / "photo.jpg", 1600, 1200),
            "VIDEO": make_video(self.work / "clip.mp4", 3),
        }

    def start_api(self) -> Any:
        """``media-pipeline api`` on the drill's services; an HTTP client of it."""
        import httpx

        from tests.support.api import start_api

        if self.api is None:
            self.api, base = start_api(self.work / "api.log", MEDIA_PIPELINE_API_TOKENS=TOKEN)
            self.client = httpx.Client(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        return self.client

    def kill_server(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait(10)

    def start_worker(self, slot: int) -> None:
        from tests.support.processes import start_process, wait_until

        log = self.work / f"worker-{self.started}.log"
        self.started += 1
        prefect = str(Path(sys.executable).parent / "prefect")
        process = start_process(
            [prefect, "worker", "start", "--pool", "media"], dict(os.environ), log
        )
        wait_until(
            lambda: "started!" in log.read_text() or process.poll() is not None, 120, "a worker"
        )
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
        if self.api is not None:
            self.client.close()
            stop_process(self.api)
        if self.server is not None:
            stop_process(self.server)
        self.providers.stop()
        self.redis.close()
        self.app_db.close()
        self.prefect_db.close()


def register(site: Site, kinds: list[str]) -> list[uuid.UUID]:
    from deployments.operations.registration import register_media

    return [register_media(site.samples[kind], category="AUTRE").id for kind in kinds]


def submit(media: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    from flows.submission import submit_media

    return {m: submit_media(m) for m in media}


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
    row.failed += count_failed(media)


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


def count_failed(media: list[uuid.UUID]) -> int:
    from db.models import Media, MediaStatus
    from db.session import session_scope

    with session_scope() as session:
        return sum(session.get(Media, m).status is MediaStatus.FAILED for m in media)


def count_recoveries(run_ids: list[str], row: Row, faults: int = 1) -> None:
    """The most times the reconciler scheduled one of the runs again, beside the faults
    that run met (one per drill trial)."""
    from prefect.client.orchestration import get_client

    from deployments.operations.run_health import MARK

    with get_client(sync_client=True) as client:
        most = max(
            (
                sum(
                    (s.message or "").startswith(MARK)
                    for s in client.read_flow_run_states(uuid.UUID(r))
                )
                for r in run_ids
            ),
            default=0,
        )
    row.recoveries = max(row.recoveries, most)
    row.faults = max(row.faults, faults)


def runs_in_flight(run_ids: list[str]) -> dict[str, str]:
    """Run id -> worker name of the runs claimed or running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(r) for r in run_ids]))
        )
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


def final_moments(media: list[uuid.UUID], timeout: float = DEADLINE) -> dict[uuid.UUID, float]:
    """When each media was seen final (monotonic clock), polled together."""
    from db.models import Media
    from db.session import session_scope

    seen: dict[uuid.UUID, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(media) and time.monotonic() < deadline:
        with session_scope() as session:
            for media_id in media:
                if media_id not in seen and session.get(Media, media_id).status in FINAL:
                    seen[media_id] = time.monotonic()
        time.sleep(0.1)
    return {m: seen.get(m, float("inf")) for m in media}
