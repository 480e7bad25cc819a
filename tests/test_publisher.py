"""api.publisher against real Postgres and Redis: idempotent rows and stream entries,
the stream id scheme, and outages reported as transient errors."""

import uuid

import pytest
import redis
import sqlalchemy
from api_fixtures import Person, write_chunk

from api import streams
from api.publisher import publish_chunk, publish_status
from spoton.config import Settings
from spoton.store import RunStore
from spoton.types import WsMessage

CAMERAS = ["c1", "c2"]
PEOPLE = [Person(1, (2.0, 3.0), (0.05, 0.0), ("c1", "c2")), Person(2, (8.0, 4.0), (0.0, 0.05), ("c1",))]


def row_counts(engine: sqlalchemy.Engine, task_id: uuid.UUID) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE run_id = :r"),
                                {"r": task_id}).scalar_one()
            for table in ("frame", "track", "identity_position")
        }


def stream(settings: Settings, task_id: uuid.UUID) -> list[tuple[str, dict]]:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True).xrange(streams.stream_key(task_id))


def publish(settings: Settings, task_id: uuid.UUID, store: RunStore, chunk: str, frames: range):
    return publish_chunk(task_id=task_id, environment_id="factory", store=store, chunk=chunk, cameras=CAMERAS,
                         settings=settings, frames=frames, fps=25.0)


def test_publish_twice_duplicates_nothing(api_settings: Settings, api_engine, new_task_id) -> None:
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    write_chunk(store, chunk="sub_video_01", chunk_index=0, frames=range(0, 50), cameras=CAMERAS, people=PEOPLE)

    first = publish(api_settings, task_id, store, "sub_video_01", range(0, 50))
    # person 1: 2 cameras, person 2: 1 camera, on all 50 frames
    assert (first.frames, first.tracks, first.positions, first.appended, first.skipped) == (50, 150, 100, 50, 0)
    counts, entries = row_counts(api_engine, task_id), stream(api_settings, task_id)

    again = publish(api_settings, task_id, store, "sub_video_01", range(0, 50))
    assert (again.frames, again.tracks, again.positions, again.appended, again.skipped) == (50, 0, 0, 0, 50)
    assert row_counts(api_engine, task_id) == counts == {"frame": 50, "track": 150, "identity_position": 100}
    assert stream(api_settings, task_id) == entries
    assert [e[0] for e in entries] == [f"{f + 1}-0" for f in range(50)]


def test_republished_changes_update_rows_in_place(api_settings: Settings, api_engine, new_task_id) -> None:
    """A re-run that changed identities (say, a new association config) updates rows, adds none."""
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    write_chunk(store, chunk="sub_video_01", chunk_index=0, frames=range(0, 10), cameras=CAMERAS, people=PEOPLE)
    publish(api_settings, task_id, store, "sub_video_01", range(0, 10))
    ids = store.read_parquet("sub_video_01/identities.parquet")
    store.write_parquet("sub_video_01/identities.parquet", ids.assign(global_id=ids["global_id"] + 100))
    result = publish(api_settings, task_id, store, "sub_video_01", range(0, 10))
    assert result.tracks == 30
    assert row_counts(api_engine, task_id)["track"] == 30
    with api_engine.connect() as conn:
        gids = conn.execute(sqlalchemy.text("SELECT DISTINCT global_id FROM track WHERE run_id = :r ORDER BY 1"),
                            {"r": task_id}).scalars().all()
    assert gids == [101, 102]


def test_stream_ids_interleave_statuses_after_the_frames_they_follow(api_settings: Settings, new_task_id) -> None:
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    write_chunk(store, chunk="sub_video_01", chunk_index=0, frames=range(0, 5), cameras=CAMERAS, people=PEOPLE)
    write_chunk(store, chunk="sub_video_02", chunk_index=1, frames=range(5, 10), cameras=CAMERAS, people=PEOPLE)
    publish_status(task_id=task_id, status="PROCESSING", progress=0, current_step="start", settings=api_settings)
    publish(api_settings, task_id, store, "sub_video_01", range(0, 5))
    publish_status(task_id=task_id, status="PROCESSING", progress=50, current_step="one", settings=api_settings)
    publish_status(task_id=task_id, status="PROCESSING", progress=50, current_step="two", settings=api_settings)
    publish(api_settings, task_id, store, "sub_video_02", range(5, 10))
    publish_status(task_id=task_id, status="COMPLETED", progress=100, current_step="done", settings=api_settings)

    entries = stream(api_settings, task_id)
    assert [e[0] for e in entries] == [
        "0-1", "1-0", "2-0", "3-0", "4-0", "5-0", "5-1", "5-2", "6-0", "7-0", "8-0", "9-0", "10-0", "10-1"]
    kinds = [WsMessage.model_validate_json(fields["data"]).type for _, fields in entries]
    assert kinds == [fields["type"] for _, fields in entries]
    latest = redis.Redis.from_url(api_settings.redis_url).get(streams.status_key(task_id))
    assert WsMessage.model_validate_json(latest).payload.status == "COMPLETED"

    # Redis lost the stream: the next status goes after the last frame Postgres holds (9)
    redis.Redis.from_url(api_settings.redis_url).delete(streams.stream_key(task_id))
    publish_status(task_id=task_id, status="FAILED", progress=100, current_step="x", settings=api_settings)
    assert [e[0] for e in stream(api_settings, task_id)] == ["10-0"]


def test_bad_input_is_a_permanent_error(api_settings: Settings, new_task_id) -> None:
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    with pytest.raises(ValueError, match="UUID"):
        publish_status(task_id="run-7", status="QUEUED", progress=0, current_step="", settings=api_settings)
    with pytest.raises(FileNotFoundError, match="tracks.parquet"):
        publish(api_settings, task_id, store, "sub_video_09", range(0, 5))


def test_outages_are_transient_connection_errors(api_settings: Settings, new_task_id, private_redis) -> None:
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    write_chunk(store, chunk="sub_video_01", chunk_index=0, frames=range(0, 5), cameras=CAMERAS, people=PEOPLE)
    settings = api_settings.model_copy(update={"redis_url": private_redis.url})
    private_redis.stop()
    with pytest.raises(ConnectionError, match="Redis unavailable"):
        publish(settings, task_id, store, "sub_video_01", range(0, 5))
    private_redis.start()
    # the retry completes what the failed attempt started: rows were stored, frames now streamed
    result = publish(settings, task_id, store, "sub_video_01", range(0, 5))
    assert (result.tracks, result.appended) == (0, 5)

    bad_db = api_settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    with pytest.raises(ConnectionError, match="Postgres unavailable"):
        publish_status(task_id=task_id, status="QUEUED", progress=0, current_step="", settings=bad_db)
