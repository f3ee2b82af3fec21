"""Upload-to-thumbnail latency through the production path, with a stock process worker.

    .venv/bin/python benchmarks/latency.py [--photos 60] [--interval 1.0]

Starts a Prefect server (PostgreSQL, Redis messaging) on a free port, runs set-up,
starts one process worker of the pool, then registers 12 MP photos (category with no AI
enhancement) and calls ``submit_media`` for one every ``interval`` seconds. Prints the
time from ``submit_media`` to "three thumbnail rows exist" (p50, p95, max), the
throughput, and the CPU seconds of the worker (with its flow-run children) and server.
Everything it starts is stopped, and its databases dropped, at the end.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that have exited and been waited."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="latency-"))
    os.environ.update({
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MEDIA_PIPELINE_DATA_DIR": str(work / "data"),
        "MEDIA_ROOT": str(work / "media"),
    })  # fmt: skip

    from tests.conftest import redis_messaging_env
    from tests.support.databases import scratch_database, start_postgres_if_needed
    from tests.support.media import make_jpeg
    from tests.support.processes import free_port, http_ok, start_process, stop_process, wait_until

    start_postgres_if_needed()
    photo = make_jpeg(work / "photo-12mp.jpg", 4000, 3000, orientation=6)
    with (
        scratch_database("mp_bench_prefect") as prefect_db,
        scratch_database("mp_bench_app") as app_db,
    ):
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        server_env = {**os.environ, **redis_messaging_env(), "PREFECT_UI_ENABLED": "false",
                      "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                          f"postgresql+asyncpg://root@127.0.0.1:5432/{prefect_db}"}  # fmt: skip
        server_args = [sys.executable, "-m", "prefect", "server", "start",
                       "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        server = start_process(server_args, server_env, work / "server.log")
        worker = None
        try:
            wait_until(lambda: http_ok(f"{api}/health"), 120, "the Prefect server")
            os.environ["PREFECT_API_URL"] = api
            os.environ["DATABASE_URL"] = f"postgresql+psycopg://root@127.0.0.1:5432/{app_db}"
            from sqlalchemy import func, select

            from db.migrate import upgrade
            from db.models import DerivativeType, MediaDerivative
            from db.session import session_scope
            from deployments.client_api import submit_media
            from deployments.setup import setup
            from media_pipeline.registration import register_media

            upgrade()
            setup()
            worker_env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1",
                          "PREFECT_WORKER_PREFETCH_SECONDS": "0"}  # fmt: skip
            worker_args = [sys.executable, "-m", "prefect", "worker", "start",
                           "--pool", "media", "--type", "process"]  # fmt: skip
            worker = start_process(worker_args, worker_env, work / "worker.log")
            time.sleep(5)  # the worker's first poll
            media = [register_media(photo, category="AUTRE") for _ in range(args.photos)]
            submitted: dict[uuid.UUID, float] = {}
            done: dict[uuid.UUID, float] = {}
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    with session_scope() as session:
                        rows = session.execute(
                            select(MediaDerivative.media_id, func.count())
                            .where(MediaDerivative.type.in_([DerivativeType.THUMBNAIL,
                                                             DerivativeType.MEDIUM,
                                                             DerivativeType.LARGE]))
                            .group_by(MediaDerivative.media_id)
                        ).all()  # fmt: skip
                    moment = time.monotonic()
                    for media_id, count in rows:
                        if count == 3 and media_id not in done:
                            done[media_id] = moment
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            cpu_before = (cpu_seconds(worker.pid), cpu_seconds(server.pid))
            started = time.monotonic()
            for item in media:
                submitted[item.id] = time.monotonic()
                submit_media(str(item.id))
                time.sleep(max(0.0, submitted[item.id] + args.interval - time.monotonic()))
            wait_until(lambda: len(done) == len(media), 60 * 30, "every thumbnail", interval=0.5)
            finished = time.monotonic()
            stop.set()
            cpu_after = (cpu_seconds(worker.pid), cpu_seconds(server.pid))
        finally:
            if worker is not None:
                stop_process(worker)
            stop_process(server)
    latencies = [done[m] - submitted[m] for m in submitted]
    report = {
        "photos": len(latencies),
        "interval_s": args.interval,
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "latency_max_s": round(max(latencies), 2),
        "throughput_per_min": round(len(latencies) / (finished - started) * 60, 1),
        "worker_cpu_s_per_run": round((cpu_after[0] - cpu_before[0]) / len(latencies), 2),
        "server_cpu_s_per_run": round((cpu_after[1] - cpu_before[1]) / len(latencies), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
