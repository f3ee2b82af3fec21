"""Flow runs of concurrent callers created together (``RunBatcher``), against the session's
Prefect server: every caller gets its own run, as Prefect records it, and one refusal
fails only its own caller."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from prefect.client.orchestration import get_client

import flows.submission as submission
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.submission import RunBatcher, RunRefused, deployment_name, run_request


def test_concurrent_callers_share_requests_and_each_gets_its_run(production, monkeypatch):
    production["use"](WARM)
    sent: list[int] = []
    send = submission.send_run_requests

    def counted(client, requests):  # the real call, counted
        sent.append(len(requests))
        return send(client, requests)

    monkeypatch.setattr(submission, "send_run_requests", counted)
    media = [str(uuid.uuid4()) for _ in range(24)]
    go = threading.Barrier(len(media))

    def request(media_id: str, **extra: object) -> submission.RunRequest:
        return run_request(
            deployment_name("high"),
            name=f"batch · {media_id[:8]}",
            parameters={"media_id": media_id, "tier": "high"},
            idempotency_key=f"{media_id}:batch",
            tags=[f"media-{media_id}"],
            **extra,
        )

    def submit(batcher: RunBatcher, media_id: str) -> str:
        go.wait()
        return batcher([request(media_id)])[0]

    with get_client(sync_client=True) as client:
        batcher = RunBatcher(client)
        try:
            with ThreadPoolExecutor(len(media)) as pool:
                run_ids = list(pool.map(lambda m: submit(batcher, m), media))
            concurrent = list(sent)
            # The same idempotency key twice in one batch: one run. A run Prefect refuses
            # (a job variable of the wrong type) fails its caller alone.
            bad = request(str(uuid.uuid4()), job_variables={"stream_output": "loud"})
            again = batcher([request(media[0]), request(media[0])])
            with pytest.raises(RunRefused, match="stream_output"):
                batcher([bad])
            after = batcher([request(media[1])])
        finally:
            batcher.close()
        try:
            assert sum(concurrent) == len(media)
            assert len(concurrent) < len(media)  # callers that came together shared requests
            assert len(set(run_ids)) == len(media)
            assert again == [run_ids[0], run_ids[0]] and after == [run_ids[1]]
            for media_id, run_id in zip(media, run_ids, strict=True):
                run = client.read_flow_run(uuid.UUID(run_id))
                assert run.parameters == {"media_id": media_id, "tier": "high"}
                assert run.name == f"batch · {media_id[:8]}"
                assert f"media-{media_id}" in run.tags
                assert run.state is not None and run.state.is_scheduled()
                assert run.work_queue_name == "high"
        finally:  # no worker of a later test may pick them up
            for run_id in run_ids:
                client.delete_flow_run(uuid.UUID(run_id))
