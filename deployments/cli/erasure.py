"""``media-pipeline erase``: media, or a whole alert, removed from every store."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer

from deployments.cli.common import call, fail, id_parser, print_table

erasure = typer.Typer()


@erasure.command()
def erase(
    media_ids: Annotated[
        list[uuid.UUID] | None, typer.Argument(parser=id_parser("media id"), help="Media to erase")
    ] = None,
    alert: Annotated[
        uuid.UUID | None,
        typer.Option(parser=id_parser("alert id"), help="Erase every media of this alert"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the receipts as JSON")] = False,
) -> None:
    """Erase media (with their enhanced copies), or every media of an alert, from the
    store, the app database and Prefect (runs, artifacts, logs, results); print the
    receipts. Erasing again prints the receipts as they stand."""
    from deployments.operations.erasure import erase_alert, erase_media, erasure_plan

    if bool(media_ids) == bool(alert):
        raise fail("give media ids, or --alert ALERT_ID")
    plan = call(erasure_plan, media_ids=media_ids or [], alert=alert)
    if not yes:
        typer.echo("This erases, for good:")
        print_table(("media", "type", "status", "file"), plan, keep=("media",))
        if not typer.confirm("Erase?", default=False):
            raise fail("nothing erased (pass --yes to erase without asking)")
    if alert:
        answer: Any = call(erase_alert, alert_id=alert)
        receipts = answer["media"]
    else:
        answer = receipts = call(erase_media, media_ids=media_ids)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    rows = []
    for receipt in receipts:
        removed, prefect = receipt["removed"], receipt["removed"].get("prefect", {})
        pending = "; ".join(f"{k}: {v}" for k, v in receipt["pending"].items()) or "none"
        rows.append(
            (
                receipt["mediaId"],
                receipt["type"],
                removed.get("database", {}).get("media", 0),
                removed.get("store", {}).get("objects", "-"),
                prefect.get("runs", "-"),
                prefect.get("artifacts", "-"),
                prefect.get("results", "-"),
                pending,
            )
        )
    print_table(
        ("media", "type", "rows", "objects", "runs", "artifacts", "results", "pending"),
        rows,
        keep=("media",),
    )
    if any(r["pending"] for r in receipts):
        typer.echo("What is pending is finished by the reconciler once its store answers.")
