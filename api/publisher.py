"""Publish a run's results: Postgres rows first, then the live feed in Redis (FastAPI-free).

Used by the Prefect task ``publish_frames`` once per chunk, in chunk order, and
for status updates along the way. Both calls are idempotent: a retried publish
upserts the same rows and re-sends stream ids Redis already has (skipped; see
``api.streams``), so nothing is duplicated. Postgres is written before Redis, so
any frame a WebSocket client can see in the stream is already in Postgres, which
is what lets a client fill gaps from there.

Postgres and Redis outages surface as ``ConnectionError`` (transient for the
flows' retry policy); bad input as ``ValueError`` or ``FileNotFoundError``.
"""

import functools
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import redis
import sqlalchemy.exc
from sqlmodel import Session

from api import crud, streams
from api.db import migrated_engine
from spoton.config import Settings, get_settings, load_environment
from spoton.store import RunStore, tracks_path
from spoton.types import StatusUpdatePayload, TaskStatus, status_message, tracking_message

log = logging.getLogger(__name__)

PAGE_FRAMES = 500  # frames read back and appended per round trip


@dataclass(frozen=True)
class Published:
    frames: int
    tracks: int  # rows inserted or changed (0 when re-publishing identical results)
    positions: int
    appended: int  # stream entries added
    skipped: int  # stream entries Redis already had


def run_uuid(task_id: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        raise ValueError(f"task_id must be a Prefect flow-run id (a UUID), got {task_id!r}") from None


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, health_check_interval=30)


@contextmanager
def _unavailable_as_connection_error(what: str) -> Iterator[None]:
    """Outages become the builtin ConnectionError, which retry policies know as transient."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise ConnectionError(f"Redis unavailable while {what}: {e}") from e
    except sqlalchemy.exc.OperationalError as e:
        raise ConnectionError(f"Postgres unavailable while {what}: {e.orig}") from e


def _chunk_tracks(store: RunStore, chunk: str, cameras: Sequence[str]) -> pd.DataFrame:
    ids_rel = f"{chunk}/identities.parquet"
    ids = store.read_parquet(ids_rel) if store.exists(ids_rel) else None
    per_camera = [store.read_parquet(tracks_path(c, chunk)).assign(camera_id=c) for c in cameras]
    tracks = pd.concat(per_camera, ignore_index=True)
    if ids is None or ids.empty:
        return tracks.assign(global_id=pd.array([None] * len(tracks), dtype="Int64"))
    # Association gives no id to tracks it found to be no person: they are not results.
    return tracks.merge(
        ids.loc[:, ["camera_id", "track_id", "global_id"]], on=["camera_id", "track_id"], how="inner"
    )


def publish_chunk(
    *,
    task_id: object,
    environment_id: str,
    store: RunStore,
    chunk: str,
    cameras: Sequence[str],
    settings: Settings | None = None,
    frames: range | None = None,
    fps: float | None = None,
) -> Published:
    """Store one chunk's results and append a tracking_update per frame to the task's stream.

    Reads ``<camera>/<chunk>/tracks.parquet`` of every camera, ``<chunk>/identities.parquet``
    and ``<chunk>/map.parquet``. ``frames`` is the chunk's global frame range
    (``frame_offset`` to ``frame_offset + frames``): every frame in it is published, with
    empty track lists where nobody was seen; without it only frames with tracks are.
    ``fps`` defaults to the configured environment's.
    """
    settings = settings or get_settings()
    run_id = run_uuid(task_id)
    if not cameras:
        raise ValueError(f"publish_chunk({chunk!r}): no cameras given")
    tracks = _chunk_tracks(store, chunk, cameras)
    map_rel = f"{chunk}/map.parquet"
    positions = store.read_parquet(map_rel) if store.exists(map_rel) else pd.DataFrame()
    frame_set = set(tracks["frame_idx"].tolist()) | set(frames or ())
    if not positions.empty:
        frame_set |= set(positions["frame_idx"].tolist())
    frame_indices = sorted(int(f) for f in frame_set)
    if fps is None:
        fps = load_environment(environment_id, settings=settings).fps

    with _unavailable_as_connection_error(f"storing chunk {chunk!r} of task {run_id}"):
        engine = migrated_engine(settings.database_url)
        with Session(engine) as session:
            crud.ensure_task(session, task_id=run_id, environment_id=environment_id, fps=fps)
            crud.upsert_frames(
                session, run_id=run_id, frame_indices=frame_indices, processed_at=datetime.now(UTC),
                cameras=cameras,
            )
            n_tracks = crud.upsert_tracks(session, run_id=run_id, tracks=tracks)
            n_positions = 0
            if not positions.empty:
                n_positions = crud.upsert_positions(session, run_id=run_id, positions=positions)
            session.commit()

    appended = skipped = 0
    if frame_indices:
        with Session(engine) as session, _unavailable_as_connection_error(
            f"streaming chunk {chunk!r} of task {run_id}"
        ):
            page: int | None = frame_indices[0]
            while page is not None:
                # messages are built from the rows just stored: the stream carries exactly
                # what the results endpoints and the Postgres fallback serve
                payloads, page = crud.frame_payloads(
                    session, run_id=run_id, scene_id=environment_id, start=page, end=frame_indices[-1],
                    limit=PAGE_FRAMES,
                )
                result = streams.append_frames(
                    _redis(settings.redis_url), task_id=run_id,
                    messages=((p.frame_index, tracking_message(p).model_dump_json()) for p in payloads),
                    maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s,
                )
                appended += result.added
                skipped += result.skipped
    if skipped:
        log.info("task %s chunk %s: %d frames were already in the stream", run_id, chunk, skipped)
    return Published(len(frame_indices), n_tracks, n_positions, appended, skipped)


def announce(
    session: Session,
    client: redis.Redis,
    *,
    task_id: uuid.UUID,
    status: StatusUpdatePayload,
    settings: Settings,
    first: bool = False,
) -> str | None:
    """Status to the task row and the stream; with ``first``, only if none was published yet
    (the API's QUEUED must not land after a fast worker's PROCESSING). Returns the entry id."""
    last = crud.last_frame(session, run_id=task_id)
    crud.record_status(session, task_id=task_id, status=status, first=first)
    return streams.append_status(
        client, task_id=task_id, message=status_message(status),
        floor=0 if last is None else last + 1,  # where a stream Redis lost would resume
        maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s, first=first,
    )


def publish_status(
    *,
    task_id: object,
    status: TaskStatus,
    progress: float,
    current_step: str,
    details: str | None = None,
    settings: Settings | None = None,
) -> StatusUpdatePayload:
    """Append a status_update to the task's stream and keep it as the task's latest status."""
    settings = settings or get_settings()
    run_id = run_uuid(task_id)
    payload = StatusUpdatePayload(status=status, progress=progress, current_step=current_step, details=details)
    with (
        _unavailable_as_connection_error(f"publishing status of task {run_id}"),
        Session(migrated_engine(settings.database_url)) as session,
    ):
        announce(session, _redis(settings.redis_url), task_id=run_id, status=payload, settings=settings)
    return payload
