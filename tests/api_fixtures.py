"""Fixtures of the API tests: a fresh results database per session, apps on it, a live
uvicorn server, a private restartable Redis, and hand-made result sets written as
real run artefacts.

Registered from tests/conftest.py with ``pytest_plugins = ["api_fixtures"]``.
Redis isolation: the API tests use their own database number (``REDIS_DB``), every
test works on fresh task ids (UUIDs), and the keys of the ids a test used are
deleted after it (``new_task_id``, ``forget_streams``).
"""

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
import sqlalchemy
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api import migrate, streams
from api.main import create_app
from api.orchestration import Orchestrator
from api.websocket import FeedLimits
from spoton.config import Settings
from spoton.store import RunStore, tracks_path

# ---------------------------------------------------------------- services


@pytest.fixture(scope="session")
def api_database(postgres_server: str) -> Iterator[str]:
    """URL of a database created for this test session (latest schema), dropped at the end."""
    name = f"spoton_test_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = f"{postgres_server}/{name}"
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def api_engine(api_database: str) -> Iterator[sqlalchemy.Engine]:
    engine = sqlalchemy.create_engine(api_database)
    yield engine
    engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence: restarting it loses
    everything, as a crashed production Redis without AOF would. Never the machine's."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ settings


REDIS_DB = 9  # API tests' keys stay out of the database the running stack uses


def forget_streams(redis_url: str, task_ids: list) -> None:
    """Delete the Redis keys of these tasks (streams outlive a test by Settings.stream_ttl_s)."""
    client = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.ConnectionError):
        for task_id in task_ids:
            client.delete(streams.stream_key(task_id), streams.status_key(task_id))
    client.close()


@pytest.fixture
def api_settings(api_database: str, redis_server: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=api_database,
        redis_url=f"{redis_server}/{REDIS_DB}",
        runs_url=str(tmp_path / "runs"),
        api_keys=[],
    )


@pytest.fixture
def new_task_id(api_settings: Settings) -> Iterator[Callable[[], uuid.UUID]]:
    """Fresh task ids; their Redis keys are deleted after the test."""
    made: list[uuid.UUID] = []

    def make() -> uuid.UUID:
        made.append(uuid.uuid4())
        return made[-1]

    yield make
    forget_streams(api_settings.redis_url, made)


NO_PREFECT = Orchestrator(api_url=None, deployment_name="process-environment/process-environment")


def unreachable_prefect() -> Orchestrator:
    """A Prefect API URL where nothing listens: connection refused at once."""
    return Orchestrator(api_url=f"http://127.0.0.1:{free_port()}/api",
                        deployment_name="process-environment/process-environment")


@pytest.fixture
def api_client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, orchestrator=unreachable_prefect())) as client:
        yield client


@dataclass
class LiveServer:
    app: FastAPI
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(app: FastAPI, *, ws_ping_interval: float = 20.0, ws_ping_timeout: float = 20.0) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn (real sockets, real back-pressure) in a background thread."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            ws_ping_interval=ws_ping_interval, ws_ping_timeout=ws_ping_timeout)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(app, port)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_api(api_settings: Settings) -> Callable[..., contextlib.AbstractContextManager[LiveServer]]:
    """``with live_api(settings=..., feed_limits=...) as server``: the app under uvicorn."""

    def start(settings: Settings | None = None, feed_limits: FeedLimits | None = None,
              orchestrator: Orchestrator = NO_PREFECT, **uvicorn_options: float,
              ) -> contextlib.AbstractContextManager[LiveServer]:
        app = create_app(settings or api_settings, orchestrator=orchestrator, feed_limits=feed_limits)
        return serve(app, **uvicorn_options)

    return start


# ------------------------------------------------------- hand-made result sets


@dataclass(frozen=True)
class Person:
    global_id: int
    start: tuple[float, float]  # metres at frame 0
    velocity: tuple[float, float]  # metres per frame
    cameras: tuple[str, ...]  # who sees them


