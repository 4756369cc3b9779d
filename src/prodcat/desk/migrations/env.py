"""Alembic environment: the URL comes from `prodcat.desk.db.migrate`, not from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from prodcat.desk.db import Base

config = context.config
url = str(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
