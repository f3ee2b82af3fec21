"""The relay: creates the flow runs the outbox holds (``db/outbox.py``), oldest first.

Every API process runs one (``Relay``), woken by its own ``complete`` calls and looking every
``relay_poll_seconds`` for the rows other processes accepted; each reconciler pass relays
what is left (no API process running, say); ``submit_media`` relays its own media's rows.
While Prefect is away the rows wait, and the relay tries again with a growing pause: the
runs are made when it is back, in the order the uploads were accepted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from datetime import timedelta

from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound

from db.outbox import claim_runs, release_runs, settle_runs
from db.session import transaction
from flows.faults import is_infrastructure_fault
from flows.run_creation import BULK_LIMIT, RunRefused, RunRequest, send_run_requests
from media_pipeline.settings import get_settings

logger = logging.getLogger(__name__)


def relay_pass(client: SyncPrefectClient, media_id: uuid.UUID | None = None) -> int:
    """Create the runs of up to ``BULK_LIMIT`` unclaimed rows (of one media, or all);
    how many rows it took. Raises what kept Prefect from answering (the rows wait)."""
    lease = timedelta(seconds=get_settings().orchestration.relay_lease_seconds)
    claimed = transaction(lambda session: claim_runs(session, BULK_LIMIT, lease, media_id))
    if not claimed:
        return 0
    try:
        results = send_run_requests(
            client, [RunRequest(row.deployment, row.body) for row in claimed]
        )
    except Exception as error:
        why = f"{type(error).__name__}: {error}"
        transaction(lambda session: release_runs(session, [row.id for row in claimed], why))
        raise
    outcomes = [
        (row, None, str(result)) if isinstance(result, RunRefused) else (row, result, "")
        for row, result in zip(claimed, results, strict=True)
    ]
    for run_id in transaction(lambda session: settle_runs(session, outcomes)):
        with contextlib.suppress(ObjectNotFound):  # its media was erased meanwhile
            client.delete_flow_run(uuid.UUID(run_id))
    return len(claimed)


def relay_all(client: SyncPrefectClient) -> int:
    """Relay until the outbox holds no unclaimed row; how many rows it took."""
    total = 0
    while (taken := relay_pass(client)) > 0:
        total += taken
    return total


class Relay:
    """A thread that relays the outbox for a long-lived process (the HTTP API)."""

    def __init__(self, client: SyncPrefectClient) -> None:
        self._client = client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Rows were just written: relay them now."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        poll = get_settings().orchestration.relay_poll_seconds
        pause = 0.0  # after a failure: not before this long, whoever wakes us
        while not self._stop.is_set():
            if pause:
                self._stop.wait(pause)
            else:
                self._wake.wait(poll)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                relay_all(self._client)
            except Exception as error:
                if not pause:
                    log = logger.warning if is_infrastructure_fault(error) else logger.error
                    log("the relay cannot create runs (%s); the uploads wait in the outbox", error)
                pause = min(max(2 * pause, 0.5), 10.0)
                continue
            if pause:
                logger.warning("the relay creates runs again")
            pause = 0.0
