"""Reads and idempotent writes of tasks and results (keyword-only, FastAPI-free).

Bulk writes go through COPY into a temporary table and one
``INSERT … ON CONFLICT`` from it: thousands of rows per round trip, and a
retried publish updates rows in place (only when they changed) instead of
adding new ones.
"""

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Integer, cast, distinct, func, text
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select

from api.models import Frame, IdentityPosition, Task, Track
from api.payloads import TRACK_COLUMNS, FrameRow, tracking_payloads
from spoton.types import StatusUpdatePayload, TrackingUpdatePayload

POSITION_COLUMNS = ("global_id", "frame_idx", "map_x", "map_y", "n_cameras")

# ------------------------------------------------------------------ tasks


def create_task(
    session: Session, *, task_id: uuid.UUID, environment_id: str, parameters: dict[str, Any], fps: float
) -> Task:
    """Record a task started through the API. A publish that raced ahead and created a bare
    row already is completed with the request's parameters."""
    now = datetime.now(UTC)
    stmt = insert(Task).values(
        task_id=task_id, environment_id=environment_id, parameters=parameters, fps=fps,
        created_at=now, progress=0.0, current_step="",
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["task_id"],
        set_={"environment_id": environment_id, "parameters": parameters, "fps": fps},
    )
    session.exec(stmt)  # type: ignore[call-overload]
    session.commit()
    task = session.get(Task, task_id)
    assert task is not None  # just written in this session
    return task


def ensure_task(session: Session, *, task_id: uuid.UUID, environment_id: str, fps: float) -> None:
    """Create the row of a run started outside the API (CLI, Prefect UI) on its first publish."""
    stmt = insert(Task).values(
        task_id=task_id, environment_id=environment_id, parameters={}, fps=fps,
        created_at=datetime.now(UTC), progress=0.0, current_step="",
    ).on_conflict_do_nothing(index_elements=["task_id"])
    session.exec(stmt)  # type: ignore[call-overload]


def get_task(session: Session, *, task_id: uuid.UUID) -> Task | None:
    return session.get(Task, task_id)


