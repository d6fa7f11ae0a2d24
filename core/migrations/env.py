"""Alembic's entry point: migrations run online against the configured URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from core.db import Base
from core.rollout import records  # noqa: F401 (its tables join Base.metadata)

config = context.config


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=url.startswith("sqlite"), compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
