"""Commands for the production profile: set-up, submit, status, stats, failures, the
reconciler."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployments.cli.common import call, fail, id_parser, parse_since, print_table

if TYPE_CHECKING:
    from deployments.operations.client_api import FailedRun

SinceOption = Annotated[str | None, typer.Option(help="Only runs started in the last 6h, 2d...")]
JobOption = Annotated[str | None, typer.Option(help="Only runs whose job failed: generate-...")]
MediaTypeOption = Annotated[
    str | None, typer.Option("--type", help="Only runs of IMAGE, AUDIO or VIDEO media")
]

FullOption = Annotated[bool, typer.Option("--full", help="The whole error, not its start")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]

operations = typer.Typer()


@operations.command()
def setup(
    deployments: Annotated[bool, typer.Option(help="Also run prefect deploy")] = True,
    as_json: JsonOption = False,
) -> None:
    """Create or update the work pool, its queues, automations and deployments."""
    from deployments.operations.setup import setup as run_setup

    result = run_setup(deployments=deployments)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"work pool {result['pool']} (workers of type {result['worker_type']})")
    queues = sorted(result["queues"].items(), key=lambda item: item[1])
    print_table(("queue", "priority"), queues)
    typer.echo(f"rate limits (calls a minute): {result['rate_limits_per_minute']}")


@operations.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    idle_exit: Annotated[
        float, typer.Option(help="Stop after this many seconds without a request; 0: never")
    ] = 0,
    instance: Annotated[
        str | None, typer.Option(hidden=True, help="The local service's settings fingerprint")
    ] = None,
) -> None:
    """Serve the HTTP API (upload workflow, media, jobs, queue stats; docs at /docs).

    Without PREFECT_API_URL it also processes what it submits (embedded default).
    """
    from deployments.api.server import serve

    call(serve, host=host, port=port, idle_exit=idle_exit, instance=instance)


@operations.command()
def submit(
    media_id: Annotated[uuid.UUID, typer.Argument(parser=id_parser("media id"))],
    reprocess: Annotated[bool, typer.Option(help="New runs even if already submitted")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the flow runs of a registered media and print their ids (no waiting)."""
    from deployments.operations.client_api import submit_media

    run_ids = call(submit_media, media_id=media_id, reprocess=reprocess)
    typer.echo(
        json.dumps({"media_id": str(media_id), "flow_runs": run_ids})
        if as_json
        else "\n".join(run_ids)
    )


@operations.command()
def status(
    flow_run_id: Annotated[uuid.UUID, typer.Argument(parser=id_parser("flow run id"))],
) -> None:
    """A flow run's state, progress, attempts and per-job states (JSON)."""
    from deployments.operations.client_api import get_job_status

    typer.echo(json.dumps(call(get_job_status, flow_run_id=flow_run_id), indent=2))


@operations.command()
def reconcile(
    watch: Annotated[bool, typer.Option(help="Go on: a pass every reconcile_seconds")] = False,
    as_json: JsonOption = False,
) -> None:
    """Find stranded runs (their worker died, or they ended without recording their
    jobs) and schedule them again, or end them FAILED after max_recoveries. Warm workers
    do this by themselves; run ``--watch`` beside stock process workers."""
    from deployments.operations.reconciler import Reconciler
    from media_pipeline.settings import get_settings

    reconciler = Reconciler()
    if watch:
        reconciler.watch(get_settings().orchestration.reconcile_seconds)
    recoveries = reconciler.run_pass()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in recoveries], indent=2))
        return
    rows = [(r.media_id, r.flow_run_id or "", r.action, r.reason) for r in recoveries]
    print_table(("media", "flow run", "action", "reason"), rows)


