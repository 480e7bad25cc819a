"""Covering indexes: per-identity reads of track and per-frame reads of identity_position
answered from the index alone (track_id, global_id carried along), not the heap.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_track_run_global", table_name="track")
    op.create_index("ix_track_run_global", "track", ["run_id", "global_id", "camera_id", "frame_idx"],
                    postgresql_include=["track_id"])
    op.drop_index("ix_identity_position_run_frame", table_name="identity_position")
    op.create_index("ix_identity_position_run_frame", "identity_position", ["run_id", "frame_idx"],
                    postgresql_include=["global_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_position_run_frame", table_name="identity_position")
    op.create_index("ix_identity_position_run_frame", "identity_position", ["run_id", "frame_idx"])
    op.drop_index("ix_track_run_global", table_name="track")
    op.create_index("ix_track_run_global", "track", ["run_id", "global_id", "camera_id", "frame_idx"])
