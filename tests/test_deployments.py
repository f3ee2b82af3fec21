"""Set-up, prefect.yaml and retention against the session's Prefect server."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.states import Completed, Failed

from db.models import Media
from db.repository import create_media, ensure_alert
from db.session import session_scope
from deployments.operations.retention import prune_flow_runs
from deployments.operations.setup import DEFAULT_QUEUE_PRIORITY, ZOMBIE_AUTOMATION, setup
from media_pipeline.enums import MediaStatus, MediaType
from media_pipeline.object_store import get_store
from media_pipeline.storage import media_key
from tests.support.media import make_jpeg


@pytest.mark.usefixtures("prefect_server")
def test_setup_is_idempotent_and_orders_the_queues(monkeypatch):
    monkeypatch.setenv("MEDIA_PIPELINE_WORK_POOL", f"pool-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("MEDIA_PIPELINE_OPENAI_CALLS_PER_MINUTE", "12")
    from media_pipeline.settings import get_settings

    get_settings.cache_clear()
    first = setup(deployments=False)
    second = setup(deployments=False)

    assert first == second
    assert second["queues"] == {
        "high": 5,
        "normal": 10,
        "low": 15,
        "backfill": 20,
        "default": DEFAULT_QUEUE_PRIORITY,
    }
    assert second["rate_limits_per_minute"] == {"openai": 12, "gemini": 6000}
    with get_client(sync_client=True) as client:
        # The reconciler replaced Prefect's zombie automation: an old one is removed.
        assert client.read_automations_by_name(ZOMBIE_AUTOMATION) == []
        pool = client.read_work_pool(second["pool"])
        assert pool.type == second["worker_type"] == "media-warm-process"
        env = pool.base_job_template["variables"]["properties"]["env"]["default"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
        assert env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500,504"
        assert "PREFECT_LOCAL_STORAGE_PATH" in env
    get_settings.cache_clear()


@pytest.mark.usefixtures("prefect_server")
def test_retention_keeps_the_newest_failed_runs_and_forgets_abandoned_uploads(
    sqlite_db: str, tmp_path
):
    name = f"retention-test-{uuid.uuid4().hex[:6]}"
    # Two uploads initiated through the API and never completed: one two days ago (its
    # bytes were stored), one a minute ago (still within its upload window).
    uploads = {}
    with session_scope() as session:
        alert = ensure_alert(session, uuid.uuid4(), "AUTRE").id
        for age in (timedelta(days=2), timedelta(minutes=1)):
            media_id = uuid.uuid4()
            key = f"{media_key(alert, media_id)}/original.jpg"
            row = create_media(
                session,
                media_id=media_id,
                alert_id=alert,
                media_type=MediaType.IMAGE,
                filename="p.jpg",
                mime_type="image/jpeg",
                size=3,
                storage_key=key,
                status=MediaStatus.AWAITING_UPLOAD,
            )
            row.created_at = datetime.now(UTC) - age
            uploads[age] = (media_id, key)
    stale_id, stale_key = uploads[timedelta(days=2)]
    get_store().put_file(stale_key, make_jpeg(tmp_path / "p.jpg", 8, 8), "image/jpeg")

    @flow(name=name)
    def recorded() -> None:
        """Only its runs' records matter here."""

    with get_client(sync_client=True) as client:
        failed = [
            client.create_flow_run(recorded, name=f"f{i}", state=Failed()).id for i in range(5)
        ]
        done = client.create_flow_run(recorded, name="ok", state=Completed()).id

    result = prune_flow_runs(keep_failed=2, max_age_days=0, flow_names=[name])

    assert result == {
        "failed_beyond_limit": 3,
        "older_than_age": 1,
        "abandoned_uploads": 1,
        "erased_media": 0,
    }  # closed alerts are kept unless a delay is set
    assert get_store().size(stale_key) is None
    with session_scope() as session:
        assert session.get(Media, stale_id) is None
        assert session.get(Media, uploads[timedelta(minutes=1)][0]) is not None
    with get_client(sync_client=True) as client:
        left = {
            run.id
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name]))
            )
        }
    assert left == set(failed[-2:]) and done not in left


