"""admin requests: the command line asks the running broker to end or hand over a session

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("op", sa.String(length=40), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_request_state", "admin_request", ["state"])


def downgrade() -> None:
    op.drop_index("ix_admin_request_state", table_name="admin_request")
    op.drop_table("admin_request")
