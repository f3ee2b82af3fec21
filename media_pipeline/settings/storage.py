"""Where the pipeline keeps its rows and files."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from media_pipeline.settings.base import Group


class DatabaseSettings(Group):
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


class StorageSettings(Group):
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
    erase_closed_after_days: float = Field(
        0,
        ge=0,
        description="The daily retention erases the media of alerts closed (PUT "
        "/api/alerts/{id} closedAt) longer ago than this; 0: never",
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
