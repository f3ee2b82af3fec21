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

# The commands that read the app database and Prefect's records; on the embedded default
# they run against its own database and its local Prefect server (started when needed),
# as ``process`` does, not against a temporary server of Prefect's own.
ON_THE_LOCAL_SERVER = frozenset(
    {
        "setup",
        "submit",
        "status",
        "reconcile",
        "metrics",
        "stats",
        "failed",
        "retry-failed",
        "erase",
    }
)
ON_THE_DATABASE = ON_THE_LOCAL_SERVER | {"backfill-status"}


@app.callback()
def embedded_default_settings(ctx: typer.Context) -> None:
    """On the embedded default, the data dir holds the databases, the media, the logs and
    Prefect's results: it is the owner's alone (0700), and so is every file this command
    and the processes it starts write (umask 077). Its commands use its own database
    (migrated first) and its local Prefect server."""
    from deployments.local.service import embedded_default
    from media_pipeline.settings import get_settings

    if not embedded_default():
        return
    os.umask(0o077)
    data_dir = get_settings().storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if ctx.invoked_subcommand in ON_THE_DATABASE:
        from db.migrate import upgrade

        upgrade()
    if ctx.invoked_subcommand in ON_THE_LOCAL_SERVER:
        from deployments.local.server import prefect_api

        ctx.with_resource(prefect_api())


app.add_typer(db_app, name="db")
app.add_typer(server_app, name="server")
for commands in (local, operations, erasure, backfills):
    app.registered_commands += commands.registered_commands


if __name__ == "__main__":  # python -m deployments.cli.app (how the local service starts)
    app()
