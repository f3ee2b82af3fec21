"""How the warm worker starts one flow run: its job configuration (what the deployment
says about its code) and the starter that forks the run from the warm interpreter with the
environment the stock process worker would give it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.settings import get_current_settings
from prefect.utilities.processutils import sanitize_subprocess_env
from prefect.workers.process import ProcessJobConfiguration
from pydantic import PrivateAttr

from deployments.prefect_private import ProcessHandle
from deployments.worker.interpreter import WarmInterpreter, wait_for_exit

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

    from deployments.prefect_private import ControlChannel

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


class WarmStarter:
    """Starts a flow run as a child of the warm interpreter (the runner's starter protocol)."""

    def __init__(
        self,
        interpreter: WarmInterpreter,
        configuration: WarmProcessJobConfiguration,
        cwd: Path,
        control_channel: ControlChannel,
        in_flight: dict[UUID, Any],
    ) -> None:
        self._interpreter = interpreter
        self._configuration = configuration
        self._cwd = cwd
        self._control_channel = control_channel
        self._in_flight = in_flight

    def environment(self, flow_run: FlowRun, control: dict[str, str]) -> dict[str, str]:
        """What ``python -m prefect.engine`` would be given by the stock process worker."""
        settings = get_current_settings().to_environment_variables(exclude_unset=True)
        entrypoint = self._configuration._entrypoint
        return sanitize_subprocess_env(
            {
                **os.environ,
                **self._configuration.env,
                **settings,
                "PREFECT__FLOW_RUN_ID": str(flow_run.id),
                "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
                **control,
                **({"PREFECT__FLOW_ENTRYPOINT": entrypoint} if entrypoint else {}),
            }
        )

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
        self._in_flight[flow_run.id] = process
        task_status.started(ProcessHandle(process))
        await wait_for_exit(process)
