"""Ingest through the HTTP API: uploads of a 3 MB photo, initiate -> PUT -> complete, from
concurrent clients against one ``media-pipeline api`` process, with local storage and with
S3 (a SeaweedFS of its own). No worker runs, so nothing but ingest uses the CPU: the
created runs wait in their queues.

Prints, per storage: p50 and p95 of each call, uploads per second, the API process's own
CPU per upload (user + system, from /proc), every program's CPU per upload (each upload is
one run: the Prefect server's is its CPU per run, created in the relay's batches), and the
time from complete's answer to its run's creation in Prefect (Scheduled), p50 and p95:
under that load, for one client uploading back to back, and for one client that pauses
between uploads (an app's user: the queue and the machine idle when ``complete`` answers).
Baselines measured in the same run: ``GET /api/media/<unknown id>`` through the same API
(the floor: an authenticated round trip that reads one row); one flow run created by
Prefect's ``run_deployment`` against ``create_flow_runs`` with the cached deployment id;
and the Prefect server's CPU per run when 8 callers create runs one request each
(Prefect's client).

    .venv/bin/python benchmarks/ingest.py [--uploads 200] [--clients 8]

Services: the machine's PostgreSQL (scratch databases for the app and for Prefect), a
private Redis and Prefect server on free ports; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"
PACE_SECONDS = 1.0  # an app's user: one upload, then a pause (the queue idle between)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process of the machine, summed by program name."""
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = b" ".join(command).decode(errors="replace")
        name = next((label for label, marker in PROGRAMS if marker in words), "other")
        ticks = int(fields[11]) + int(fields[12])
        totals[name] = totals.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return totals


# Who uses the machine during a load, by a piece of each process's command line.
PROGRAMS = [
    ("api", "media-pipeline api"),
    ("prefect server", "prefect server"),
    ("postgres", "postgres"),
    ("seaweedfs", "weed server"),
    ("redis", "redis-server"),
    ("clients (this benchmark)", "benchmarks/ingest.py"),
    ("prefect server", "multiprocessing.spawn"),
]  # its API processes, with --workers


def summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p95_ms": round(percentile(times, 0.95) * 1000, 1),
    }


def upload_once(clients: Any, photo: bytes, timings: dict[str, list[float]]) -> None:
    """initiate -> PUT -> complete; ``clients.api`` carries the token, ``clients.uploads``
    does not (a presigned URL carries its own credentials)."""
    client = clients.api
    alert = str(uuid.uuid4())
    started = time.perf_counter()
    init = client.post(
        f"/api/alerts/{alert}/media/initiate",
        json={
            "type": "IMAGE",
            "position": 0,
            "filename": "photo.jpg",
            "mimeType": "image/jpeg",
            "size": len(photo),
            "categoryCode": "AUTRE",
        },
    )
    init.raise_for_status()
    body = init.json()
    sent = time.perf_counter()
    clients.uploads.put(
        body["uploadUrl"], content=photo, headers=body["headers"]
    ).raise_for_status()
    uploaded = time.perf_counter()
    client.post(f"/api/alerts/{alert}/media/{body['mediaId']}/complete").raise_for_status()
    done = time.perf_counter()
    clients.accepted[body["mediaId"]] = time.time()
    for name, value in (
        ("initiate", sent - started),
        ("put", uploaded - sent),
        ("complete", done - uploaded),
        ("upload", done - started),
    ):
        timings[name].append(value)


def load(base: str, pid: int, count: int, clients: int, work: Any) -> dict[str, Any]:
    """``work(thread's clients, timings)`` ``count`` times from ``clients`` threads; then
    the time from each complete's answer to its run's creation."""
    import httpx

    local = threading.local()
    accepted: dict[str, float] = {}
    timings: dict[str, list[float]] = {
        k: [] for k in ("initiate", "put", "complete", "upload", "floor")
    }

    def one(_: int) -> None:
        if not hasattr(local, "api"):  # connection pools of their own per client thread
            local.api = httpx.Client(
                base_url=base, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            local.uploads = httpx.Client(timeout=60)
            local.accepted = accepted
        work(local, timings)

    cpu = cpu_seconds(pid)
    machine = cpu_by_program()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    outbox_drained()  # every run made: its CPU is counted
    used = cpu_by_program()
    api_cpu = cpu_seconds(pid) - cpu
    spent = {name: used[name] - machine.get(name, 0.0) for name in used}
    busy = {
        name: round(seconds / elapsed, 2)
        for name, seconds in spent.items()
        if seconds > 0.01 * elapsed
    }
    scheduled = complete_to_scheduled(accepted)
    return {
        **({"complete_to_scheduled": summary(scheduled)} if scheduled else {}),
        "per_second": round(count / elapsed, 1),
        "api_cpu_ms_each": round(api_cpu / count * 1000, 2),
        "cores_busy_by_program": busy,
        "cpu_ms_each_by_program": {name: round(spent[name] / count * 1000, 1) for name in busy},
        **{k: summary(v) for k, v in timings.items() if v},
    }


def server_quiet(timeout: float = 120) -> None:
    """Until the Prefect server uses under 5% of a core for a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_by_program().get("prefect server", 0.0)
        time.sleep(1.0)
        if cpu_by_program().get("prefect server", 0.0) - before < 0.05:
            return


def outbox_drained(timeout: float = 120) -> None:
    from db.outbox import outbox_depth
    from db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            if outbox_depth(session).runs == 0:
                return
        time.sleep(0.1)
    raise TimeoutError("the relay left runs in the outbox")


def complete_to_scheduled(accepted: dict[str, float]) -> list[float]:
    """Seconds from each complete's answer to the creation of its run (Prefect's clock is
    this machine's), once the relay has made them all."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    if not accepted:
        return []
    created: dict[str, float] = {}
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while len(created) < len(accepted) and time.monotonic() < deadline:
            created.clear()
            offset = 0
            while page := client.read_flow_runs(
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=True)),
                offset=offset,
                limit=200,
            ):
                for run in page:
                    media = run.parameters.get("media_id")
                    if media in accepted and run.created is not None:
                        created[media] = run.created.timestamp()
                offset += len(page)
            time.sleep(0.5)
    return [created[m] - accepted[m] for m in accepted if m in created]


