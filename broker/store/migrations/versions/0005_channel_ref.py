"""channel.ref: the relay's id for a channel, so that sinks can find its row

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel") as batch:
        batch.add_column(sa.Column("ref", sa.String(40), nullable=True))
        batch.create_unique_constraint("uq_channel_ref", ["ref"])


def downgrade() -> None:
    with op.batch_alter_table("channel") as batch:
        batch.drop_constraint("uq_channel_ref", type_="unique")
        batch.drop_column("ref")
