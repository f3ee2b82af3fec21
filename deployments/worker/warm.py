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

Prefect is pinned exactly: this uses the runner's private executor, process handle and
control channel (``deployments/prefect_private.py``), as Prefect's own process worker does.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.flows import load_flow_from_flow_run
from prefect.states import Scheduled
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from deployments.prefect_private import FlowRunExecutorContext, ProcessHandle
from deployments.worker.graceful_stop import GracefulStop
from deployments.worker.interpreter import WarmInterpreter
from deployments.worker.slots import RunSlots
from deployments.worker.starter import WarmProcessJobConfiguration, WarmStarter

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import WorkerFlowRunResponse

WORKER_TYPE = "media-warm-process"


class WarmProcessWorker(ProcessWorker):
    """``prefect worker start --pool media --type media-warm-process``.

    Runs at most ``--limit`` flow runs at once (default ``MEDIA_PIPELINE_WORKER_LIMIT``, else
    the CPU count), and ``MEDIA_PIPELINE_WORKER_PROVIDER_LIMIT`` more whose jobs only wait
    on a provider, so each free slot takes the highest-priority queue's next run; a
    finished run frees its slot for an immediate poll. Stops gracefully on SIGTERM or
    SIGINT (``deployments/worker/graceful_stop.py``) and looks for stranded runs of any worker
    (``deployments/operations/reconciler.py``).
    """

    type = WORKER_TYPE
    job_configuration = WarmProcessJobConfiguration
    _description = (
        "Forks each flow run from a warm interpreter that has imported Prefect and the "
        "media pipeline: a flow run starts in milliseconds instead of seconds."
    )
    _display_name = "Warm process (media pipeline)"

    def __init__(
        self,
        *args: Any,
        limit: int | None = None,
        heartbeat_interval_seconds: int | None = None,
        **kwargs: Any,
    ) -> None:
        from media_pipeline.settings import get_settings

        policy = get_settings().orchestration
        heartbeat = min(
            heartbeat_interval_seconds or policy.worker_heartbeat_seconds,
            policy.worker_heartbeat_seconds,
        )
        super().__init__(
            *args,
            limit=limit or policy.worker_limit or os.cpu_count() or 1,
            heartbeat_interval_seconds=heartbeat,
            **kwargs,
        )
        self._policy = policy
        self._wake = anyio.Event()

    async def setup(self) -> None:
        await super().setup()
        self._slots = RunSlots(self._limit or 1, self._policy.worker_provider_limit)
        self._limiter = self._slots  # type: ignore[assignment]  # the same surface
        self._stop = GracefulStop(self._logger, self._policy.worker_grace_seconds)
        self._stop.install()
        self._interpreter = WarmInterpreter(self._policy.warm_preload)
        seconds = await anyio.to_thread.run_sync(self._interpreter.start)
        self._logger.info(
            "Warm interpreter ready in %.1f s; at most %d runs at once, and %d "
            "waiting on providers",
            seconds,
            self._limit,
            self._policy.worker_provider_limit,
        )
        self._executors = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        self._exit_stack.callback(self._interpreter.stop)
        listeners = await self._exit_stack.enter_async_context(anyio.create_task_group())
        listeners.start_soon(self._submit_on_schedule_events)
        listeners.start_soon(self._reconcile_periodically)
        self._exit_stack.callback(listeners.cancel_scope.cancel)  # runs before the group exits

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        if self._stop.stopping:
            return []
        return await super().get_and_submit_flow_runs()

    async def _submit_scheduled_flow_runs(
        self, flow_run_response: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        """Claim one run per poll, the first in priority order whose kind of slot is free
        (``deployments/worker/slots.py``), and poll again while slots are free: each slot
        takes the highest-priority run of that moment, also when two workers poll at once
        (the one that loses a run polls again for the next)."""
        fresh = [r for r in flow_run_response if r.flow_run.id not in self._submitting_flow_run_ids]
        submitted = await super()._submit_scheduled_flow_runs(self._slots.choose(fresh))
        if submitted and self._slots.available_tokens > 0:
            self._wake.set()
        return submitted

    async def _submit_run(self, flow_run: FlowRun) -> None:
        try:
            await super()._submit_run(flow_run)
        finally:
            self._wake.set()  # claimed by another worker, or started: the next slot's turn

    async def _reconcile_periodically(self) -> None:
        from deployments.operations.erasure import sweep_workspaces
        from deployments.operations.queue_board import publish_queue_board
        from deployments.operations.reconciler import Reconciler

        reconciler = Reconciler()
        board_due = 0.0
        while not self._stop.stopping:
            try:
                for recovery in await anyio.to_thread.run_sync(reconciler.run_pass):
                    self._logger.warning("Reconciler: %s", recovery)
                await anyio.to_thread.run_sync(sweep_workspaces)  # this machine's copies
                if time.monotonic() >= board_due:
                    board_due = time.monotonic() + self._policy.board_seconds
                    await anyio.to_thread.run_sync(publish_queue_board)
            except Exception as error:  # the API or the database is away: next pass
                self._logger.warning("Reconciliation pass failed: %s", error)
            await anyio.sleep(self._policy.reconcile_seconds)

    async def _submit_on_schedule_events(self) -> None:
        """Look for work as soon as a flow run of the pool is scheduled, or a slot frees,
        not at the next poll.

        Wake-ups that arrive while a poll is under way are served by one more poll, not one
        each. Polling goes on as a fallback (``PREFECT_WORKER_QUERY_SECONDS``); a poll asks
        the server for runs in queue-priority order, so priorities hold either way.
        """

        async def poll_when_woken() -> None:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
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
                            self._wake.set()
                except Exception as error:  # the polling loop still finds the runs
                    self._logger.warning("Listening for scheduled flow runs failed: %s", error)
                    await anyio.sleep(5)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        try:
            return await self._run(flow_run, configuration, task_status)
        finally:
            self._stop.children.pop(flow_run.id, None)
            self._wake.set()  # a slot is free: take the next run now

    async def _run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None,
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
                self._interpreter,
                configuration,
                cwd,
                self._executors.control_channel,
                self._stop.children,
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
        identifier = str(execution.handle.pid)
        if self._stop.hands_back(execution.status_code):
            await self.client.set_flow_run_state(
                flow_run.id,
                Scheduled(message=f"Handed back by worker {self.name!r}, which was stopping"),
                force=True,
            )
            logger.info("Handed back to its queue: the worker is stopping")
            return ProcessWorkerResult(status_code=0, identifier=identifier)
        if execution.status_code < 0:  # the runner reports the number; name the signal
            number = -execution.status_code
            name = signal.Signals(number).name if number in signal.valid_signals() else number
            logger.error("The flow run's process was killed by %s", name)
        # The executor has reported the crash already, unless the API refused it: a second
        # report (Prefect's worker makes one for any non-zero status) would land after the
        # reconciler may have scheduled the run again, and undo that (one kill, two
        # recoveries). Prefect's own process worker reports twice.
        status = execution.status_code if execution.crash_unreported else 0
        return ProcessWorkerResult(status_code=status, identifier=identifier)
