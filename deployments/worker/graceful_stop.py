"""A worker's graceful stop: on SIGTERM or SIGINT, claim nothing more, let the runs in
flight finish for a grace period, hand the rest back to their queue, exit 0.

Prefect's worker turns SIGTERM into a SIGINT to itself, which a process that inherited
SIGINT as ignored (a background job of a shell script, ``nohup``, many supervisors) then
ignores too: the worker went on claiming runs. These handlers are installed on the event
loop whatever the inherited dispositions. A second signal ends the grace period at once.

Only the worker is to be signalled (``kill PID``, Kubernetes, Docker; systemd with
``KillMode=mixed``): a signal sent to the whole process group reaches the runs too, and
they end at once; those are handed back as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any
from uuid import UUID

import anyio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """The worker's children in flight, and what happens to them when it is told to stop."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], grace: float) -> None:
        self.children: dict[UUID, Any] = {}  # flow run id -> its process
        self.stopping = False
        self._logger = logger
        self._grace = grace
        self._grace_over = asyncio.Event()
        self._main_task: asyncio.Task[Any] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take SIGTERM and SIGINT on the running loop; the current task is the one to end."""
        self._main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            loop.add_signal_handler(number, self._signalled, number)

    def _signalled(self, number: int) -> None:
        if self._stop_task is not None:
            self._logger.warning(
                "Received %s again: handing back the runs in flight now",
                signal.Signals(number).name,
            )
            self._grace_over.set()
            return
        self.stopping = True
        self._logger.info(
            "Received %s: claiming no more runs; %d in flight get %.0f s to finish",
            signal.Signals(number).name,
            len(self.children),
            self._grace,
        )
        self._stop_task = asyncio.get_running_loop().create_task(self._stop())

    def hands_back(self, exit_code: int | None) -> bool:
        """Whether the run that just ended is to go back to its queue: it ended badly
        while the worker was stopping (ended by the hand-back, or by the same signal)."""
        return self.stopping and exit_code not in (0, None)

    async def _stop(self) -> None:
        with anyio.move_on_after(self._grace):
            while self.children and not self._grace_over.is_set():
                await anyio.sleep(0.1)
        if self.children:
            self._logger.warning("Handing back %d run(s) still in flight", len(self.children))
        for process in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        with anyio.move_on_after(30):
            while self.children:  # each run() hands its run back, then leaves the map
                await anyio.sleep(0.1)
        assert self._main_task is not None
        self._main_task.cancel()
