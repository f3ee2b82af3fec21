"""The ``media-pipeline`` command line: the commands for one machine and those of the
production profile, in one Typer application."""

from __future__ import annotations

import os

import typer

from deployments.cli.backfill import backfills
from deployments.cli.erasure import erasure
from deployments.cli.local import db_app, local, server_app
from deployments.cli.operations import operations

# Prefect's server tries to phone home; there is no network to reach on most deployments.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(db_app, name="db")
app.add_typer(server_app, name="server")
for commands in (local, operations, erasure, backfills):
    app.registered_commands += commands.registered_commands


if __name__ == "__main__":  # python -m deployments.cli.app (how the local service starts)
    app()
