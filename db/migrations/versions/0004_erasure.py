"""erasure: a tombstone per erased media; alerts may be closed

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_erasure",
        sa.Column("media_id", sa.Uuid(), primary_key=True),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column(
            "type",
            sa.Enum("IMAGE", "AUDIO", "VIDEO", name="mediatype", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("is_enhanced", sa.Boolean(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=False),
    )
    op.create_index("ix_media_erasure_alert_id", "media_erasure", ["alert_id"])
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("closed_at")
    op.drop_index("ix_media_erasure_alert_id", "media_erasure")
    op.drop_table("media_erasure")
