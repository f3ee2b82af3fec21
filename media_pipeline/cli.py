"""The ``media-pipeline`` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from media_pipeline.errors import PipelineError
from media_pipeline.tables import render_table

# Prefect's server tries to phone home; there is no network to reach on most deployments.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The pipeline's database.")
app.add_typer(db_app, name="db")


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations (Alembic) to DATABASE_URL."""
    from db.migrate import current_revision, upgrade

    upgrade(revision=revision)
    typer.echo(f"database at revision {current_revision()}")


@app.command()
def process(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    category: Annotated[str, typer.Option(help="Alert category code (DISP, DECD...)")] = "AUTRE",
    alert: Annotated[str | None, typer.Option(help="Alert id (UUID); new alert if omitted")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Register FILE and process it in-process; exit 0 when READY, 1 otherwise."""
    from media_pipeline.processing import process_file

    try:
        summary = process_file(file, alert, category)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    raise typer.Exit(0 if summary["status"] == "READY" else 1)


@app.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    category: Annotated[str, typer.Option(help="Alert category code (DISP, DECD...)")] = "AUTRE",
    alert: Annotated[str | None, typer.Option(help="Alert id (UUID); new alert if omitted")] = None,
    submit: Annotated[bool, typer.Option(help="Also create its flow runs on the server")] = False,
) -> None:
    """Register FILE (type detected from its content) and print the new media id."""
    from db.migrate import upgrade
    from media_pipeline.registration import register_media

    upgrade()
    try:
        media = register_media(file, alert, category)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{media.id}\t{media.type.value}")
    if submit:
        from deployments.client_api import submit_media

        for run_id in submit_media(str(media.id)):
            typer.echo(f"flow run {run_id}")


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summaries as JSON")] = False,
) -> None:
    """Generate sample media, process each one, and print where the outputs are."""
    from media_pipeline.demo import run_demo
    from media_pipeline.settings import get_settings

    summaries = run_demo()
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
    else:
        for summary in summaries:
            print_summary(summary)
            typer.echo("")
        typer.echo(f"outputs are under {get_settings().media_root}")
    raise typer.Exit(0 if all(s["status"] == "READY" for s in summaries) else 1)


@app.command()
def config() -> None:
    """Print every setting: environment variable, default, meaning (Markdown table)."""
    from media_pipeline.settings import settings_table

    typer.echo("| variable | default | meaning |\n|---|---|---|")
    for name, default, description in settings_table():
        shown = default if len(default) <= 40 else default[:37] + "..."
        typer.echo(f"| `{name}` | `{shown}` | {description} |")


def print_summary(summary: dict[str, Any]) -> None:
    typer.echo(f"media {summary['media_id']} ({summary['type']}): {summary['status']}")
    rows = []
    for job in summary["jobs"]:
        outputs = job["outputs"] or [{}]
        for index, output in enumerate(outputs):
            first = index == 0
            rows.append((job["job"] if first else "", job["state"] if first else "",
                         job["attempts"] if first else "",
                         describe_output(output) or (job["error"] or "")))  # fmt: skip
    typer.echo(render_table(("job", "state", "attempts", "output"), rows))


def describe_output(output: dict[str, Any]) -> str:
    if not output:
        return ""
    if output.get("type") == "TRANSCRIPTION":
        return (f"TRANSCRIPTION v{output['version']} ({output['chars']} chars, "
                f"{output.get('language') or '?'}, {output['duration']:.1f}s)")  # fmt: skip
    if output.get("type") == "ENHANCED":
        return f"ENHANCED media {output['media_id']}: {output['path']}"
    size = f"{output['width']}x{output['height']}" if output.get("height") else ""
    duration = f"{output['duration']:.1f}s" if output.get("duration") else ""
    details = ", ".join(x for x in (size, duration, f"{output['bytes']:,} B") if x)
    return f"{output['type']}: {output['path']} ({details})"


from deployments.cli import register_commands  # noqa: E402  (after app exists)

register_commands(app, fail)
