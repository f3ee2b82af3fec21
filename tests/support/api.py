"""``media-pipeline api`` as a real process on a free port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port, http_ok, start_process, wait_until

SCRIPT = str(Path(sys.executable).parent / "media-pipeline")


def start_api(
    log: Path,
    *,
    timeout: float = 120,
    cwd: Path | None = None,
    base_env: dict[str, str] | None = None,
    **env: str,
) -> tuple[subprocess.Popen[bytes], str]:
    """The API with ``base_env`` (this process's environment) plus ``env``; its base URL
    once it answers."""
    port = free_port()
    process = start_process([SCRIPT, "api", "--host", "127.0.0.1", "--port", str(port)],
                            {**(base_env or os.environ), **env}, log, cwd=cwd)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited:\n{log.read_text()[-3000:]}")
        return http_ok(f"{base}/health")

    wait_until(up, timeout, "the API", interval=0.3)
    return process, base
