"""A process worker that forks each flow run from a warm, pre-imported interpreter.

The stock process worker starts Python and imports Prefect (and the flow's code) for every
flow run: seconds of CPU before the first job starts. This worker keeps one interpreter
that has imported the engine and the pipeline (``multiprocessing``'s forkserver: a fresh,
single-threaded process that only imports) and forks each flow run from it. A flow run is
still one OS process: a crash, even a segfault in a decoder, ends only that run, which is
marked Crashed from its exit code; cancellation, heartbeats and logs work as with the
stock worker, through the same Prefect runner machinery.

What the worker already read is handed to the child: the flow run, and, when the
deployment's pull steps only set a local working directory, the deployment's entrypoint
(the child then loads the flow without reading the deployment again).

The environment is frozen: libraries and code are those imported when the interpreter
started, and the job variable ``command`` is ignored. The interpreter is restarted when a
source file it imported changes or a package is installed. Settings still come from each
run's environment.

Pinned to Prefect 3.9.x: it uses the runner's private executor, process handle and
control channel, as Prefect's own process worker does.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.utilities.processutils import sanitize_subprocess_env
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.runner._control_channel import ControlChannel

WORKER_TYPE = "media-warm-process"
# The engine first: another order made children fail with anyio's NoEventLoopError.
ENGINE_MODULES = ("prefect.flow_engine", "prefect.engine", "deployments.warm_child")
WORKING_DIRECTORY_STEPS = {
    "prefect.deployments.steps.set_working_directory",
    "prefect.deployments.steps.pull.set_working_directory",
}


def local_working_directory(pull_steps: list[dict[str, Any]] | None) -> Path | None:
    """The directory a deployment's pull steps change to, when that is all they do."""
    if not pull_steps or len(pull_steps) != 1:
        return None
    ((step, arguments),) = pull_steps[0].items()
    directory = (arguments or {}).get("directory")
    if step not in WORKING_DIRECTORY_STEPS or not isinstance(directory, str):
        return None
    if "{{" in directory or not Path(directory).is_dir():
        return None
    return Path(directory)


class WarmProcessJobConfiguration(ProcessJobConfiguration):
    """The process worker's configuration, plus what the deployment says about its code."""

    _entrypoint: str | None = PrivateAttr(default=None)
    _code_directory: Path | None = PrivateAttr(default=None)

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )
        if deployment is not None and deployment.entrypoint:
            self._code_directory = local_working_directory(deployment.pull_steps)
            self._entrypoint = deployment.entrypoint if self._code_directory else None


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
        from deployments.warm_child import report_loaded_files

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
        from deployments.warm_child import run_flow_run

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


class WarmStarter:
    """Starts a flow run as a child of the warm interpreter (the runner's starter protocol)."""

    def __init__(
        self,
        interpreter: WarmInterpreter,
        configuration: WarmProcessJobConfiguration,
        cwd: Path,
        control_channel: ControlChannel,
    ) -> None:
        self._interpreter = interpreter
        self._configuration = configuration
        self._cwd = cwd
        self._control_channel = control_channel

    def environment(self, flow_run: FlowRun, control: dict[str, str]) -> dict[str, str]:
        """What ``python -m prefect.engine`` would be given by the stock process worker."""
        settings = get_current_settings().to_environment_variables(exclude_unset=True)
        entrypoint = self._configuration._entrypoint
        return sanitize_subprocess_env({
            **os.environ,
            **self._configuration.env,
            **settings,
            "PREFECT__FLOW_RUN_ID": str(flow_run.id),
            "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            **control,
            **({"PREFECT__FLOW_ENTRYPOINT": entrypoint} if entrypoint else {}),
        })  # fmt: skip

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        port, token = self._control_channel.register(flow_run.id)
        control = {"PREFECT__CONTROL_PORT": str(port), "PREFECT__CONTROL_TOKEN": token}
        try:
            process = await anyio.to_thread.run_sync(
                self._interpreter.fork, flow_run, self.environment(flow_run, control), self._cwd
            )
        except BaseException:
            self._control_channel.unregister(flow_run.id)
            raise
        task_status.started(ProcessHandle(process))
        await wait_for_exit(process)


