"""Commands for one machine: the schema, processing a file in-process, the demo, settings."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli.common import fail, id_parser, print_table
from media_pipeline.enums import MediaStatus
from media_pipeline.errors import PipelineError

if TYPE_CHECKING:  # imported by the commands that need them: process starts sooner
    from media_pipeline.payloads import MediaSummary, OutputRecord

AlertOption = Annotated[
    uuid.UUID | None,
    typer.Option(parser=id_parser("alert id"), help="Alert id (UUID); new alert if omitted"),
]

local = typer.Typer()
db_app = typer.Typer(no_args_is_help=True, help="The pipeline's database.")
server_app = typer.Typer(
    no_args_is_help=True,
    help="The local Prefect server of the embedded default (process and demo start it), "
    "and the local service later process commands use.",
)


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (if it is not running) and print its API URL."""
    from deployments.local.server import local_server

    typer.echo(local_server().start())


@server_app.command("prepare")
def server_prepare() -> None:
    """Make the migrated database a fresh local server starts from (make setup runs it)."""
    from deployments.local.server import prepare_database_template

    typer.echo(prepare_database_template())


@server_app.command("stop")
def server_stop() -> None:
    """Stop every local service of the data dir, then the local Prefect server."""
    from deployments.local.server import local_server
    from deployments.local.service import local_services
    from media_pipeline.settings import get_settings

    stopped = [service.stop() for service in local_services(get_settings().storage.data_dir)]
    typer.echo("stopped" if local_server().stop() or any(stopped) else "not running")


@server_app.command("status")
def server_status() -> None:
    """Whether the local Prefect server runs (its API URL, process and idle time), and
    each local service of the data dir with the settings it serves (never a key)."""
    import time

    from deployments.local.server import local_server
    from deployments.local.service import local_services
    from media_pipeline.settings import get_settings

    server = local_server()
    state = server.state()
    if state is None:
        typer.echo("not running")
        raise typer.Exit(1)
    idle = time.time() - server.last_used.stat().st_mtime
    typer.echo(
        f"running at {state['url']} (process {state['pid']}, idle {idle:.0f} s); "
        f"its UI and API ask for the credentials in {server.auth_file}"
    )
    for service in local_services(get_settings().storage.data_dir):
        if (running := service.state()) is not None:
            served = service.description()
            typer.echo(
                f"local service at {running['url']} (process {running['pid']}, work "
                f"pool {served['pool']}): data dir {served['data_dir']}, media root "
                f"{served['media_root']}, database {served['database']}, storage "
                f"{served['storage']}"
            )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations (Alembic) to DATABASE_URL."""
    from db.migrate import current_revision, upgrade

    upgrade(revision=revision)
    typer.echo(f"database at revision {current_revision()}")


@local.command()
def process(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    category: Annotated[str, typer.Option(help="Alert category code (DISP, DECD...)")] = "AUTRE",
    alert: AlertOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Register FILE and process it; exit 0 when READY, 1 otherwise.

    On the embedded default the first command runs the flow in-process and leaves the
    local service running; later ones hand the file to it (see deployments/local/service.py).
    """
    try:
        summary = process_here_or_by_service(file, alert, category)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        print_summary(summary)
    raise typer.Exit(0 if summary.status is MediaStatus.READY else 1)


def process_here_or_by_service(file: Path, alert: uuid.UUID | None, category: str) -> MediaSummary:
    launched = launch_local_server_early()  # none when the service runs: it has one
    from deployments.local.server import local_server
    from deployments.local.service import (
        launch_after_first_process,
        process_through_service,
        running_service_url,
    )

    url = running_service_url()
    if url is not None and (done := process_through_service(url, file, alert, category)):
        typer.echo(f"processed by the local service at {url}", err=True)
        return done
    from prefect.settings import get_current_settings

    from deployments.local.processing import process_file

    if launched and get_current_settings().api.url:  # a Prefect profile names a server
        local_server().stop()
    summary = process_file(file, alert, category)
    launch_after_first_process()
    return summary


