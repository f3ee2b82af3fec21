"""Prefect, the workers, the HTTP API and the notifications."""

from __future__ import annotations

from pydantic import Field, SecretStr

from media_pipeline.settings.base import Group


class NotificationSettings(Group):
    callback_url: str = Field(
        "",
        description="A media's summary is POSTed here when it is done (READY, PARTIAL, "
        "FAILED), as a Standard Webhooks message",
    )
    callback_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs the callback (Standard Webhooks: whsec_<base64>, or any string "
        "taken as its bytes); empty: unsigned",
    )
    failure_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Set-up makes an automation POST failed and crashed media runs here "
        "(Slack, Teams or any webhook, through a Prefect block); empty: none",
    )


class OrchestrationSettings(Group):
    work_pool: str = Field("media", description="Prefect work pool of the deployments")
    worker_type: str = Field(
        "media-warm-process",
        description="Type of the pool set-up creates: media-warm-process (flow runs forked "
        "from a warm interpreter) or process (Prefect's stock worker)",
    )
    warm_preload: list[str] = Field(
        ["flows.media", "deployments.operations.retention", "psycopg"],
        description="Modules the warm worker imports once, before forking flow runs (the "
        "pipeline and the database driver, which SQLAlchemy imports only on first use)",
    )
    retry_attempts: int = Field(3, ge=1, description="Attempts per job, the first included")
    retry_base_delay_seconds: float = Field(
        2, ge=0, description="First retry delay; doubles at each attempt"
    )
    retry_jitter_seconds: float = Field(
        0.2, ge=0, description="Random delay added to each retry delay, at most"
    )
    retry_after_cap_seconds: float = Field(
        60, ge=0, description="Longest provider Retry-After waited out within an attempt"
    )
    worker_limit: int = Field(
        0,
        ge=0,
        description="Flow runs a warm worker runs at once (its --limit wins); 0: the CPU "
        "count. Each free slot takes the highest-priority queue's next run",
    )
    worker_provider_limit: int = Field(
        4,
        ge=1,
        description="Flow runs a warm worker runs at once beside its limit when all their "
        "jobs wait on a provider (transcription, enhancement): a slow provider holds these "
        "slots, never those of CPU work",
    )
    fault_wait_seconds: float = Field(
        120,
        ge=0,
        description="A job waits this long for the Prefect API or the app database to answer "
        "again, within the same attempt (such a fault is not a job attempt); then its run "
        "ends for the reconciler to schedule again",
    )
    worker_grace_seconds: float = Field(
        30,
        ge=0,
        description="On SIGTERM or SIGINT a worker stops claiming runs, lets those in flight "
        "finish for this long, then hands the rest back to the queue and exits 0",
    )
    worker_heartbeat_seconds: int = Field(
        10, gt=0, description="A warm worker's heartbeat to the server (its liveness)"
    )
    stall_seconds: float = Field(
        45,
        gt=0,
        description="A run is stranded when its worker sent no heartbeat for this long (or "
        "2.5 of its heartbeat intervals), when it stayed claimed but not started for this "
        "long, or when it sent no flow-run heartbeat for twice as long",
    )
    reconcile_seconds: float = Field(
        10, gt=0, description="How often each warm worker looks for stranded runs"
    )
    max_recoveries: int = Field(
        3,
        ge=0,
        description="Times a stranded or crashed run is scheduled again by itself; then it "
        "ends Crashed and its jobs FAILED, for `media-pipeline retry-failed`",
    )
    local_server: bool = Field(
        True,
        description="Without PREFECT_API_URL, process and demo use a local Prefect server "
        "(SQLite, in the data dir) that the first command starts and later ones reuse; "
        "false: a temporary server in each command",
    )
    local_server_idle_seconds: float = Field(
        1800, gt=0, description="The local Prefect server stops after this long unused"
    )
    board_seconds: float = Field(
        60, gt=0, description="How often warm workers refresh the queue-board artifact"
    )
    rate_window_seconds: float = Field(
        60, gt=0, description="The window of the provider rate limits (calls per window)"
    )
    backfill_in_flight: int = Field(
        8,
        ge=1,
        description="Runs of one backfill that exist at once (waiting or running); it "
        "makes the next as each finishes, on the backfill queue below `low`",
    )
    backfill_batch: int = Field(
        4,
        ge=1,
        le=50,
        description="Media a backfill's run processes one after the other: the Prefect "
        "server's cost of a flow run is shared by that many media",
    )
    backfill_per_minute: float = Field(
        60,
        ge=0,
        description="Media a backfill submits a minute at most (0: as many as its runs in "
        "flight and the workers' slots allow): the pace an operator chooses, read where the "
        "backfill's own run runs",
    )
    backfill_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="A backfill's media runs run this much nicer (lower CPU priority) than "
        "uploads' runs, in processes of their own",
    )
    backfill_poll_seconds: float = Field(
        0.5, gt=0, description="How often a backfill looks for finished runs to replace"
    )
    relay_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often an API process's relay looks for runs to create that other "
        "processes accepted (its own process wakes it at once)",
    )
    relay_lease_seconds: float = Field(
        30,
        gt=0,
        description="How long a relay holds the planned runs it claimed: a dead relay's "
        "are claimed again after this",
    )
    openai_calls_per_minute: int = Field(10, gt=0, description="Rate limit of OpenAI calls")
    gemini_calls_per_minute: int = Field(10, gt=0, description="Rate limit of Gemini calls")


class ApiSettings(Group):
    api_tokens: SecretStr = Field(
        SecretStr(""),
        description="Bearer tokens of the HTTP API, comma-separated (several are valid at "
        "once, for rotation); empty: one is made and kept in <data dir>/api-token",
    )
    upload_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs the API's own upload and download links (every replica the same); "
        "empty: a key made once and kept in <data dir>/upload-secret",
    )
    upload_url_ttl_seconds: int = Field(
        900, gt=0, le=604800, description="Life of an upload URL from initiate"
    )
    max_image_bytes: int = Field(30_000_000, gt=0, description="Largest photo upload")
    max_audio_bytes: int = Field(100_000_000, gt=0, description="Largest voice-note upload")
    max_video_bytes: int = Field(500_000_000, gt=0, description="Largest video upload")
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body of the API's other calls (JSON)"
    )
    submit_wait_seconds: float = Field(
        10,
        gt=0,
        description="POST /api/media/{id}/jobs/{job} waits this long for the relay to "
        "create the job's run; after it, it answers without the run id (the run is made "
        "when Prefect answers)",
    )

    def tokens(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]
