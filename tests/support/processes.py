"""Starting and stopping local services for tests: free ports, readiness, kill by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
    ignore_sigint: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, output to ``log``; with ``ignore_sigint``
    as a background job of a shell script starts it (SIGINT inherited as ignored)."""
    handle = log.open("ab")
    return subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_ignore_sigint if ignore_sigint else None,
    )


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop the process and its children by process group; kill if it does not stop, and
    kill what is left of its group once it has (a child that outlived it)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
