"""tamper-evident audit: prev_hash and hash on every event (existing rows chained in seq
order), and signed checkpoints

Revision ID: 0004
Revises: 0003
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

from broker.store.chain import GENESIS, canonical, digest, link

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    events = sa.table(
        "audit_event",
        sa.column("seq", sa.Integer),
        sa.column("time", sa.DateTime(timezone=True)),
        sa.column("ticket_id", sa.Integer),
        sa.column("session_id", sa.String),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("details", sa.JSON),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    bind = op.get_bind()
    prev = GENESIS
    for row in bind.execute(sa.select(events).order_by(events.c.seq)).mappings().all():
        time = row["time"] if row["time"].tzinfo else row["time"].replace(tzinfo=dt.UTC)
        encoded = canonical(
            seq=row["seq"],
            time=time,
            ticket_id=row["ticket_id"],
            session_id=row["session_id"],
            actor=row["actor"],
            action=row["action"],
            details=row["details"],
        )
        current = link(prev, row["ticket_id"], digest(encoded))
        bind.execute(
            events.update().where(events.c.seq == row["seq"]).values(prev_hash=prev, hash=current)
        )
        prev = current
    with op.batch_alter_table("audit_event") as batch:
        batch.alter_column("prev_hash", nullable=False)
        batch.alter_column("hash", nullable=False)
        batch.create_unique_constraint("uq_audit_event_hash", ["hash"])
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_checkpoint_seq", "audit_checkpoint", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoint_seq", table_name="audit_checkpoint")
    op.drop_table("audit_checkpoint")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_constraint("uq_audit_event_hash", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
