"""The embedded default's processing service: ``media-pipeline api`` in the background.

A ``process`` command that imports Prefect and runs the flow itself spends most of its
time importing (about 1.2 s for ``import prefect`` alone here) and flushing Prefect's logs
and events at exit. So the first ``process`` on a machine runs in-process, as it always
did, then starts the API on the embedded default (its warm worker has everything
imported) and leaves it running; the next ones hand their file to it over HTTP, the three
calls of the seed's workflow, and wait for the media to be final. Only httpx, PyAV and
SQLAlchemy are imported on that path. The service stops after
``MEDIA_PIPELINE_LOCAL_SERVER_IDLE_SECONDS`` without a request, or with
``media-pipeline server stop``; when it is not ready (still starting), ``process`` runs
in-process.

A service serves only the commands whose settings it was started with: every setting,
provider keys included, compared by a keyed fingerprint (``settings_fingerprint``). A
command with other settings (another media root, a key set since) starts a service of
its own beside it, in ``<data dir>/local-service/<fingerprint>/``. The services of a data
dir share its local Prefect server, each with a work pool of its own
(``<pool>-<fingerprint>``, its deployments named after it), so that no worker runs
another service's media with its own settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic.alias_generators import to_snake

from deployments.local.background import Background
from media_pipeline.errors import PipelineError
from media_pipeline.kept_secrets import kept_secret, token_file
from media_pipeline.payloads import MediaSummary
from media_pipeline.settings import Settings, get_settings, settings_fingerprint

FINAL = {"READY", "PARTIAL", "FAILED"}


@dataclass(frozen=True)
class LocalService(Background):
    """In ``<data dir>/local-service/<fingerprint>``; its state: {"pid", "url"}."""

    state_name = "api.json"
    log_name = "api.log"

    @property
    def instance(self) -> str:
        """The fingerprint its /health answers with: the name of its folder."""
        return self.folder.name

    def description(self) -> dict[str, str]:
        """What ``server status`` shows of its settings (never a secret)."""
        return json.loads((self.folder / "settings.json").read_text())  # type: ignore[no-any-return]

    def ready_url(self) -> str | None:
        """The service's URL when it answers for this instance and its worker has
        started, else None."""
        state = self.state()
        if state is None:
            return None
        try:  # up, and its worker too
            health = httpx.get(f"{state['url']}/health", timeout=2)
            body = health.json() if health.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        if body.get("instance") != self.instance:  # its port went to another process
            print(
                f"the local service's address {state['url']} answers for other settings: "
                "processing in-process",
                file=sys.stderr,
            )
            self.state_file.unlink(missing_ok=True)
            return None
        return str(state["url"]) if body.get("worker") == "ready" else None

    def command(self, port: int) -> tuple[list[str], dict[str, str], dict[str, Any]]:
        settings = get_settings()
        pool = f"{settings.orchestration.work_pool}-{self.instance[:8]}"
        self.describe(settings, pool)
        env = {
            **os.environ,
            "MEDIA_PIPELINE_DATA_DIR": str(settings.storage.data_dir),
            "MEDIA_ROOT": str(settings.media_root),
            "MEDIA_PIPELINE_WORK_POOL": pool,
        }
        idle = settings.orchestration.local_server_idle_seconds
        args = [sys.executable, "-m", "deployments.cli.app", "api", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--idle-exit", str(idle), "--instance", self.instance]
        return args, env, {"url": f"http://127.0.0.1:{port}"}

    def describe(self, settings: Settings, pool: str) -> None:
        from sqlalchemy.engine import make_url

        database = make_url(settings.database.url).render_as_string(hide_password=True)
        description = {
            "data_dir": str(settings.storage.data_dir),
            "pool": pool,
            "media_root": str(settings.media_root),
            "database": database,
            "storage": settings.storage.storage_url or "local",
        }
        (self.folder / "settings.json").write_text(json.dumps(description))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the service (it hands back its runs in flight); False when none ran."""
        grace = get_settings().orchestration.worker_grace_seconds
        return super().stop(grace + 30 if timeout is None else timeout)


def local_service() -> LocalService:
    """The service for this process's settings (running or not)."""
    settings = get_settings()
    services = settings.storage.data_dir / "local-service"
    key = kept_secret(services / "fingerprint-key").encode()
    return LocalService(services / settings_fingerprint(settings, key, os.environ)[:16])


def local_services(data_dir: Path) -> list[LocalService]:
    """Every service ever started under ``data_dir``, running or not."""
    return [LocalService(p.parent) for p in sorted(data_dir.glob("local-service/*/settings.json"))]


def embedded_default() -> bool:
    """No Prefect server configured, and the local one allowed: decided without importing
    Prefect (a second of start-up)."""
    return not os.environ.get("PREFECT_API_URL") and get_settings().orchestration.local_server


def running_service_url() -> str | None:
    """The local service's URL when it runs and answers (it only ever starts on the
    embedded default)."""
    return local_service().ready_url() if embedded_default() else None


def call_service(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call of the local service's API (started when it does not run, and waited for
    until its worker is ready), for the commands whose work the service's worker does on
    the embedded default (a backfill's runs); the answer's JSON in snake_case."""
    service = local_service()
    service.launch()
    deadline = time.monotonic() + SERVICE_START_SECONDS
    while (url := service.ready_url()) is None:
        if service.state() is None or time.monotonic() > deadline:
            raise PipelineError(f"the local service did not start: see {service.folder}/api.log")
        time.sleep(0.3)
    with service_client(url) as client:
        return snake(answer(client.request(method, path, json=body)))


def service_client(url: str) -> httpx.Client:
    """An HTTP client of the local service at ``url``, with the data dir's API token."""
    token = kept_secret(token_file(get_settings()))
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"})


SERVICE_START_SECONDS = 180  # a first start on a loaded machine, Prefect server included


def launch_after_first_process() -> None:
    """Start the service for the next commands, on the embedded default as Prefect reads
    its settings (environment, profile, or a caller's temporary settings)."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url and get_settings().orchestration.local_server:
        local_service().launch()


def process_through_service(
    url: str, file: Path, alert: uuid.UUID | None, category: str
) -> MediaSummary | None:
    """Hand ``file`` to the service at ``url`` and wait until its media is final; its
    summary, or None when the service does not take this file (the caller runs it
    in-process)."""
    from media_pipeline.detect import detect_media

    detected = detect_media(file)
    alert_id = alert or uuid.uuid4()
    with service_client(url) as client:
        started = client.post(
            f"/api/alerts/{alert_id}/media/initiate",
            json={
                "type": detected.type.value,
                "filename": file.name[:255],
                "mimeType": detected.mime_type,
                "size": file.stat().st_size,
                "categoryCode": category,
            },
        )
        if started.status_code != 201:  # a kind or size the API does not take
            return None
        body = started.json()
        with file.open("rb") as content:
            answer(client.put(body["uploadUrl"], content=content, headers=body["headers"]))
        media_id = str(body["mediaId"])
        answer(client.post(f"/api/alerts/{alert_id}/media/{media_id}/complete"))
        while (view := answer(client.get(f"/api/media/{media_id}")))["status"] not in FINAL:
            time.sleep(0.05)
    return MediaSummary.model_validate(snake(view))


def snake(value: Any) -> Any:
    """The API's camelCase JSON with the payloads' snake_case keys."""
    if isinstance(value, dict):
        return {to_snake(k) if "-" not in k else k: snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(item) for item in value]
    return value


def answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; the service's own message otherwise."""
    if response.is_success:
        return response.json()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise PipelineError(message)