def box_of(x: float, y: float, cam_index: int) -> tuple[float, float, float, float]:
    """An arbitrary but fixed box for a floor position (the API never reprojects boxes)."""
    u = 100.0 + 40.0 * x + 7.0 * cam_index
    v = 200.0 + 25.0 * y
    return (u - 15.0, v - 60.0, u + 15.0, v)


def write_chunk(
    store: RunStore, *, chunk: str, chunk_index: int, frames: range, cameras: list[str],
    people: list[Person], every: int = 1,
) -> dict[str, pd.DataFrame]:
    """tracks.parquet per camera, identities.parquet and map.parquet of one chunk, as the
    pipeline lays them out; people are seen on frames divisible by ``every``.
    Returns the tracks per camera (with ``global_id``) and ``map`` for expectations."""
    out: dict[str, pd.DataFrame] = {}
    id_rows, map_rows = [], []
    for ci, cam in enumerate(cameras):
        rows = []
        for p in people:
            if cam not in p.cameras:
                continue
            track_id = chunk_index * 100_000 + p.global_id * 10 + ci  # per camera, like a tracker's ids
            id_rows.append({"camera_id": cam, "track_id": track_id, "global_id": p.global_id})
            for f in frames:
                if f % every:
                    continue
                x, y = p.start[0] + p.velocity[0] * f, p.start[1] + p.velocity[1] * f
                x1, y1, x2, y2 = box_of(x, y, ci)
                rows.append({"frame_idx": f, "track_id": track_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                             "confidence": 0.5 + 0.01 * p.global_id, "class_id": 1,
                             "map_x": x if ci != 1 else np.nan, "map_y": y if ci != 1 else np.nan})
        df = pd.DataFrame(rows, columns=["frame_idx", "track_id", "x1", "y1", "x2", "y2", "confidence",
                                         "class_id", "map_x", "map_y"])
        df = df.astype({"frame_idx": "int64", "track_id": "int64", "x1": "float32", "y1": "float32",
                        "x2": "float32", "y2": "float32", "confidence": "float32", "class_id": "int32",
                        "map_x": "float32", "map_y": "float32"})
        df = df.sort_values(["frame_idx", "track_id"], ignore_index=True)
        store.write_parquet(tracks_path(cam, chunk), df)
        gids = {r["track_id"]: r["global_id"] for r in id_rows if r["camera_id"] == cam}
        out[cam] = df.assign(global_id=df["track_id"].map(gids).astype("int64"))
    for p in people:
        for f in frames:
            if f % every:
                continue
            seen_by = len(p.cameras)
            map_rows.append({"frame_idx": f, "global_id": p.global_id,
                             "map_x": p.start[0] + p.velocity[0] * f, "map_y": p.start[1] + p.velocity[1] * f,
                             "n_cameras": seen_by})
    ids = pd.DataFrame(id_rows, columns=["camera_id", "track_id", "global_id"]).astype(
        {"track_id": "int64", "global_id": "int64"})
    store.write_parquet(f"{chunk}/identities.parquet", ids)
    positions = pd.DataFrame(map_rows, columns=["frame_idx", "global_id", "map_x", "map_y", "n_cameras"]).astype(
        {"frame_idx": "int64", "global_id": "int64", "map_x": "float32", "map_y": "float32", "n_cameras": "int32"})
    store.write_parquet(f"{chunk}/map.parquet", positions)
    out["map"] = positions
    return out


# ------------------------------------------------------------ feed clients


@dataclass
class Received:
    messages: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def frames(self) -> list[int]:
        return [m["payload"]["frame_index"] for m in self.messages if m["type"] == "tracking_update"]

    @property
    def statuses(self) -> list[str]:
        return [m["payload"]["status"] for m in self.messages if m["type"] == "status_update"]


async def follow(url: str, timeout_s: float = 60.0, **connect_kwargs) -> Received:
    """Every message until the server closes the feed."""
    got = Received()
    async with asyncio.timeout(timeout_s), connect(url, **connect_kwargs) as ws:
        try:
            async for raw in ws:
                got.messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
        got.close_code, got.close_reason = ws.close_code, ws.close_reason or ""
    return got