def list_tasks(session: Session, *, offset: int, limit: int) -> tuple[list[Task], int]:
    count = session.exec(select(func.count()).select_from(Task)).one()
    rows = session.exec(
        select(Task).order_by(col(Task.created_at).desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), count


def record_status(
    session: Session, *, task_id: uuid.UUID, status: StatusUpdatePayload, first: bool = False
) -> None:
    """Keep the latest published status on the task row (no row yet: nothing to keep it on).
    With ``first``, only a row without a status takes it."""
    task = session.get(Task, task_id)
    if task is None or (first and task.status is not None):
        return
    task.status = status.status
    task.progress = status.progress
    task.current_step = status.current_step
    task.details = status.details
    task.updated_at = datetime.now(UTC)
    session.add(task)
    session.commit()


# ---------------------------------------------------------------- bulk writes


def _copy_upsert(
    session: Session, *, table: str, columns: Sequence[str], key: Sequence[str], df: pd.DataFrame
) -> int:
    """COPY ``df`` into a temp copy of ``table``, then upsert it; returns rows inserted or changed."""
    if df.empty:
        return 0
    buf = io.StringIO()
    df.loc[:, list(columns)].to_csv(buf, header=False, index=False)
    cols = ", ".join(columns)
    staging = f"_staging_{table}"
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out psycopg connection
    with driver.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        cur.execute(f"TRUNCATE {staging}")
        with cur.copy(f"COPY {staging} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(buf.getvalue())
        values = [c for c in columns if c not in key]
        changed = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
        old = ", ".join(f"{table}.{c}" for c in values)
        new = ", ".join(f"EXCLUDED.{c}" for c in values)
        cur.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {changed} "
            # unchanged rows (a retried publish) are left alone: no dead tuples, no WAL
            f"WHERE ({old}) IS DISTINCT FROM ({new})"
        )
        return cur.rowcount


def upsert_frames(
    session: Session, *, run_id: uuid.UUID, frame_indices: Sequence[int], processed_at: datetime,
    cameras: Sequence[str],
) -> None:
    """Record published frames; a frame published before keeps its first timestamp."""
    if not frame_indices:
        return
    # whole milliseconds, the resolution of the wire timestamp, so stored == sent
    at = processed_at.replace(microsecond=processed_at.microsecond // 1000 * 1000)
    session.connection().execute(
        text(
            "INSERT INTO frame (run_id, frame_idx, processed_at, cameras) "
            "SELECT :run_id, f, :at, :cameras FROM unnest(CAST(:frames AS integer[])) AS f "
            "ON CONFLICT (run_id, frame_idx) DO NOTHING"
        ),
        {"run_id": run_id, "at": at, "cameras": list(cameras), "frames": [int(f) for f in frame_indices]},
    )


def upsert_tracks(session: Session, *, run_id: uuid.UUID, tracks: pd.DataFrame) -> int:
    """``tracks``: one row per box with ``TRACK_COLUMNS`` (NaN map coordinates become NULL)."""
    df = tracks.drop_duplicates(["frame_idx", "camera_id", "track_id"], keep="last").assign(run_id=run_id)
    df["global_id"] = df["global_id"].astype("Int64")
    return _copy_upsert(
        session, table="track", columns=("run_id", *TRACK_COLUMNS),
        key=("run_id", "frame_idx", "camera_id", "track_id"), df=df,
    )


def upsert_positions(session: Session, *, run_id: uuid.UUID, positions: pd.DataFrame) -> int:
    """``positions``: fused identity positions (``POSITION_COLUMNS``); rows without a position are dropped."""
    df = positions.dropna(subset=["map_x", "map_y"]).drop_duplicates(["global_id", "frame_idx"], keep="last")
    return _copy_upsert(
        session, table="identity_position", columns=("run_id", *POSITION_COLUMNS),
        key=("run_id", "global_id", "frame_idx"), df=df.assign(run_id=run_id),
    )


# ------------------------------------------------------------------ frames


def last_frame(session: Session, *, run_id: uuid.UUID) -> int | None:
    return session.exec(select(func.max(Frame.frame_idx)).where(Frame.run_id == run_id)).one()


def frame_payloads(
    session: Session, *, run_id: uuid.UUID, scene_id: str, start: int = 0, end: int | None = None,
    camera_id: str | None = None, limit: int = 100,
) -> tuple[list[TrackingUpdatePayload], int | None]:
    """Payloads of stored frames ``start <= frame_idx <= end`` in order, at most ``limit``,
    and the frame to continue from (None when the range is exhausted)."""
    where = [Frame.run_id == run_id, Frame.frame_idx >= start]
    if end is not None:
        where.append(Frame.frame_idx <= end)
    rows = session.exec(
        select(Frame.frame_idx, Frame.processed_at, Frame.cameras)
        .where(*where).order_by(col(Frame.frame_idx)).limit(limit + 1)
    ).all()
    frames = [FrameRow(f, at, cams) for f, at, cams in rows[:limit]]
    following = rows[limit][0] if len(rows) > limit else None
    if not frames:
        return [], None
    track_where = [
        Track.run_id == run_id,
        Track.frame_idx >= frames[0].frame_idx,
        Track.frame_idx <= frames[-1].frame_idx,
    ]
    if camera_id is not None:
        track_where.append(Track.camera_id == camera_id)
    tracks = session.exec(
        select(*(getattr(Track, c) for c in TRACK_COLUMNS))
        .where(*track_where)
        .order_by(col(Track.frame_idx), col(Track.camera_id), col(Track.track_id))
    ).all()
    return tracking_payloads(frames, tracks, scene_id=scene_id, camera_id=camera_id), following


# -------------------------------------------------------------- identities


@dataclass(frozen=True)
class IdentityRow:
    global_id: int
    first_frame: int
    last_frame: int
    cameras: list[str]
    n_detections: int


_IDENTITIES = text(
    """
    SELECT global_id, min(first), max(last), array_agg(camera_id ORDER BY camera_id), sum(n)::bigint,
           count(*) OVER () AS identities
    FROM (
        -- per camera first: streams in index order, no sort for the DISTINCT cameras
        SELECT global_id, camera_id, min(frame_idx) AS first, max(frame_idx) AS last, count(*) AS n
        FROM track WHERE run_id = :run_id AND global_id IS NOT NULL
        GROUP BY global_id, camera_id
    ) per_camera
    GROUP BY global_id ORDER BY global_id OFFSET :offset LIMIT :limit
    """
)


def identities(session: Session, *, run_id: uuid.UUID, offset: int, limit: int) -> tuple[list[IdentityRow], int]:
    """A page of identity summaries and how many identities the run has."""
    rows = session.connection().execute(_IDENTITIES, {"run_id": run_id, "offset": offset, "limit": limit}).all()
    if not rows and offset:
        # past the last page: the window count came with no row, so count on its own
        count = session.exec(
            select(func.count(distinct(col(Track.global_id))))
            .where(col(Track.run_id) == run_id, col(Track.global_id).is_not(None))
        ).one()
    else:
        count = rows[0][5] if rows else 0
    return [IdentityRow(g, lo, hi, list(cams), int(n)) for g, lo, hi, cams, n, _ in rows], count


@dataclass(frozen=True)
class AppearanceRow:
    camera_id: str
    first_frame: int
    last_frame: int
    n_detections: int
    track_ids: list[int]


def identity_appearances(session: Session, *, run_id: uuid.UUID, global_id: int) -> list[AppearanceRow]:
    rows = session.connection().execute(
        sa_select(
            col(Track.camera_id), func.min(Track.frame_idx), func.max(Track.frame_idx), func.count(),
            func.array_agg(distinct(col(Track.track_id))),
        )
        .where(col(Track.run_id) == run_id, col(Track.global_id) == global_id)
        .group_by(col(Track.camera_id)).order_by(col(Track.camera_id))
    ).all()
    return [AppearanceRow(c, lo, hi, n, sorted(tids)) for c, lo, hi, n, tids in rows]


@dataclass(frozen=True)
class PositionRow:
    frame_idx: int
    map_x: float
    map_y: float
    n_cameras: int


def identity_trajectory(session: Session, *, run_id: uuid.UUID, global_id: int) -> list[PositionRow]:
    # plain column rows: an hour of positions is 90,000 of them, too many for ORM objects
    rows = session.connection().execute(
        sa_select(col(IdentityPosition.frame_idx), col(IdentityPosition.map_x), col(IdentityPosition.map_y),
                  col(IdentityPosition.n_cameras))
        .where(col(IdentityPosition.run_id) == run_id, col(IdentityPosition.global_id) == global_id)
        .order_by(col(IdentityPosition.frame_idx))
    ).all()
    return [PositionRow(*r) for r in rows]


# --------------------------------------------------------------- analytics


def occupancy(
    session: Session, *, run_id: uuid.UUID, cell_m: float, nx: int, ny: int
) -> list[tuple[int, int, int]]:
    """(ix, iy, identity-frames) per non-empty cell; positions just off the plane count in the edge cell."""
    ix = func.least(func.greatest(cast(func.floor(IdentityPosition.map_x / cell_m), Integer), 0), nx - 1)
    iy = func.least(func.greatest(cast(func.floor(IdentityPosition.map_y / cell_m), Integer), 0), ny - 1)
    rows = session.exec(
        select(ix.label("ix"), iy.label("iy"), func.count())
        .where(IdentityPosition.run_id == run_id)
        .group_by(text("ix"), text("iy"))
    ).all()
    return [(int(x), int(y), int(n)) for x, y, n in rows]


@dataclass(frozen=True)
class CountBin:
    bin: int
    start_frame: int
    end_frame: int
    mean: float
    max: int
    unique: int


_PEOPLE_COUNT = text(
    """
    WITH per_frame AS (
        SELECT f.frame_idx, count(p.global_id) AS n
        FROM frame f
        LEFT JOIN identity_position p ON p.run_id = f.run_id AND p.frame_idx = f.frame_idx
        WHERE f.run_id = :run_id AND f.frame_idx BETWEEN :lo AND :hi
        GROUP BY f.frame_idx
    ), per_bin AS (
        SELECT floor(frame_idx / :size)::bigint AS b, min(frame_idx) AS first, max(frame_idx) AS last,
               avg(n)::float8 AS mean, max(n) AS peak
        FROM per_frame GROUP BY b
    ), uniq AS (
        SELECT floor(frame_idx / :size)::bigint AS b, count(DISTINCT global_id) AS u
        FROM identity_position WHERE run_id = :run_id AND frame_idx BETWEEN :lo AND :hi
        GROUP BY b
    )
    SELECT per_bin.b, first, last, mean, peak, coalesce(u, 0)
    FROM per_bin LEFT JOIN uniq USING (b) ORDER BY per_bin.b
    """
)


def people_count(
    session: Session, *, run_id: uuid.UUID, frames_per_bin: float, start: int, end: int
) -> list[CountBin]:
    """People on the floor per frame (fused positions: one per identity and frame), binned by
    ``frames_per_bin`` (1: per frame, fps: per second). Frames where nobody was seen count as 0."""
    rows = session.connection().execute(
        _PEOPLE_COUNT, {"run_id": run_id, "lo": start, "hi": end, "size": float(frames_per_bin)}
    ).all()
    return [CountBin(int(b), first, last, float(mean), int(peak), int(u)) for b, first, last, mean, peak, u in rows]


@dataclass(frozen=True)
class PresenceRow:
    global_id: int
    first_frame: int
    last_frame: int
    n_frames: int


def presence(session: Session, *, run_id: uuid.UUID) -> list[PresenceRow]:
    """First and last frame and frames on the floor of every identity (its fused positions)."""
    rows = session.exec(
        select(
            col(IdentityPosition.global_id), func.min(IdentityPosition.frame_idx),
            func.max(IdentityPosition.frame_idx), func.count(),
        )
        .where(IdentityPosition.run_id == run_id)
        .group_by(col(IdentityPosition.global_id)).order_by(col(IdentityPosition.global_id))
    ).all()
    return [PresenceRow(g, lo, hi, n) for g, lo, hi, n in rows]