def probe_store(stop: threading.Event, times: list[float]) -> None:
    """What ``complete`` reads from the store (an upload's head: one ranged GET), timed
    every 50 ms until ``stop``: the store's own share of complete's time under a load."""
    from sqlalchemy import select

    from db.models import Media, MediaStatus
    from db.session import session_scope
    from media_pipeline.object_store import get_store
    from media_pipeline.upload_check import HEAD_BYTES

    store = get_store()
    with session_scope() as session:
        uploaded = Media.status != MediaStatus.AWAITING_UPLOAD
        key = session.scalars(select(Media.storage_key).where(uploaded).limit(1)).one()
    while not stop.wait(0.05):
        started = time.perf_counter()
        store.read_head(key, HEAD_BYTES)
        times.append(time.perf_counter() - started)


def floor(clients: Any, timings: dict[str, list[float]]) -> None:
    """An authenticated call that reads one row: GET /api/media of an unknown media (404)."""
    started = time.perf_counter()
    clients.api.get(f"/api/media/{uuid.uuid4()}")
    timings["floor"].append(time.perf_counter() - started)


def submission_baseline(runs: int) -> dict[str, float]:
    """Flow-run creation. Latency, one run at a time: Prefect's run_deployment (reads the
    deployment every time) against create_flow_runs with the deployment id cached. The
    Prefect server's CPU per run with 8 concurrent callers, one request per run (Prefect's
    client): what the relay's batches are measured against."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.run_creation import create_flow_runs, run_request
    from flows.submission import deployment_name

    def parameters() -> dict[str, str]:
        return {"media_id": str(uuid.uuid4()), "tier": "high"}

    def request() -> Any:
        return run_request(deployment_name("high"), parameters=parameters())

    started = time.perf_counter()
    for _ in range(runs):
        run_deployment(
            deployment_name("high"), parameters=parameters(), timeout=0, as_subflow=False
        )
    plain = (time.perf_counter() - started) / runs
    with get_client(sync_client=True) as client:
        create_flow_runs(client, [request()])  # fills the cache
        started = time.perf_counter()
        for _ in range(runs):
            create_flow_runs(client, [request()])
        cached = (time.perf_counter() - started) / runs
        deployment = client.read_deployment_by_name(deployment_name("high")).id

        def server_cpu_ms(create: Any, count: int = 10 * runs) -> float:
            before = cpu_by_program().get("prefect server", 0.0)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: create(), range(count)))
            return (cpu_by_program().get("prefect server", 0.0) - before) / count * 1000

        one_by_one = server_cpu_ms(
            lambda: client.create_flow_run_from_deployment(deployment, parameters=parameters())
        )
    return {
        "run_deployment_ms": round(plain * 1000, 1),
        "create_flow_runs_cached_ms": round(cached * 1000, 1),
        "latency_ratio": round(cached / plain, 2),
        "server_cpu_ms_per_run_one_request_each": round(one_by_one, 1),
    }


def run_round(storage: str, report: dict[str, Any], args: Any, photo: bytes, work: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from db.migrate import upgrade
    from deployments.operations.setup import setup
    from media_pipeline.settings import get_settings
    from tests.support.api import start_api
    from tests.support.processes import stop_process

    get_settings.cache_clear()
    upgrade()
    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        setup()
        if "submission" not in report:
            report["submission"] = submission_baseline(20)
        api, base = start_api(work / f"api-{storage}.log")
        try:

            def upload(clients: Any, timings: dict[str, list[float]]) -> None:
                upload_once(clients, photo, timings)

            def paced(clients: Any, timings: dict[str, list[float]]) -> None:
                began = time.perf_counter()
                upload_once(clients, photo, timings)
                time.sleep(max(0.0, PACE_SECONDS - (time.perf_counter() - began)))

            load(base, api.pid, 20, args.clients, upload)  # warm-up
            # One client, one upload at a time: the relay's latency on an idle queue (and an
            # idle server: the baseline's runs leave it busy for a while).
            server_quiet()
            report[f"{storage}_one_client"] = load(base, api.pid, 30, 1, upload)
            server_quiet()
            report[f"{storage}_paced"] = load(base, api.pid, 20, 1, paced)
            report[f"{storage}_floor"] = load(base, api.pid, args.uploads, args.clients, floor)
            stop, heads = threading.Event(), list[float]()
            if storage == "s3":
                threading.Thread(target=probe_store, args=(stop, heads), daemon=True).start()
            report[storage] = load(base, api.pid, args.uploads, args.clients, upload)
            stop.set()
            if heads:
                report[storage]["store_head"] = summary(heads)
        finally:
            stop_process(api)
    print(json.dumps({storage: report[storage]}, indent=2), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--prefect-workers",
        type=int,
        default=1,
        help="API processes of the Prefect server (services in one more)",
    )
    args = parser.parse_args()
    from benchmarks.latency import scratch_environment

    work = scratch_environment("ingest-")
    from tests.support.databases import scratch_database, start_postgres_if_needed
    from tests.support.media import make_jpeg
    from tests.support.processes import free_port, stop_process
    from tests.support.services import PrivateRedis, PrivateSeaweed, start_prefect_server

    start_postgres_if_needed()
    # No worker claims the runs here, so Prefect's late-runs service would mark each one
    # Late 15 s after its creation (a state change, with its events): a fifth of the
    # server's CPU during the load, which production, whose workers claim runs at once,
    # does not pay.
    os.environ["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] = "false"
    photo_path = make_jpeg(work / "photo.jpg", 2600, 1950, quality=97)  # about 3 MB
    photo = photo_path.read_bytes()
    report: dict[str, Any] = {
        "photo_bytes": len(photo),
        "uploads": args.uploads,
        "clients": args.clients,
        "prefect_api_processes": args.prefect_workers,
    }
    redis = PrivateRedis(work / "redis").start()
    seaweed = PrivateSeaweed(work / "seaweed").start()
    try:
        for storage, env in (("local", {}), ("s3", seaweed.env("ingest"))):
            # A Prefect server and databases of the round's own: the runs the other round
            # left waiting (and marked Late) cost the server nothing here.
            with (
                scratch_database("mp_ingest_prefect") as prefect_db,
                scratch_database("mp_ingest_app") as app_db,
            ):
                port = free_port()
                server = start_prefect_server(
                    f"postgresql+asyncpg://root@127.0.0.1:5432/{prefect_db}",
                    redis.url,
                    work / f"server-{storage}.log",
                    port,
                    workers=args.prefect_workers,
                )
                os.environ.update(
                    {
                        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                        "DATABASE_URL": f"postgresql+psycopg://root@127.0.0.1:5432/{app_db}",
                        "MEDIA_PIPELINE_API_TOKENS": TOKEN,
                        **env,
                    }
                )
                try:
                    run_round(storage, report, args, photo, work)
                finally:
                    stop_process(server)
                    for name in env:
                        os.environ.pop(name)
    finally:
        seaweed.close()
        redis.close()
    print(json.dumps(report, indent=2))
    for storage in ("local", "s3"):
        row = report[storage]
        base_ms = report[f"{storage}_floor"]["floor"]["p50_ms"]
        relay_cpu = row["cpu_ms_each_by_program"]["prefect server"]
        alone = report["submission"]["server_cpu_ms_per_run_one_request_each"]
        for phase, name in (("one_client", "back to back"), ("paced", f"every {PACE_SECONDS} s")):
            one = report[f"{storage}_{phase}"]
            print(
                f"{storage}, one client, {name}: complete p50 {one['complete']['p50_ms']} ms, "
                f"complete-to-Scheduled p50 {one['complete_to_scheduled']['p50_ms']} ms / p95 "
                f"{one['complete_to_scheduled']['p95_ms']} ms (goal p50 < 100)"
            )
        print(
            f"{storage}, {args.clients} clients: complete-to-Scheduled p50 "
            f"{row['complete_to_scheduled']['p50_ms']} ms / p95 "
            f"{row['complete_to_scheduled']['p95_ms']} ms; Prefect server CPU per run "
            f"{relay_cpu} ms in the relay's batches against {alone} ms one request each "
            f"({relay_cpu / alone:.2f}x)"
        )
        print(
            f"{storage}: complete p95 {row['complete']['p95_ms']} ms (goal < 100), API CPU "
            f"{row['api_cpu_ms_each']} ms per upload (goal < 20), {row['per_second']} "
            f"uploads/s; Prefect server CPU {row['cpu_ms_each_by_program']['prefect server']} "
            f"ms per upload, {row['cores_busy_by_program']['prefect server']} cores; "
            f"complete p50 / authenticated 404 p50 = "
            f"{row['complete']['p50_ms'] / base_ms:.1f}"
        )
        if "store_head" in row:
            head = row["store_head"]
            print(
                f"{storage}: complete's read of the upload's head from the store during the "
                f"load, alone: p50 {head['p50_ms']} ms / p95 {head['p95_ms']} ms"
            )


if __name__ == "__main__":
    main()