def launch_local_server_early() -> bool:
    """On the embedded default, start the local server first thing: it boots while this
    command imports the pipeline and registers the file (``process_file`` then waits for
    it). Decided from the environment before Prefect is imported (0.9 s), so a server
    named only by a Prefect profile is seen just after; returns whether it launched one."""
    from deployments.local.server import local_server
    from media_pipeline.settings import get_settings

    if os.environ.get("PREFECT_API_URL") or not get_settings().orchestration.local_server:
        return False
    server = local_server()
    if server.state() is not None:
        return False
    server.launch()
    return True


@local.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    category: Annotated[str, typer.Option(help="Alert category code (DISP, DECD...)")] = "AUTRE",
    alert: AlertOption = None,
    submit: Annotated[bool, typer.Option(help="Also create its flow runs on the server")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Register FILE (type detected from its content) and print the new media id."""
    from db.migrate import upgrade
    from deployments.operations.registration import register_media

    upgrade()
    try:
        media = register_media(file, alert, category)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    run_ids: list[str] = []
    if submit:
        from deployments.local.server import prefect_api
        from deployments.operations.client_api import submit_media

        with prefect_api():  # the embedded default's local server, when no other is named
            run_ids = submit_media(media.id)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "media_id": str(media.id),
                    "alert_id": str(media.alert_id),
                    "type": media.type.value,
                    "flow_runs": run_ids,
                }
            )
        )
        return
    typer.echo(f"{media.id}\t{media.type.value}")
    for run_id in run_ids:
        typer.echo(f"flow run {run_id}")


@local.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summaries as JSON")] = False,
) -> None:
    """Generate sample media, process each one, and print where the outputs are."""
    from deployments.local.demo import run_demo
    from deployments.local.service import launch_after_first_process
    from media_pipeline.settings import get_settings

    summaries = run_demo()
    launch_after_first_process()  # for the next commands, as the first process does
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
    else:
        for summary in summaries:
            print_summary(summary)
            typer.echo("")
        typer.echo(f"outputs are under {get_settings().media_root}")
    raise typer.Exit(0 if all(s.status is MediaStatus.READY for s in summaries) else 1)


@local.command()
def config() -> None:
    """Print every setting: environment variable, default, meaning (Markdown table)."""
    from media_pipeline.settings import settings_table

    typer.echo("| variable | default | meaning |\n|---|---|---|")
    for name, default, description in settings_table():
        shown = default if len(default) <= 40 else default[:37] + "..."
        typer.echo(f"| `{name}` | `{shown}` | {description} |")


def print_summary(summary: MediaSummary) -> None:
    typer.echo(f"media {summary.media_id} ({summary.type.value}): {summary.status.value}")
    rows = []
    for job in summary.jobs:
        for index, output in enumerate(job.outputs or [None]):
            first = index == 0
            rows.append(
                (
                    job.job if first else "",
                    job.state.value if first else "",
                    job.attempts if first else "",
                    describe_output(output) or (job.error or ""),
                )
            )
    print_table(("job", "state", "attempts", "output"), rows)


def describe_output(output: OutputRecord | None) -> str:
    if output is None:
        return ""
    if output.type == "TRANSCRIPTION":
        return (
            f"TRANSCRIPTION v{output.version} ({output.chars} chars, "
            f"{output.language or '?'}, {output.duration or 0:.1f}s)"
        )
    if output.type == "ENHANCED":
        return f"ENHANCED media {output.media_id}: {output.path}"
    size = f"{output.width}x{output.height}" if output.height else ""
    duration = f"{output.duration:.1f}s" if output.duration else ""
    details = ", ".join(x for x in (size, duration, f"{output.bytes or 0:,} B") if x)
    return f"{output.type}: {output.path} ({details})"
