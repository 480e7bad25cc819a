"""Results schema: task, frame, track, identity_position.

The track table becomes a TimescaleDB hypertable (partitioned on frame_idx) when
the server offers the extension; plain PostgreSQL serves the same queries.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ~1 hour of frames at 25 fps per TimescaleDB chunk
HYPERTABLE_CHUNK_FRAMES = 90_000


def upgrade() -> None:
    op.create_table(
        "task",
        sa.Column("task_id", sa.Uuid(), primary_key=True),
        sa.Column("environment_id", sa.String(64), nullable=False),
        sa.Column("parameters", postgresql.JSONB(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("current_step", sa.String(), nullable=False),
        sa.Column("details", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_task_created_at", "task", ["created_at"])
    op.create_table(
        "frame",
        sa.Column("run_id", sa.Uuid(), primary_key=True),
        sa.Column("frame_idx", sa.Integer(), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cameras", postgresql.ARRAY(sa.String()), nullable=False),
    )
    op.create_table(
        "track",
        sa.Column("run_id", sa.Uuid(), primary_key=True),
        sa.Column("frame_idx", sa.Integer(), primary_key=True),
        sa.Column("camera_id", sa.String(32), primary_key=True),
        sa.Column("track_id", sa.BigInteger(), primary_key=True),
        sa.Column("global_id", sa.BigInteger(), nullable=True),
        sa.Column("x1", sa.REAL(), nullable=False),
        sa.Column("y1", sa.REAL(), nullable=False),
        sa.Column("x2", sa.REAL(), nullable=False),
        sa.Column("y2", sa.REAL(), nullable=False),
        sa.Column("confidence", sa.REAL(), nullable=True),
        sa.Column("class_id", sa.SmallInteger(), nullable=True),
        sa.Column("map_x", sa.REAL(), nullable=True),
        sa.Column("map_y", sa.REAL(), nullable=True),
    )
    op.create_index("ix_track_run_global", "track", ["run_id", "global_id", "camera_id", "frame_idx"])
    op.create_table(
        "identity_position",
        sa.Column("run_id", sa.Uuid(), primary_key=True),
        sa.Column("global_id", sa.BigInteger(), primary_key=True),
        sa.Column("frame_idx", sa.Integer(), primary_key=True),
        sa.Column("map_x", sa.REAL(), nullable=False),
        sa.Column("map_y", sa.REAL(), nullable=False),
        sa.Column("n_cameras", sa.SmallInteger(), nullable=False),
    )
    op.create_index("ix_identity_position_run_frame", "identity_position", ["run_id", "frame_idx"])

    bind = op.get_bind()
    has_timescale = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    if has_timescale:
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        op.execute(
            "SELECT create_hypertable('track', 'frame_idx', "
            f"chunk_time_interval => {HYPERTABLE_CHUNK_FRAMES}, if_not_exists => TRUE)"
        )


def downgrade() -> None:
    op.drop_table("identity_position")
    op.drop_table("track")
    op.drop_table("frame")
    op.drop_table("task")
