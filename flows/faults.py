"""Faults of the orchestrator or of our own databases, told apart from a media's or a
provider's.

The Prefect API unreachable or answering 5xx, and the app database unreachable, say nothing
of the media: they are not job attempts. A job waits such a fault out within its attempt
(``fault_wait_seconds``); a fault that outlasts the wait ends the flow run without recording
its jobs, which the reconciler schedules again (finished jobs come from the result cache).
"""

from __future__ import annotations

import httpx
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from sqlalchemy.exc import DBAPIError

from db.session import is_transient


class InfrastructureFault(Exception):
    """The Prefect API or the app database stayed away longer than a job waits."""


def is_infrastructure_fault(error: BaseException | None) -> bool:
    """``error``, or an error it was raised from, is a fault of Prefect or the database."""
    while error is not None:
        if isinstance(error, InfrastructureFault):
            return True
        if isinstance(error, DBAPIError):
            return is_transient(error)
        if isinstance(error, PrefectHTTPStatusError):
            return error.response.status_code >= 500 or error.response.status_code in (408, 429)
        if isinstance(error, httpx.TransportError):
            return from_prefect_api(error)
        error = error.__cause__
    return False


def from_prefect_api(error: httpx.TransportError) -> bool:
    """A provider's SDK raises the same transport errors: only the Prefect API's count."""
    api = PREFECT_API_URL.value()
    try:
        url = str(error.request.url)
    except RuntimeError:  # no request attached
        return False
    return bool(api) and url.startswith(api.rstrip("/"))
