"""alembic environment: runs on the connection that ``Store.upgrade`` hands over."""

from __future__ import annotations

from alembic import context

from broker.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `assist-broker db upgrade`")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