@pytest.mark.usefixtures("prefect_server")
def test_setup_refuses_to_change_a_pools_worker_type(monkeypatch):
    from media_pipeline.settings import get_settings

    monkeypatch.setenv("MEDIA_PIPELINE_WORK_POOL", f"pool-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("MEDIA_PIPELINE_WORKER_TYPE", "process")
    get_settings.cache_clear()
    assert setup(deployments=False)["worker_type"] == "process"
    with get_client(sync_client=True) as client:
        template = client.read_work_pool(get_settings().orchestration.work_pool).base_job_template
    command = template["variables"]["properties"]["command"]["default"]
    assert command == f"{sys.executable} -m prefect.engine"  # not the heavier default launcher

    monkeypatch.setenv("MEDIA_PIPELINE_WORKER_TYPE", "media-warm-process")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match=r"is of type 'process'.*prefect work-pool delete"):
        setup(deployments=False)
    monkeypatch.setenv("MEDIA_PIPELINE_WORKER_TYPE", "kubernetes")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="unknown worker type 'kubernetes'"):
        setup(deployments=False)
    get_settings.cache_clear()


@pytest.mark.usefixtures("prefect_server")
def test_failed_media_runs_are_posted_to_the_failure_webhook(
    sqlite_db, fake_providers, monkeypatch, tmp_path: Path
):
    from deployments.operations.registration import register_media
    from flows.media import process_media
    from media_pipeline.settings import get_settings
    from tests.support.fake_providers import Fault
    from tests.support.media import make_tone
    from tests.support.processes import wait_until
    from tests.support.production import Receiver

    receiver = Receiver()
    try:
        secret_url = f"{receiver.url}?token=hook-secret-123"
        monkeypatch.setenv("MEDIA_PIPELINE_FAILURE_WEBHOOK_URL", secret_url)
        get_settings.cache_clear()
        assert setup(deployments=False)["failure_webhook"] is True
        with get_client(sync_client=True) as client:
            block = client.read_block_document_by_name(
                "media-pipeline-failures", "custom-webhook", include_secrets=False
            )
        assert "hook-secret-123" not in json.dumps(block.data, default=str)  # masked in the UI

        fake_providers.queue("openai", Fault(400, message="unsupported audio"))
        note = register_media(make_tone(tmp_path / "a.wav", 2.0, rate=16000), category="AUTRE")
        state = process_media(str(note.id), return_state=True)
        assert state.is_failed()

        def posted() -> list[dict]:
            bodies = [json.loads(body) for _, body in receiver.bodies]
            return [b for b in bodies if str(note.id)[:8] in b["subject"]]

        wait_until(lambda: posted(), 60, "the failure notification")
        (notice,) = posted()
        assert notice["subject"].endswith("Failed")
        assert "transcribe-audio" in notice["body"] and "unsupported audio" in notice["body"]
        assert "media-pipeline retry-failed" in notice["body"]
    finally:
        receiver.stop()
        monkeypatch.delenv("MEDIA_PIPELINE_FAILURE_WEBHOOK_URL")
        get_settings.cache_clear()
        setup(deployments=False)  # no notifications for the rest of the session


def test_the_api_refuses_requests_without_credentials(prefect_server: str, prefect_auth: str):
    import httpx

    refused = httpx.post(f"{prefect_server}/flow_runs/filter", json={}, timeout=30)
    assert refused.status_code == 401
    wrong = httpx.post(
        f"{prefect_server}/flow_runs/filter", json={}, auth=("operator", "guess"), timeout=30
    )
    assert wrong.status_code == 401
    user, password = prefect_auth.split(":", 1)
    allowed = httpx.post(
        f"{prefect_server}/flow_runs/filter", json={}, auth=(user, password), timeout=30
    )
    assert allowed.status_code == 200
    assert httpx.get(f"{prefect_server}/health", timeout=30).status_code == 200  # probes
