"""What the commands of ``media-pipeline`` share: refusals, filters, tables."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from media_pipeline.errors import InvalidId, PipelineError
from media_pipeline.storage import parse_uuid

SINCE = re.compile(r"^(\d+)([smhd])$")
T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    """One ``error:`` line on stderr; the command exits 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def call(function: Callable[..., T], **kwargs: Any) -> T:
    """``function(**kwargs)``; an id or a filter it refuses ends the command with its
    message (exit 2)."""
    try:
        return function(**kwargs)
    except (ValueError, PipelineError) as error:
        raise fail(str(error)) from None


def id_parser(what: str) -> Callable[[str], uuid.UUID]:
    """Typer's ``parser`` for an id: parsed where it enters, or one ``error:`` line."""

    def parse(value: str) -> uuid.UUID:
        try:
            return parse_uuid(value, what)
        except InvalidId as error:
            raise fail(str(error)) from None

    return parse


def parse_since(value: str | None) -> timedelta | None:
    """``30m``, ``6h``, ``2d``... as a time window."""
    if not value:
        return None
    match = SINCE.match(value.strip())
    if not match:
        raise typer.BadParameter("use a number and a unit: 30m, 6h, 2d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def parse_moment(value: str | None) -> datetime | None:
    """A date (``2026-12-01``, ``2026-12-01T08:00``, UTC unless it says otherwise) or a
    time ago (``6h``, ``2d``)."""
    if not value:
        return None
    if SINCE.match(value.strip()):
        return datetime.now(UTC) - parse_since(value)  # type: ignore[operator]
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("use a date (2026-12-01) or a time ago (6h, 2d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], keep: Sequence[str] = ()
) -> None:
    """A table that fits the terminal: long cells wrap, except the ``keep`` columns (ids),
    which are never cut. Piped output keeps each row on one line, for grep."""
    table = Table(*headers, box=None, header_style="bold", pad_edge=False)
    for name in keep:
        column = table.columns[list(headers).index(name)]
        column.no_wrap, column.min_width = True, 36
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(width=None if Console().is_terminal else 100_000).print(table)
