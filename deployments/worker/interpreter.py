"""The warm interpreter: a forkserver that has imported Prefect's engine and the pipeline,
from which each flow run is forked, and the waiting for its children.

CPython-private: ``retire_forkserver`` reaches into ``multiprocessing.forkserver``'s
module-level server (its pid, address and "alive" pipe), checked for 3.11 to 3.13.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

if sys.version_info >= (3, 14):  # the forkserver's private fields changed shape in 3.14
    raise RuntimeError("the warm worker's forkserver handling is checked up to Python 3.13")

# The engine first: another order made children fail with anyio's NoEventLoopError.
ENGINE_MODULES = (
    "prefect.flow_engine",
    "prefect.engine",
    "deployments.worker.child",
    "deployments.worker.preload",
)


def main_script_imports() -> list[str]:
    """What the worker's ``__main__`` script imports at its top level.

    Every child re-runs a script ``__main__`` (``prefect worker start`` is one): that is how
    multiprocessing recreates ``__main__``, and preloading ``"__main__"`` does not prevent
    it on Python 3.11 (the forkserver is never told the script's path). With these modules
    imported beforehand, re-running the script costs nothing.
    """
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or not path:
        return []  # `python -m ...`: children do not re-run it
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


class WarmInterpreter:
    """The forkserver: started once, restarted when the code it imported changes."""

    def __init__(self, preload: Sequence[str]) -> None:
        self.modules = [*ENGINE_MODULES, *main_script_imports(), *preload]
        self._context = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()
        self._files: dict[str, int] = {}

    def start(self) -> float:
        """Start (or restart) the interpreter and wait until it has imported everything.
        Returns the seconds it took."""
        with self._lock:
            return self._start_unlocked()

    def _start_unlocked(self) -> float:
        began = time.monotonic()
        retire_forkserver()
        self._context.set_forkserver_preload(self.modules)
        reader, writer = self._context.Pipe(duplex=False)
        from deployments.worker.child import report_loaded_files

        probe = self._context.Process(
            target=report_loaded_files, args=(writer, self.modules), daemon=True
        )
        probe.start()
        writer.close()
        missing, files = reader.recv()
        probe.join()
        if missing:
            raise RuntimeError(
                f"the warm interpreter could not import {', '.join(missing)}: check "
                "MEDIA_PIPELINE_WARM_PRELOAD and that the worker runs in the project's environment"
            )
        self._files = {path: mtime for path in files if (mtime := _mtime(path)) is not None}
        return time.monotonic() - began

    def stale(self) -> bool:
        """A source file it imported changed, or a package was installed or removed."""
        return any(_mtime(path) != mtime for path, mtime in self._files.items())

    def restart_if_stale(self) -> bool:
        with self._lock:
            if not self.stale():
                return False
            self._start_unlocked()
            return True

    def fork(self, flow_run: FlowRun, env: dict[str, str], cwd: Path) -> Any:
        """Start the child that runs ``flow_run``; returns its multiprocessing process."""
        from deployments.worker.child import run_flow_run

        process = self._context.Process(
            target=run_flow_run,
            args=(flow_run.model_dump(mode="json"), env, str(cwd)),
            name=f"flow-run-{flow_run.id}",
        )
        with self._lock:
            process.start()
        return process

    def stop(self) -> None:
        with self._lock:
            retire_forkserver()


def retire_forkserver() -> None:
    """Let the next fork start a new forkserver, without waiting for this one.

    ``ForkServer._stop`` would wait until every child of the old server has ended (each
    holds its "alive" pipe): a restart for new code would hold new runs back behind a
    half-hour transcription. The old server goes on reporting the exit codes of its
    children and exits after the last one; a thread reaps it.
    """
    server = multiprocessing.forkserver._forkserver
    with server._lock:
        pid, address = server._forkserver_pid, server._forkserver_address
        if pid is None:
            return
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
    if not multiprocessing.util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)  # new children connect to the new server only
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


async def readable(fd: int) -> None:
    """Wait, without a thread, until ``fd`` is readable."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def wait_for_exit(process: Any) -> None:
    """Wait until a child of the warm interpreter has ended, then read its exit code.

    The forkserver reports the code on the child's sentinel, and closes the sentinel if it
    is killed while the child goes on running. So the end of the process itself is awaited
    first, through a pidfd (Linux), and the sentinel after it; a code the forkserver could
    not report reads as 255.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd here, or the child already ended
        pidfd = None
    if pidfd is not None:
        try:
            await readable(pidfd)
        finally:
            os.close(pidfd)
    await readable(process.sentinel)
    process.join()
