"""Running ``media-pipeline`` as a person does on the embedded default: whole processes,
no PREFECT_API_URL, and the local instances (Prefect server, local service) they leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

SCRIPT = str(Path(sys.executable).parent / "media-pipeline")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def embedded_env(data: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "DATABASE_URL"))
    }
    return {**env, "MEDIA_PIPELINE_DATA_DIR": str(data), **extra}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def service_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).json().get("worker") == "ready"
    except (httpx.HTTPError, ValueError):
        return False


def server_state(data: Path) -> dict[str, Any] | None:
    """What the data dir ``data``'s local Prefect server recorded (pid, url), if it did."""
    path = data / "prefect-server" / "server.json"
    return json.loads(path.read_text()) if path.exists() else None


def service_states(data: Path) -> list[dict[str, Any]]:
    """What each local service under ``data`` recorded (pid, url): one per settings."""
    return [json.loads(p.read_text()) for p in sorted(data.glob("local-service/*/api.json"))]
