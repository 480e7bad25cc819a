"""Alembic environment: online migrations only, serialised by an advisory lock.

Several API workers and Prefect workers may start at once and each runs
``upgrade head``; the lock makes the second one wait and then find nothing to do
instead of racing the first into duplicate CREATE TABLEs.
"""

from alembic import context
from sqlalchemy import create_engine, pool, text

from api.models import SQLModel
from spoton.config import get_settings

MIGRATION_LOCK_ID = 0x5907_0A11  # arbitrary, constant: names "the SpotOn schema" for pg_advisory_lock

config = context.config
target_metadata = SQLModel.metadata


def database_url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        try:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `python -m api.migrate`")
run_migrations_online()
