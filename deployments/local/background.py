"""A process of the embedded default that outlives the command that started it (the local
Prefect server's watcher, a local service): its folder, the state it records there while
it lives (``{"pid", "url", ...}``), started by one command at a time on a free port of
127.0.0.1, stopped by its pid. Only the standard library: the watcher imports this first."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


def running_state(state_file: Path) -> dict[str, Any] | None:
    """The JSON a background process recorded in ``state_file``, while its pid lives."""
    try:
        state = json.loads(state_file.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return state  # type: ignore[no-any-return]


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Background:
    folder: Path
    state_name: ClassVar[str]  # the file it records its state in, in its folder
    log_name: ClassVar[str]

    @property
    def state_file(self) -> Path:
        return self.folder / self.state_name

    def state(self) -> dict[str, Any] | None:
        """What the running process recorded, or None."""
        return running_state(self.state_file)

    def command(self, port: int) -> tuple[list[str], dict[str, str], dict[str, Any]]:
        """What to start on ``port``: its arguments, its environment, and what its state
        records beside its pid."""
        raise NotImplementedError

    def launch(self) -> dict[str, Any]:
        """The running process's state, starting it first when there is none, without
        waiting for it to answer: one command starts it, the others wait for the lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (state := self.state()) is not None:
                return state
            args, env, recorded = self.command(free_local_port())
            with (self.folder / self.log_name).open("ab") as log:
                process = subprocess.Popen(
                    args,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # outlives the command that started it
                )
            state = {"pid": process.pid, **recorded}
            self.state_file.write_text(json.dumps(state))
            return state

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then wait up to ``timeout`` seconds for it to end; False when it was not
        running."""
        state = self.state()
        if state is None:
            return False
        os.kill(int(state["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.state() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        self.state_file.unlink(missing_ok=True)
        return True
