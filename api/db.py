"""Database engines, one per URL and process (FastAPI-free)."""

import functools

from sqlalchemy import Engine
from sqlmodel import create_engine

from api.migrate import upgrade


def create_db_engine(database_url: str) -> Engine:
    # pre-ping: a pooled connection that died with a Postgres restart is replaced,
    # not handed to a request
    return create_engine(database_url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@functools.cache
def migrated_engine(database_url: str) -> Engine:
    """Engine of a database brought to the latest schema (once per process and URL)."""
    upgrade(database_url)
    return create_db_engine(database_url)
