"""checkpoint chain: v2 checkpoints hold their signed message, its SSHSIG and the digest of the
checkpoint before them

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.add_column(sa.Column("message", sa.Text, nullable=True))
        batch.add_column(sa.Column("sshsig", sa.Text, nullable=True))
        batch.add_column(sa.Column("prev", sa.String(64), nullable=True))
        batch.add_column(sa.Column("digest", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_audit_checkpoint_digest", ["digest"])


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.drop_constraint("uq_audit_checkpoint_digest", type_="unique")
        batch.drop_column("digest")
        batch.drop_column("prev")
        batch.drop_column("sshsig")
        batch.drop_column("message")
