"""Bring a results database to the latest schema: ``python -m api.migrate [DATABASE_URL]``.

The API lifespan and the publisher call :func:`upgrade` too, so a fresh database
works without a manual step; concurrent callers are serialised in
``api/migrations/env.py``.
"""

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from spoton.config import get_settings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    # passed as an attribute, not a main option: configparser would choke on the
    # '%' of URL-encoded passwords
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str | None = None) -> None:
    command.upgrade(alembic_config(database_url or get_settings().database_url), "head")


if __name__ == "__main__":
    upgrade(sys.argv[1] if len(sys.argv) > 1 else None)
