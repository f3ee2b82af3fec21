"""Erasure through the HTTP API: processed photos erased one ``DELETE /api/media/{id}``
each, then one ``DELETE /api/alerts/{id}`` for an alert of as many photos.

Prints seconds per erased media and the Prefect server's CPU per erased media (from
/proc), beside baselines measured in the same run: the ``complete`` call of the same media
(seconds each) and the server's CPU per processed media (upload to READY, the worker's runs
included).

    .venv/bin/python benchmarks/erase.py [--media 200]

Services: the machine's PostgreSQL (scratch databases for the app and for Prefect), a
private Redis, a Prefect server, one warm worker and the API on free ports; everything is
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"
FINAL = {"READY", "PARTIAL", "FAILED"}


def server_cpu() -> float:
    from benchmarks.ingest import cpu_by_program

    return cpu_by_program().get("prefect server", 0.0)


def upload_all(
    client: Any, photo: Path, count: int, alert: uuid.UUID | None
) -> tuple[list[uuid.UUID], list[float]]:
    """Upload and complete ``count`` photos (one alert each, or all in ``alert``); their
    ids and each complete's seconds."""
    from tests.support.api import complete, upload

    ids, seconds = [], []
    for _ in range(count):
        media_id, path = upload(client, photo, "IMAGE", alert=alert)
        began = time.monotonic()
        complete(client, path)
        seconds.append(time.monotonic() - began)
        ids.append(media_id)
    return ids, seconds


def wait_final(ids: list[uuid.UUID], timeout: float = 1800) -> None:
    from db.models import Media
    from db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            if all(session.get(Media, m).status.value in FINAL for m in ids):
                return
        time.sleep(1)
    raise TimeoutError("the photos were not processed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--media", type=int, default=200)
    args = parser.parse_args()
    from benchmarks.latency import scratch_environment

    work = scratch_environment("erase-")
    import httpx

    from tests.support.api import start_api
    from tests.support.databases import scratch_database, start_postgres_if_needed
    from tests.support.media import make_jpeg
    from tests.support.processes import free_port, start_process, stop_process
    from tests.support.services import PrivateRedis, start_prefect_server

    start_postgres_if_needed()
    photo = make_jpeg(work / "photo.jpg", 800, 600)
    redis = PrivateRedis(work / "redis").start()
    processes: list[Any] = []
    try:
        with (
            scratch_database("mp_erase_prefect") as prefect_db,
            scratch_database("mp_erase_app") as app_db,
        ):
            port = free_port()
            processes.append(
                start_prefect_server(
                    f"postgresql+asyncpg://root@127.0.0.1:5432/{prefect_db}",
                    redis.url,
                    work / "server.log",
                    port,
                )
            )
            os.environ.update(
                {
                    "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                    "DATABASE_URL": f"postgresql+psycopg://root@127.0.0.1:5432/{app_db}",
                    "MEDIA_PIPELINE_API_TOKENS": TOKEN,
                }
            )
            from db.migrate import upgrade
            from deployments.operations.setup import setup

            upgrade()
            setup()
            prefect = str(Path(sys.executable).parent / "prefect")
            processes.append(
                start_process(
                    [prefect, "worker", "start", "--pool", "media"],
                    dict(os.environ),
                    work / "worker.log",
                )
            )
            api, base = start_api(work / "api.log")
            processes.append(api)
            with httpx.Client(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as client:
                report = measure(client, photo, args.media)
    finally:
        for process in reversed(processes):
            stop_process(process)
        redis.close()
    one, alert, completes, processed_cpu = report
    print(
        f"{args.media} photos, processed: Prefect server CPU {processed_cpu * 1000:.0f} ms "
        f"per media (upload to READY); complete p50 {statistics.median(completes):.3f} s"
    )
    for name, (seconds, cpu, pending) in (
        ("one DELETE per media", one),
        (f"one alert of {args.media}", alert),
    ):
        print(
            f"{name}: {seconds:.3f} s per media ({seconds / statistics.median(completes):.1f}x "
            f"a complete), Prefect server CPU {cpu * 1000:.0f} ms per media "
            f"({cpu / processed_cpu:.2f}x processing it); {pending} receipts pending"
        )


def measure(client: Any, photo: Path, count: int) -> tuple[Any, Any, list[float], float]:
    cpu = server_cpu()
    singles, completes = upload_all(client, photo, count, None)
    wait_final(singles)
    processed_cpu = (server_cpu() - cpu) / count
    time.sleep(5)  # the last runs' events and logs settle

    cpu, began = server_cpu(), time.monotonic()
    pending = 0
    for media_id in singles:
        answer = client.delete(f"/api/media/{media_id}")
        answer.raise_for_status()
        pending += sum(bool(r["pending"]) for r in answer.json()["media"])
    one = ((time.monotonic() - began) / count, (server_cpu() - cpu) / count, pending)

    alert = uuid.uuid4()
    grouped, _ = upload_all(client, photo, count, alert)
    wait_final(grouped)
    time.sleep(5)
    cpu, began = server_cpu(), time.monotonic()
    answer = client.delete(f"/api/alerts/{alert}")
    answer.raise_for_status()
    pending = sum(bool(r["pending"]) for r in answer.json()["media"])
    whole = ((time.monotonic() - began) / count, (server_cpu() - cpu) / count, pending)
    return one, whole, completes, processed_cpu


if __name__ == "__main__":
    main()
