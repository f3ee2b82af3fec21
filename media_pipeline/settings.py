"""One typed settings object, read from environment variables, grouped by area.

Names fixed by the design (``DATABASE_URL``, ``MEDIA_ROOT``, the providers' keys and
URLs, the Vertex AI variables) are read as they are; everything else is
``MEDIA_PIPELINE_<NAME>``. Secrets are ``SecretStr``: they never print.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "MEDIA_PIPELINE_"


class _Group(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, populate_by_name=True, extra="ignore", frozen=True
    )


class DatabaseSettings(_Group):
    url: str = Field(
        "",
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of the app database; empty: a SQLite file in the data dir",
    )
    retry_seconds: float = Field(
        60,
        ge=0,
        validation_alias="MEDIA_PIPELINE_DB_RETRY_SECONDS",
        description="How long a database call is tried again while the database is "
        "unreachable (a restart, a failover) before the run gives up",
    )


class StorageSettings(_Group):
    data_dir: Path = Field(
        Path(".data"), description="Folder for the embedded defaults (SQLite file, media)"
    )
    media_root: Path | None = Field(
        None,
        validation_alias="MEDIA_ROOT",
        description="Root of originals and derivatives; empty: <data dir>/media",
    )
    results_dir: Path | None = Field(
        None,
        description="Prefect task results (a retried run reuses finished jobs); every "
        "worker must reach it; empty: <media root>/.prefect-results, or with object storage "
        "each worker's own (a retry elsewhere redoes finished jobs, idempotently)",
    )
    public_media_url: str = Field(
        "",
        description="Public base URL of the stored media (https://cdn.example.org/media): "
        "the API's links and the UI's artifacts use it; empty: signed links with a TTL",
    )
    storage_url: str = Field(
        "",
        description="Where originals and derivatives live: empty for MEDIA_ROOT on this "
        "machine, or s3://bucket/prefix on any S3-compatible store (workers then need no "
        "shared folder)",
    )
    s3_endpoint_url: str = Field(
        "", validation_alias="AWS_ENDPOINT_URL", description="S3 endpoint; empty: AWS's"
    )
    s3_region: str = Field(
        "", validation_alias="AWS_REGION", description="S3 region; empty: us-east-1"
    )
    s3_access_key_id: str = Field(
        "",
        validation_alias="AWS_ACCESS_KEY_ID",
        description="S3 access key; empty: boto3's own chain (profile, instance role)",
    )
    s3_secret_access_key: SecretStr = Field(
        SecretStr(""), validation_alias="AWS_SECRET_ACCESS_KEY", description="S3 secret key"
    )
    download_url_ttl_seconds: int = Field(
        3600, gt=0, le=604800, description="Life of the signed links to originals and derivatives"
    )


class NotificationSettings(_Group):
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


class ImageSettings(_Group):
    jpeg_quality: int = Field(82, ge=1, le=95, description="JPEG quality of image derivatives")
    max_pixels: int = Field(
        89_478_485,
        gt=0,
        description="Images with more pixels are refused as decompression bombs (Pillow's limit)",
    )


class FfmpegSettings(_Group):
    ffmpeg_path: str = Field(
        "",
        description="Another ffmpeg binary (7.0 or newer); empty: the one shipped by "
        "imageio-ffmpeg, the same on every machine",
    )
    ffmpeg_timeout_seconds: float = Field(
        300, gt=0, description="Time limit of one ffmpeg run on untrusted media"
    )


class OpenAISettings(_Group):
    api_key: SecretStr = Field(
        SecretStr(""), validation_alias="OPENAI_API_KEY", description="OpenAI API key"
    )
    base_url: str = Field(
        "",
        validation_alias="OPENAI_BASE_URL",
        description="OpenAI-compatible endpoint; empty: api.openai.com",
    )
    transcription_model: str = Field("whisper-1", description="Speech-to-text model")
    transcription_language: str = Field("", description="Language hint (ISO-639-1), optional")
    openai_timeout_seconds: float = Field(120, gt=0, description="Timeout of one API call")
    transcription_price_per_minute: float = Field(
        0.006, ge=0, description="USD per audio minute, for the cost estimate"
    )
    transcription_max_upload_bytes: int = Field(
        24 * 1024 * 1024, gt=0, description="Largest upload to the API (its limit: 25 MB)"
    )
    transcription_max_chunk_seconds: float = Field(
        1200, gt=0, description="Longest audio sent in one call; longer audio is split"
    )


DEFAULT_ENHANCEMENT_PROMPT = (
    "Enhance this portrait photograph for a missing-person or memorial notice. Keep the "
    "person's identity exactly: same face, features, age, expression, hairstyle and "
    "clothing. Do not add, remove or move any object or person. Keep natural skin texture; "
    "no beautification or make-up. Fix blur, noise, compression artefacts, lighting and "
    "colour balance so the person is clearly recognisable. Return a single photograph."
)


class GeminiSettings(_Group):
    api_key: SecretStr = Field(
        SecretStr(""), validation_alias="GEMINI_API_KEY", description="Gemini Developer API key"
    )
    base_url: str = Field(
        "", validation_alias="GEMINI_BASE_URL", description="Gemini endpoint; empty: Google's"
    )
    use_vertexai: bool = Field(
        False, validation_alias="GOOGLE_GENAI_USE_VERTEXAI", description="Use Vertex AI"
    )
    project: str = Field("", validation_alias="GOOGLE_CLOUD_PROJECT", description="Vertex project")
    location: str = Field(
        "", validation_alias="GOOGLE_CLOUD_LOCATION", description="Vertex location"
    )
    enhancement_model: str = Field("gemini-2.5-flash-image", description="Image model")
    enhancement_categories: list[str] = Field(
        ["DISP", "DECD"], description="Alert categories whose photos are enhanced"
    )
    enhancement_prompt: str = Field(DEFAULT_ENHANCEMENT_PROMPT, description="Enhancement prompt")
    enhancement_max_side: int = Field(2048, gt=0, description="Longest side sent to the model")
    gemini_timeout_seconds: float = Field(90, gt=0, description="Timeout of one API call")
    enhancement_price_per_image: float = Field(
        0.039, ge=0, description="USD per generated image, for the cost estimate"
    )


class OrchestrationSettings(_Group):
    work_pool: str = Field("media", description="Prefect work pool of the deployments")
    worker_type: str = Field(
        "media-warm-process",
        description="Type of the pool set-up creates: media-warm-process (flow runs forked "
        "from a warm interpreter) or process (Prefect's stock worker)",
    )
    warm_preload: list[str] = Field(
        ["flows.media", "deployments.retention", "psycopg"],
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
    openai_calls_per_minute: int = Field(10, gt=0, description="Rate limit of OpenAI calls")
    gemini_calls_per_minute: int = Field(10, gt=0, description="Rate limit of Gemini calls")


class ApiSettings(_Group):
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

    def tokens(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    ffmpeg: FfmpegSettings = Field(default_factory=FfmpegSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        data_dir = self.storage.data_dir.expanduser().resolve()
        media_root = (self.storage.media_root or data_dir / "media").expanduser().resolve()
        results = self.storage.results_dir
        if results is None and not self.storage.storage_url:
            results = media_root / ".prefect-results"
        results = results.expanduser() if results else None
        storage = self.storage.model_copy(
            update={"data_dir": data_dir, "media_root": media_root, "results_dir": results}
        )
        object.__setattr__(self, "storage", storage)
        if not self.database.url:
            url = f"sqlite:///{data_dir / 'media-pipeline.db'}"
            object.__setattr__(self, "database", self.database.model_copy(update={"url": url}))
        return self

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        secrets = [self.openai.api_key, self.gemini.api_key, self.notifications.callback_secret,
                   self.storage.s3_secret_access_key, self.api.upload_secret]  # fmt: skip
        for value in [s.get_secret_value() for s in secrets] + self.api.tokens():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    @property
    def media_root(self) -> Path:
        assert self.storage.media_root is not None  # set by the validator
        return self.storage.media_root


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; ``get_settings.cache_clear()`` re-reads the environment."""
    return Settings()


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's configuration table."""
    rows = []
    for group in Settings.model_fields.values():
        model = group.annotation
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            env = field.validation_alias or f"{PREFIX}{name.upper()}"
            default = field.default
            if isinstance(default, SecretStr):
                default = ""
            rows.append(
                (str(env), "" if default is None else str(default), field.description or "")
            )
    return rows
