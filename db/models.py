"""SQLAlchemy 2 models of the pipeline's schema (created by the Alembic migrations)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from media_pipeline.enums import (
    BackfillItemState,
    BackfillStatus,
    DerivativeType,
    JobState,
    MediaStatus,
    MediaType,
    TranscriptionSource,
)

__all__ = [
    "BackfillItemState",
    "BackfillStatus",
    "DerivativeType",
    "JobState",
    "MediaStatus",
    "MediaType",
    "TranscriptionSource",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, read back with its zone on every database: SQLite keeps none, and
    a naive value compared with an aware one raises."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and not value.tzinfo else value


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as short strings with a CHECK constraint: portable and readable in SQL.
    return Enum(cls, native_enum=False, length=16, validate_strings=True, name=cls.__name__.lower())


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[dict[str, Any]]: JSON,
    }


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Alert(Timestamps, Base):
    __tablename__ = "alert"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    category_code: Mapped[str] = mapped_column(String(16))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # the case is closed

    media: Mapped[list[Media]] = relationship(back_populates="alert")


class Media(Timestamps, Base):
    __tablename__ = "media"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"))
    type: Mapped[MediaType] = mapped_column(_enum(MediaType))
    position: Mapped[int] = mapped_column(Integer, default=0)
    filename: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[MediaStatus] = mapped_column(_enum(MediaStatus), default=MediaStatus.UPLOADED)
    status_message: Mapped[str | None] = mapped_column(Text)
    is_enhanced: Mapped[bool] = mapped_column(Boolean, default=False)
    source_media_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media.id", ondelete="CASCADE"), unique=True
    )
    placeholder: Mapped[str | None] = mapped_column(String(128))

    alert: Mapped[Alert] = relationship(back_populates="media", lazy="joined")
    derivatives: Mapped[list[MediaDerivative]] = relationship(
        back_populates="media", cascade="all, delete-orphan", order_by="MediaDerivative.type"
    )
    jobs: Mapped[list[ProcessingJob]] = relationship(
        back_populates="media", cascade="all, delete-orphan", order_by="ProcessingJob.job"
    )


class MediaDerivative(Timestamps, Base):
    __tablename__ = "media_derivative"
    __table_args__ = (UniqueConstraint("media_id", "type", name="uq_media_derivative_type"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    media_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    type: Mapped[DerivativeType] = mapped_column(_enum(DerivativeType))
    storage_key: Mapped[str] = mapped_column(String(512))
    mime_type: Mapped[str] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_version: Mapped[int] = mapped_column(Integer, default=1)  # of the job that made it

    media: Mapped[Media] = relationship(back_populates="derivatives")


class Transcription(Timestamps, Base):
    __tablename__ = "transcription"
    __table_args__ = (
        UniqueConstraint("media_id", "version", name="uq_transcription_version"),
        Index(
            "uq_transcription_active",
            "media_id",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    media_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[TranscriptionSource] = mapped_column(_enum(TranscriptionSource))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(32))
    duration: Mapped[float | None] = mapped_column(Float)
    segments: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    model: Mapped[str | None] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    job_version: Mapped[int] = mapped_column(Integer, default=1)


class ProviderCall(Base):
    """One call to an external API, kept for as long as it counts against the rate limit."""

    __tablename__ = "provider_call"
    __table_args__ = (Index("ix_provider_call_provider_time", "provider", "called_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    called_at: Mapped[datetime] = mapped_column(UtcDateTime())
    waited_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class MediaErasure(Base):
    """What stays of an erased media: ids, type, when, and the receipt (counts and storage
    keys, which hold ids only), never a file name, a text or a pixel. Stores still to be
    cleared are listed in ``pending`` until the reconciler has finished them."""

    __tablename__ = "media_erasure"

    media_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    type: Mapped[MediaType] = mapped_column(_enum(MediaType))
    is_enhanced: Mapped[bool] = mapped_column(Boolean, default=False)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    keys: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the store held
    receipt: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pending: Mapped[dict[str, Any]] = mapped_column(default=dict)  # store -> why not yet


class ProcessingJob(Timestamps, Base):
    __tablename__ = "processing_job"
    __table_args__ = (UniqueConstraint("media_id", "job", name="uq_processing_job_media_job"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    media_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    job: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    estimated_cost: Mapped[float | None] = mapped_column(Float)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_version: Mapped[int | None] = mapped_column(Integer)  # what made the outputs

    media: Mapped[Media] = relationship(back_populates="jobs")


class OutboxRun(Base):
    """A flow run to create: written in the transaction that plans the media's jobs (the
    outbox), created in Prefect by a relay, then deleted. ``id`` is the order of acceptance."""

    __tablename__ = "outbox_run"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    media_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("media.id", ondelete="CASCADE"), index=True
    )
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    deployment: Mapped[str] = mapped_column(String(200))  # flow/deployment
    body: Mapped[dict[str, Any]] = mapped_column()  # Prefect's DeploymentFlowRunCreate
    jobs: Mapped[list[str]] = mapped_column(JSON)  # the planned jobs the run does
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())  # a relay's lease
    last_error: Mapped[str | None] = mapped_column(Text)  # why the last attempt failed


class Backfill(Timestamps, Base):
    """One job run again over many existing media, paced by its own flow run."""

    __tablename__ = "backfill"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job: Mapped[str] = mapped_column(String(64))
    job_version: Mapped[int] = mapped_column(Integer)  # the version it brings media to
    selection: Mapped[str] = mapped_column(String(16))  # missing, outdated, failed, all
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[BackfillStatus] = mapped_column(
        _enum(BackfillStatus), default=BackfillStatus.PENDING
    )
    in_flight: Mapped[int] = mapped_column(Integer)  # its runs that may exist at once
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)  # why it failed
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    items: Mapped[list[BackfillItem]] = relationship(
        back_populates="backfill", cascade="all, delete-orphan", passive_deletes=True
    )


class BackfillItem(Base):
    """One media of a backfill: selected, then submitted once (its run), then its outcome."""

    __tablename__ = "backfill_item"
    __table_args__ = (Index("ix_backfill_item_state", "backfill_id", "state", "position"),)

    backfill_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("backfill.id", ondelete="CASCADE"), primary_key=True
    )
    media_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # erased: still here
    position: Mapped[int] = mapped_column(Integer)  # oldest media first
    state: Mapped[BackfillItemState] = mapped_column(
        _enum(BackfillItemState), default=BackfillItemState.SELECTED
    )
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped or failed
    estimated_cost: Mapped[float | None] = mapped_column(Float)

    backfill: Mapped[Backfill] = relationship(back_populates="items")
