"""``media-pipeline backfill``: run a job again over existing media, at the backfill's pace;
``backfill-status`` and ``backfill-cancel`` follow one."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import typer

from deployments.cli.common import call, fail, id_parser, parse_moment, print_table

backfills = typer.Typer()

BACKFILL_HELP = """Run one job again over existing media, a few at a time on the backfill
queue (below every tier: uploads go first). Choose the media with one of --missing (no
output yet), --outdated (made by an older version of the job), --failed (its last run
failed) or --all; narrow them with --type, --alert, --since, --until (media created in
that span). --dry-run prints how many, which types, and for a provider's job the
estimated cost and how long its rate limit makes it take.

Examples:

  media-pipeline backfill --job generate-waveform --missing --dry-run

  media-pipeline backfill --job transcribe-audio --failed --since 1d

  media-pipeline backfill --job generate-thumbnails --outdated --alert 0b1c...
"""


@backfills.command("backfill", help=BACKFILL_HELP)
def backfill(
    job: Annotated[str, typer.Option(help="The job to run: generate-thumbnails, ...")],
    missing: Annotated[bool, typer.Option("--missing", help="Media without its output")] = False,
    outdated: Annotated[
        bool, typer.Option("--outdated", help="Outputs of an older job version")
    ] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Its last run failed")] = False,
    every: Annotated[bool, typer.Option("--all", help="Every media it applies to")] = False,
    media_type: Annotated[str | None, typer.Option("--type", help="IMAGE, AUDIO or VIDEO")] = None,
    alert: Annotated[
        uuid.UUID | None, typer.Option(parser=id_parser("alert id"), help="Only this alert's media")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Media created since: 2026-12-01, 2d")] = None,
    until: Annotated[str | None, typer.Option(help="Media created before: 2026-12-05, 6h")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count and estimate")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    from deployments.local.service import call_service, embedded_default
    from deployments.operations.backfill import estimate_backfill, start_backfill

    chosen = [
        name
        for name, on in (
            ("missing", missing),
            ("outdated", outdated),
            ("failed", failed),
            ("all", every),
        )
        if on
    ]
    if len(chosen) != 1:
        raise fail("choose one of --missing, --outdated, --failed, --all")
    since_moment, until_moment = parse_moment(since), parse_moment(until)
    filters = {
        "media_type": media_type,
        "alert_id": alert,
        "since": since_moment,
        "until": until_moment,
    }
    if dry_run:
        found = call(estimate_backfill, job=job, selection=chosen[0], **filters)
        typer.echo(json.dumps(found, indent=2) if as_json else describe_estimate(found))
        return
    if embedded_default():  # the local service's worker runs the backfill
        body = {
            "job": job,
            "select": chosen[0],
            "type": media_type,
            "alertId": str(alert) if alert else None,
            "since": iso(since_moment),
            "until": iso(until_moment),
        }
        started = call(call_service, method="POST", path="/api/backfills", body=body)
    else:
        started = call(start_backfill, job=job, selection=chosen[0], **filters)
    if as_json:
        typer.echo(json.dumps(started, indent=2))
        return
    typer.echo(describe_estimate(started["estimate"]))
    if not started["flow_run_id"]:
        typer.echo("nothing to backfill")
        return
    typer.echo(
        f"backfill {started['id']} started (flow run {started['flow_run_id']}); follow "
        f"it with `media-pipeline backfill-status {started['id']}`"
    )


@backfills.command("backfill-status")
def backfill_status(
    backfill_id: Annotated[
        uuid.UUID | None,
        typer.Argument(parser=id_parser("backfill id"), help="A backfill; none: the newest"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """A backfill's status and counts (selected, submitted, done, failed, skipped,
    estimated cost so far), or the newest backfills."""
    from deployments.operations.backfill import get_backfill, list_backfills

    found = [call(get_backfill, backfill_id=backfill_id)] if backfill_id else list_backfills()
    if as_json:
        typer.echo(json.dumps(found[0] if backfill_id else found, indent=2))
        return
    print_backfills(found)


@backfills.command("backfill-cancel")
def backfill_cancel(
    backfill_id: Annotated[uuid.UUID, typer.Argument(parser=id_parser("backfill id"))],
) -> None:
    """Stop a backfill: its runs in flight finish, its other media are skipped."""
    from deployments.local.service import call_service, embedded_default
    from deployments.operations.backfill import cancel_backfill

    if embedded_default():
        path = f"/api/backfills/{backfill_id}"
        print_backfills([call(call_service, method="DELETE", path=path)])
    else:
        print_backfills([call(cancel_backfill, backfill_id=backfill_id)])


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def describe_estimate(found: dict[str, Any]) -> str:
    types = ", ".join(f"{count} {kind.upper()}" for kind, count in found["types"].items()) or "none"
    text = f"{found['count']} media for {found['job']} ({found['selection']}): {types}"
    if found.get("pace_minutes"):
        text += f", at least {found['pace_minutes']} min at its pace"
    if found.get("provider"):
        text += (
            f"\nestimated cost ${found['estimated_cost']:.2f}, {found['provider_calls']} "
            f"{found['provider']} calls, about {found['provider_minutes']} min at its "
            "rate limit"
        )
    return text


def print_backfills(found: list[dict[str, Any]]) -> None:
    counts = ("selected", "submitted", "done", "failed", "skipped")
    rows = [
        (
            b["id"],
            b["job"],
            b["selection"],
            b["status"],
            *(b["counts"][c] for c in counts),
            f"${b['counts']['estimated_cost']:.2f}",
            b["message"] or "",
        )
        for b in found
    ]
    print_table(
        ("backfill", "job", "selection", "status", *counts, "cost", "message"),
        rows,
        keep=("backfill",),
    )
