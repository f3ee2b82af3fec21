"""provider calls: the sliding window of the external API rate limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_call",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_provider_call_provider_time", "provider_call", ["provider", "called_at"])


def downgrade() -> None:
    op.drop_index("ix_provider_call_provider_time", table_name="provider_call")
    op.drop_table("provider_call")