@operations.command()
def metrics(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of /metrics")] = 9464,
) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics (runs per queue and state,
    oldest waiting run, jobs, attempts, durations, estimated cost, provider calls)."""
    from deployments.operations.metrics import serve

    typer.echo(f"serving http://{host}:{port}/metrics")
    serve(host, port)


@operations.command()
def stats(as_json: JsonOption = False) -> None:
    """The queue board, as the UI's ``queue-board`` artifact shows it: the outbox (accepted
    uploads whose runs are not created yet), per queue (waiting, active, completed, failed,
    delayed, total, paused, oldest waiting) in the last hour and day, per job and media
    type, the newest backfills, and the newest failures with their reason."""
    from deployments.operations.queue_board import (
        BACKFILL_COUNTS,
        COUNTS,
        board,
        outbox_line,
        outbox_summary,
    )

    if not as_json:  # first: it is what an operator needs to see while Prefect is away
        typer.echo(outbox_line(outbox_summary()))
    content = board()
    if as_json:
        typer.echo(json.dumps(content, indent=2))
        return
    for window, title in (("last_hour", "last hour"), ("last_day", "last day")):
        typer.echo(f"queues, {title}:")
        rows = [
            (
                queue,
                *(row[c] for c in COUNTS),
                "paused" if row["paused"] else "",
                f"{row['oldest_waiting_seconds']:.0f} s",
            )
            for queue, row in content[window].items()
        ]
        print_table(("queue", *COUNTS, "paused", "oldest waiting"), rows)
    typer.echo("per job and media type, last day:")
    rows = [
        (name, *(row[c] for c in COUNTS))
        for name, row in content["by_job_and_type_last_day"].items()
    ]
    print_table(("", *COUNTS), rows)
    typer.echo("backfills:")
    rows = [
        tuple(b[c] for c in ("id", "job", "selection", "status", *BACKFILL_COUNTS))
        for b in content["backfills"]
    ]
    print_table(
        ("backfill", "job", "selection", "status", *BACKFILL_COUNTS), rows, keep=("backfill",)
    )
    typer.echo("newest failures:")
    failures = [
        (f["reason"], f["media"], f["type"], f["tier"], f["when"])
        for f in content["newest_failures"]
    ]
    print_table(("error", "media", "type", "tier", "when"), failures, keep=("media",))


@operations.command()
def failed(
    since: SinceOption = None,
    job: JobOption = None,
    media_type: MediaTypeOption = None,
    full: FullOption = False,
    as_json: JsonOption = False,
) -> None:
    """Failed and crashed flow runs, newest first: the error, media, type, tier, jobs."""
    from deployments.operations.client_api import failed_runs

    runs = call(failed_runs, since=parse_since(since), job=job, media_type=media_type)
    print_runs(runs, full, as_json)


RETRY_EXAMPLES = """Show, then re-run, failed and crashed flow runs under the same ids: jobs
that finished are served from the cache. Takes the filters of ``failed``. Runs whose every
failure was permanent (a corrupt file, a provider's 4xx: "not retried") are left alone
unless --include-permanent.

Examples:

  media-pipeline retry-failed --since 6h --job transcribe-audio --dry-run

  media-pipeline retry-failed --since 6h --job transcribe-audio

  media-pipeline retry-failed 0b1c...   (flow run ids)

  media-pipeline retry-failed --all --include-permanent
"""


@operations.command("retry-failed", help=RETRY_EXAMPLES)
def retry_failed(
    flow_run_id: Annotated[
        list[uuid.UUID] | None, typer.Argument(parser=id_parser("flow run id"))
    ] = None,
    since: SinceOption = None,
    job: JobOption = None,
    media_type: MediaTypeOption = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every failed run")] = False,
    include_permanent: Annotated[
        bool, typer.Option(help="Also runs whose failures were permanent")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Only show what would be re-run")] = False,
    as_json: JsonOption = False,
) -> None:
    from deployments.operations.client_api import retry_failed as retry

    if not (flow_run_id or since or job or media_type or all_runs):
        raise fail("name flow run ids, --since, --job, --type, or --all")
    runs = call(
        retry if not dry_run else failed_and_retryable,
        flow_run_ids=flow_run_id,
        since=parse_since(since),
        job=job,
        media_type=media_type,
        include_permanent=include_permanent,
    )
    print_runs(runs, False, as_json)
    if not as_json:
        verb = "would be scheduled again" if dry_run else "scheduled again"
        typer.echo(f"{len(runs)} run(s) {verb}")


def failed_and_retryable(include_permanent: bool, **filters: Any) -> list[FailedRun]:
    """What ``retry-failed`` would re-run, without re-running it."""
    from deployments.operations.client_api import failed_runs

    return [r for r in failed_runs(**filters) if include_permanent or not r.permanent]


def print_runs(runs: list[FailedRun], full: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in runs], indent=2, default=str))
        return
    rows = [
        (
            error_of(r) if full else short(error_of(r)),
            r.media_id,
            r.media_type,
            r.tier,
            ", ".join(r.jobs) or "-",
            r.state,
            r.id,
            r.when.isoformat(timespec="seconds") if r.when else "",
        )
        for r in runs
    ]
    headers = ("error", "media", "type", "tier", "jobs", "state", "flow run", "started")
    print_table(headers, rows, keep=("media", "flow run"))


def short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def error_of(run: FailedRun) -> str:
    """The run's message without the "media <id> FAILED: " the other columns already say."""
    prefix = f"media {run.media_id} "
    if run.message.startswith(prefix) and ": " in run.message:
        return run.message.split(": ", 1)[1]
    return run.message
