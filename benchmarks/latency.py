"""Upload-to-thumbnail latency and throughput: the stock process worker against the warm one.

    .venv/bin/python benchmarks/latency.py [--photos 30] [--interval 2] [--burst 40]
                                           [--workers process,media-warm-process]

Starts a Prefect server (PostgreSQL, Redis messaging) on a free port and, for each worker
type in turn, runs set-up for a pool of that type and starts one worker of the pool
(polling every second). 12 MP photos of a category with no AI enhancement are registered
and submitted through ``submit_media``:
- latency: one photo every ``interval`` seconds; the time from ``submit_media`` to "three
  thumbnail rows exist" (p50, p95, max);
- throughput: a burst of ``burst`` photos at once; photos a minute until every job of
  every photo is recorded as done.
CPU seconds per flow run are those of the worker process, of its children (flow-run
processes, the warm interpreter) and of the server, over both loads. Prints a JSON report
per worker type and the warm/stock ratios. Everything started is stopped, and its
databases dropped, at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STOCK, WARM = "process", "media-warm-process"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) user + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, every descendant's, live or reaped) CPU seconds of a process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    own, reaped = cpu_seconds(pid)
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        try:
            child_own, child_reaped = cpu_seconds(child)
        except OSError:
            continue
        reaped += child_own + child_reaped
        pending.extend(children.get(child, []))
    return own, reaped


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def watch_thumbnails(done: dict[uuid.UUID, float], stop: threading.Event) -> None:
    """Record when each media first has its three thumbnail rows."""
    from sqlalchemy import func, select

    from db.models import DerivativeType, MediaDerivative
    from db.session import session_scope

    sizes = [DerivativeType.THUMBNAIL, DerivativeType.MEDIUM, DerivativeType.LARGE]
    while not stop.is_set():
        with session_scope() as session:
            rows = session.execute(
                select(MediaDerivative.media_id, func.count())
                .where(MediaDerivative.type.in_(sizes))
                .group_by(MediaDerivative.media_id)
            ).all()
        moment = time.monotonic()
        for media_id, count in rows:
            if count == 3 and media_id not in done:
                done[media_id] = moment
        time.sleep(0.05)


def all_jobs_done(media_ids: list[uuid.UUID]) -> bool:
    from sqlalchemy import func, select

    from db.models import JobState, ProcessingJob
    from db.session import session_scope

    with session_scope() as session:
        unfinished = session.scalar(
            select(func.count()).where(
                ProcessingJob.media_id.in_(media_ids),
                ProcessingJob.state.not_in([JobState.SUCCEEDED, JobState.FAILED]),
            )
        )
        recorded = session.scalar(
            select(func.count(func.distinct(ProcessingJob.media_id))).where(
                ProcessingJob.media_id.in_(media_ids)
            )
        )
    return unfinished == 0 and recorded == len(media_ids)


def run_phase(
    worker_type: str, args: argparse.Namespace, photo: Path, work: Path, server_pid: int
) -> dict[str, Any]:
    from deployments.operations.client_api import submit_media
    from deployments.operations.registration import register_media
    from deployments.operations.setup import setup
    from media_pipeline.settings import get_settings
    from tests.support.processes import start_process, stop_process, wait_until

    pool = f"bench-{worker_type}"
    os.environ["MEDIA_PIPELINE_WORK_POOL"] = pool
    os.environ["MEDIA_PIPELINE_WORKER_TYPE"] = worker_type
    get_settings.cache_clear()
    setup()
    worker_env = {
        **os.environ,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "0",
    }
    log = work / f"worker-{worker_type}.log"
    # As the README starts workers: at most a run per CPU at once.
    worker = start_process(
        [
            str(Path(sys.executable).parent / "prefect"),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            worker_type,
            "--limit",
            str(os.cpu_count() or 1),
        ],
        worker_env,
        log,
    )
    try:
        wait_until(lambda: "started!" in log.read_text(), 120, f"the {worker_type} worker")
        time.sleep(2)  # its first poll
        done: dict[uuid.UUID, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_thumbnails, args=(done, stop), daemon=True)
        watcher.start()
        before = tree_cpu_seconds(worker.pid), cpu_seconds(server_pid)

        steady = [register_media(photo, category="AUTRE") for _ in range(args.photos)]
        submitted: dict[uuid.UUID, float] = {}
        for item in steady:
            submitted[item.id] = time.monotonic()
            submit_media(item.id)
            time.sleep(max(0.0, submitted[item.id] + args.interval - time.monotonic()))
        wait_until(lambda: all(m.id in done for m in steady), 1800, "the steady load")
        latencies = [done[m] - submitted[m] for m in submitted]

        burst = [register_media(photo, category="AUTRE") for _ in range(args.burst)]
        burst_ids = [m.id for m in burst]
        started = time.monotonic()
        for item in burst:
            submit_media(item.id)
        wait_until(lambda: all_jobs_done(burst_ids), 3600, "the burst", interval=0.2)
        burst_seconds = time.monotonic() - started
        wait_until(lambda: all_jobs_done([m.id for m in steady]), 600, "every job")
        time.sleep(3)  # the last runs' processes exit
        after = tree_cpu_seconds(worker.pid), cpu_seconds(server_pid)
        stop.set()
    finally:
        stop_process(worker)
    runs = args.photos + args.burst
    return {
        "worker": worker_type,
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "latency_max_s": round(max(latencies), 2),
        "burst_photos_per_min": round(args.burst / burst_seconds * 60, 1),
        "worker_cpu_s_per_run": round((after[0][0] - before[0][0]) / runs, 3),
        "children_cpu_s_per_run": round((after[0][1] - before[0][1]) / runs, 3),
        "server_cpu_s_per_run": round(sum(after[1]) / runs - sum(before[1]) / runs, 3),
        "runs_per_worker_cpu_s": round(runs / (sum(after[0]) - sum(before[0])), 3),
    }


def scratch_environment(prefix: str) -> Path:
    """A temporary folder for a benchmark's Prefect home, data and media, set in the
    environment before Prefect is imported; returns it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        {
            "PREFECT_HOME": str(work / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MEDIA_PIPELINE_DATA_DIR": str(work / "data"),
            "MEDIA_ROOT": str(work / "media"),
        }
    )
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--workers", default=f"{STOCK},{WARM}")
    args = parser.parse_args()

    work = scratch_environment("latency-")

    from tests.support.databases import scratch_database, start_postgres_if_needed
    from tests.support.media import make_jpeg
    from tests.support.processes import free_port, stop_process
    from tests.support.services import PrivateRedis, start_prefect_server

    start_postgres_if_needed()
    photo = make_jpeg(work / "photo-12mp.jpg", 4000, 3000, orientation=6)
    reports: dict[str, dict[str, Any]] = {}
    with (
        scratch_database("mp_bench_prefect") as prefect_db,
        scratch_database("mp_bench_app") as app_db,
    ):
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        redis = PrivateRedis(work / "redis").start()
        server = start_prefect_server(
            f"postgresql+asyncpg://root@127.0.0.1:5432/{prefect_db}",
            redis.url,
            work / "server.log",
            port,
        )
        try:
            os.environ["PREFECT_API_URL"] = api
            os.environ["DATABASE_URL"] = f"postgresql+psycopg://root@127.0.0.1:5432/{app_db}"
            from db.migrate import upgrade

            upgrade()
            for worker_type in args.workers.split(","):
                reports[worker_type] = run_phase(worker_type, args, photo, work, server.pid)
                print(json.dumps(reports[worker_type], indent=2), flush=True)
        finally:
            stop_process(server)
            redis.close()
    if STOCK in reports and WARM in reports:
        ratio: Callable[[str], float] = lambda key: round(  # noqa: E731
            reports[WARM][key] / reports[STOCK][key], 2
        )
        print(
            json.dumps(
                {
                    "warm/stock latency_p50": ratio("latency_p50_s"),
                    "warm/stock latency_p95": ratio("latency_p95_s"),
                    "warm/stock burst_photos_per_min": ratio("burst_photos_per_min"),
                    "warm/stock runs_per_worker_cpu_s": ratio("runs_per_worker_cpu_s"),
                    "warm/stock server_cpu_s_per_run": ratio("server_cpu_s_per_run"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
