"""backfills: job versions on outputs, backfills and their media

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _enum(*values: str, name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def upgrade() -> None:
    # Outputs made before versions existed were made by version 1 of their job.
    with op.batch_alter_table("processing_job") as batch:
        batch.add_column(sa.Column("job_version", sa.Integer(), nullable=True))
    op.execute("UPDATE processing_job SET job_version = 1 WHERE state = 'SUCCEEDED'")
    for table in ("media_derivative", "transcription"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("job_version", sa.Integer(), nullable=False, server_default="1")
            )
    op.create_table(
        "backfill",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("job_version", sa.Integer(), nullable=False),
        sa.Column("selection", sa.String(16), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            _enum(
                "PENDING",
                "RUNNING",
                "CANCELLING",
                "CANCELLED",
                "DONE",
                "FAILED",
                name="backfillstatus",
            ),
            nullable=False,
        ),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "backfill_item",
        sa.Column(
            "backfill_id",
            sa.Uuid(),
            sa.ForeignKey("backfill.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("media_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            _enum("SELECTED", "SUBMITTED", "DONE", "FAILED", "SKIPPED", name="backfillitemstate"),
            nullable=False,
        ),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("estimated_cost", sa.Float(), nullable=True),
    )
    op.create_index("ix_backfill_item_state", "backfill_item", ["backfill_id", "state", "position"])


def downgrade() -> None:
    op.drop_index("ix_backfill_item_state", "backfill_item")
    op.drop_table("backfill_item")
    op.drop_table("backfill")
    for table in ("transcription", "media_derivative", "processing_job"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("job_version")