class WarmProcessWorker(ProcessWorker):
    """``prefect worker start --pool media --type media-warm-process``."""

    type = WORKER_TYPE
    job_configuration = WarmProcessJobConfiguration
    _description = (
        "Forks each flow run from a warm interpreter that has imported Prefect and the "
        "media pipeline: a flow run starts in milliseconds instead of seconds."
    )
    _display_name = "Warm process (media pipeline)"

    async def setup(self) -> None:
        await super().setup()
        from media_pipeline.settings import get_settings

        self._interpreter = WarmInterpreter(get_settings().orchestration.warm_preload)
        seconds = await anyio.to_thread.run_sync(self._interpreter.start)
        self._logger.info("Warm interpreter ready in %.1f s", seconds)
        self._executors = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        self._exit_stack.callback(self._interpreter.stop)
        listeners = await self._exit_stack.enter_async_context(anyio.create_task_group())
        listeners.start_soon(self._submit_on_schedule_events)
        self._exit_stack.callback(listeners.cancel_scope.cancel)  # runs before the group exits

    async def _submit_on_schedule_events(self) -> None:
        """Look for work as soon as a flow run of the pool is scheduled, not at the next poll.

        Events that arrive while a poll is under way are served by one more poll, not one
        each. Polling goes on as a fallback (``PREFECT_WORKER_QUERY_SECONDS``); a poll asks
        the server for runs in queue-priority order, so priorities hold either way.
        """
        wake = anyio.Event()

        async def poll_when_woken() -> None:
            nonlocal wake
            while True:
                await wake.wait()
                wake = anyio.Event()
                await self.get_and_submit_flow_runs()

        async with anyio.create_task_group() as group:
            group.start_soon(poll_when_woken)
            while True:
                try:
                    if not self._has_successfully_synced or self._work_pool is None:
                        await anyio.sleep(1)
                        continue
                    scheduled = EventFilter(
                        event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
                        any_resource=EventAnyResourceFilter(
                            id=[f"prefect.work-pool.{self._work_pool.id}"]
                        ),
                    )
                    async with get_events_subscriber(
                        filter=scheduled, reconnect_on_clean_close=True
                    ) as subscriber:
                        async for _ in subscriber:
                            wake.set()
                except Exception as error:  # the polling loop still finds the runs
                    self._logger.warning("Listening for scheduled flow runs failed: %s", error)
                    await anyio.sleep(5)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        assert isinstance(configuration, WarmProcessJobConfiguration)
        logger = self.get_flow_run_logger(flow_run)
        if configuration._command_configured:
            logger.warning("The warm process worker ignores the job variable `command`")
        if await anyio.to_thread.run_sync(self._interpreter.restart_if_stale):
            logger.info("Code changed: the warm interpreter was restarted")
        with ExitStack() as cleanup:
            cwd = configuration._code_directory or configuration.working_dir
            if cwd is None:
                cwd = Path(cleanup.enter_context(tempfile.TemporaryDirectory(suffix="prefect")))
            starter = WarmStarter(
                self._interpreter, configuration, cwd, self._executors.control_channel
            )
            executor = self._executors.create_executor(
                flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False
            )
            execution = None

            async def execute(
                *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                nonlocal execution
                execution = await executor.submit(task_status=task_status)

            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                if task_status is not None and handle.pid is not None:
                    task_status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        if execution.status_code < 0:  # the runner reports the number; name the signal
            number = -execution.status_code
            name = signal.Signals(number).name if number in signal.valid_signals() else number
            logger.error("The flow run's process was killed by %s", name)
        return ProcessWorkerResult(
            status_code=execution.status_code, identifier=str(execution.handle.pid)
        )
