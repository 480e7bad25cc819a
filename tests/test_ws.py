"""WebSocket feed under a real uvicorn server with real Redis and Postgres: exactly-once
delivery, late joiners, from_frame, trimmed or lost history, slow clients, a Redis
restart mid-stream, and the handshake's auth and errors."""

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from api_fixtures import Person, Received, follow, write_chunk
from sqlmodel import Session
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api import crud, streams
from api.db import migrated_engine
from api.publisher import publish_chunk, publish_status
from api.websocket import FeedLimits
from spoton.config import Settings
from spoton.store import RunStore
from spoton.types import CameraFrameWire, TrackingUpdatePayload, TrackWire, tracking_message

CAMERAS = ["c1", "c2"]
PEOPLE = [Person(1, (1.0, 1.0), (0.01, 0.0), ("c1", "c2")), Person(2, (6.0, 2.0), (0.0, 0.01), ("c2",))]
FAST = FeedLimits(block_ms=200, orchestrator_poll_s=3600)


class Run:
    """A task recorded as the start endpoint records it, then published chunk by chunk
    (10 frames each) the way the publish_frames task does."""

    def __init__(self, settings: Settings, task_id: uuid.UUID) -> None:
        self.settings = settings
        self.task_id = task_id
        self.store = RunStore(settings.runs_url, str(task_id))
        self.chunks = 0
        with Session(migrated_engine(settings.database_url)) as session:
            crud.create_task(session, task_id=task_id, environment_id="factory", parameters={}, fps=25.0)

    def chunk(self, frames: int = 10, people: list[Person] = PEOPLE) -> range:
        k = self.chunks
        span = range(k * frames, (k + 1) * frames)
        name = f"sub_video_{k + 1:02d}"
        write_chunk(self.store, chunk=name, chunk_index=k, frames=span, cameras=CAMERAS, people=people)
        publish_chunk(task_id=self.task_id, environment_id="factory", store=self.store, chunk=name,
                      cameras=CAMERAS, settings=self.settings, frames=span, fps=25.0)
        self.chunks += 1
        return span

    def status(self, status: str, progress: float, step: str = "") -> None:
        publish_status(task_id=self.task_id, status=status, progress=progress, current_step=step,
                       settings=self.settings)


def feed_url(server, task_id: uuid.UUID, query: str = "") -> str:
    return f"{server.ws}/ws/tracking/{task_id}{query}"


def assert_exactly_once(got: Received, frames: range) -> None:
    assert got.frames == list(frames), f"frames {got.frames[:5]}…{got.frames[-5:]} (n={len(got.frames)})"


def test_live_feed_delivers_every_frame_once_in_order(live_api, api_settings, new_task_id) -> None:
    run = Run(api_settings, new_task_id())
    run.status("QUEUED", 0, "waiting")

    async def main() -> tuple[Received, Received]:
        with live_api(feed_limits=FAST) as server:
            early = asyncio.create_task(follow(feed_url(server, run.task_id)))
            await asyncio.sleep(0.3)
            for k in range(3):
                await asyncio.to_thread(run.chunk)
                await asyncio.to_thread(run.status, "PROCESSING", 100 * (k + 1) / 3, f"chunk {k}")
            await asyncio.to_thread(run.status, "COMPLETED", 100, "done")
            got = await early
            async with httpx.AsyncClient(base_url=server.http) as http:
                rest = (await http.get(f"/api/v1/processing-tasks/{run.task_id}/frames",
                                       params={"limit": 1000})).json()
            return got, rest

    got, rest = asyncio.run(main())
    assert_exactly_once(got, range(30))
    assert got.statuses == ["QUEUED", "PROCESSING", "PROCESSING", "PROCESSING", "COMPLETED"]
    assert got.close_code == 1000
    # the live messages are the stored rows, field for field
    assert [m["payload"] for m in got.messages if m["type"] == "tracking_update"] == rest["items"]
    assert got.messages[1]["payload"]["cameras"]["c1"]["tracks"][0]["map_coords"] == [1.0, 1.0]


def test_late_joiner_gets_history_then_tail_and_from_frame(live_api, api_settings, new_task_id) -> None:
    run = Run(api_settings, new_task_id())
    run.status("PROCESSING", 0, "start")
    run.chunk()
    run.chunk()

    async def main() -> tuple[Received, Received]:
        with live_api(feed_limits=FAST) as server:
            late = asyncio.create_task(follow(feed_url(server, run.task_id)))
            resumed = asyncio.create_task(follow(feed_url(server, run.task_id, "?from_frame=15")))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(run.chunk)
            await asyncio.to_thread(run.status, "COMPLETED", 100, "done")
            return await late, await resumed

    late, resumed = asyncio.run(main())
    assert_exactly_once(late, range(30))
    assert late.statuses == ["PROCESSING", "COMPLETED"] and late.close_code == 1000
    assert_exactly_once(resumed, range(15, 30))
    assert resumed.statuses == ["COMPLETED"] and resumed.close_code == 1000


def test_trimmed_or_lost_history_is_replayed_from_postgres(live_api, api_settings, new_task_id) -> None:
    trimmed, lost = Run(api_settings, new_task_id()), Run(api_settings, new_task_id())
    for run in (trimmed, lost):
        run.status("PROCESSING", 0, "start")
        for _ in range(4):
            run.chunk()
        run.status("COMPLETED", 100, "done")
    client = redis.Redis.from_url(api_settings.redis_url)
    client.xtrim(streams.stream_key(trimmed.task_id), maxlen=5, approximate=False)  # frames 36-39 + status
    client.delete(streams.stream_key(lost.task_id), streams.status_key(lost.task_id))

    async def main() -> list[Received]:
        with live_api(feed_limits=FAST) as server:
            return await asyncio.gather(
                follow(feed_url(server, trimmed.task_id)),
                follow(feed_url(server, trimmed.task_id, "?from_frame=33")),
                follow(feed_url(server, lost.task_id)),
            )

    from_trimmed, from_33, from_lost = asyncio.run(main())
    assert_exactly_once(from_trimmed, range(40))
    assert from_trimmed.statuses == ["COMPLETED"] and from_trimmed.close_code == 1000
    assert_exactly_once(from_33, range(33, 40))
    # nothing in Redis at all: frames from Postgres, the end from the task's recorded status
    assert_exactly_once(from_lost, range(40))
    assert from_lost.statuses == ["COMPLETED"] and from_lost.close_code == 1000


def crowded_frames(frames: range, people: int = 150) -> list[tuple[int, str]]:
    """Big tracking_update messages (~50 kB) for the stream, to fill socket buffers fast."""
    out = []
    for f in frames:
        tracks = [TrackWire(track_id=t, global_id=str(t), bbox_xyxy=[t, f, t + 30.5, f + 60.25], confidence=0.9,
                            map_coords=[t / 10, f / 10]) for t in range(people)]
        payload = TrackingUpdatePayload(
            frame_index=f, scene_id="factory", timestamp_processed_utc="2025-01-01T00:00:00.000Z",
            cameras={c: CameraFrameWire(image_source=f"{f:06d}.jpg", tracks=tracks) for c in CAMERAS},
        )
        out.append((f, tracking_message(payload).model_dump_json()))
    return out


def test_slow_client_is_closed_without_stalling_others(live_api, api_settings, new_task_id) -> None:
    run = Run(api_settings, new_task_id())
    # A client whose queue stays full for send_timeout_s is closed. The fast client shares this
    # process (and its GIL) with the server and the publisher, so under load it can pause for
    # a second or more; 5 s keeps it well clear of that while the stalled one still trips it.
    limits = FeedLimits(queue_size=8, send_timeout_s=5.0, block_ms=200, orchestrator_poll_s=3600)
    stream_client = redis.Redis.from_url(api_settings.redis_url, decode_responses=True)
    frames = range(300)  # ~15 MB: more than the kernel buffers a stalled socket can absorb

    def tiny_socket(port: int) -> socket.socket:
        # a small receive buffer, so a client that stops reading pushes back quickly
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        return sock

    async def stalled(server, until: asyncio.Event) -> Received:
        got = Received()
        # no permessage-deflate: these repetitive messages would shrink to fit every buffer
        async with connect(feed_url(server, run.task_id), sock=tiny_socket(server.port), max_queue=1,
                           compression=None) as ws:
            got.messages.append(json.loads(await ws.recv()))
            await until.wait()  # reads nothing more while the task streams to the others
            # ... and for a while after: the server's blocked send must outlast its timeout
            # (its queue filled long before, once the kernel buffers had taken what they could).
            await asyncio.sleep(limits.send_timeout_s + 2)
            try:
                async for raw in ws:
                    got.messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
            got.close_code, got.close_reason = ws.close_code, ws.close_reason or ""
            return got

    async def main() -> tuple[Received, Received, float]:
        with live_api(feed_limits=limits) as server:
            fast_done = asyncio.Event()
            slow = asyncio.create_task(stalled(server, fast_done))
            fast = asyncio.create_task(follow(feed_url(server, run.task_id)))
            await asyncio.sleep(0.3)
            messages = crowded_frames(frames)
            started = time.monotonic()
            for k in range(0, len(messages), 30):
                streams.append_frames(stream_client, task_id=run.task_id, messages=messages[k:k + 30],
                                      maxlen=10_000, ttl_s=600)
                await asyncio.sleep(0.1)
            await asyncio.to_thread(run.status, "COMPLETED", 100, "done")
            fast_got = await fast
            elapsed = time.monotonic() - started
            fast_done.set()
            return await slow, fast_got, elapsed

    slow, fast, elapsed = asyncio.run(main())
    assert_exactly_once(fast, frames)
    assert fast.close_code == 1000
    # Had the slow client held the others up, the fast one could only finish once the server
    # gave up on it: at least send_timeout_s after its queue filled, which is after publishing
    # started. Finishing sooner is the proof that it never waited.
    assert elapsed < limits.send_timeout_s, f"the fast client took {elapsed:.1f} s: it waited for the slow one"
    assert slow.close_code == 1008 and "too slow" in slow.close_reason
    assert len(slow.frames) < len(frames) and slow.frames == list(range(len(slow.frames)))


def test_redis_restart_mid_stream_resumes_without_gaps(live_api, api_settings, new_task_id, private_redis) -> None:
    settings = api_settings.model_copy(update={"redis_url": private_redis.url})
    run = Run(settings, new_task_id())
    run.status("PROCESSING", 0, "start")

    async def main() -> tuple[Received, Received]:
        with live_api(settings=settings, feed_limits=FAST) as server:
            watcher = asyncio.create_task(follow(feed_url(server, run.task_id)))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(run.chunk)  # frames 0-9, live
            await asyncio.sleep(0.5)
            private_redis.stop()
            with pytest.raises(ConnectionError):
                await asyncio.to_thread(run.chunk)  # frames 10-19 stored, not streamed
            await asyncio.sleep(0.5)  # the watcher meanwhile: Redis down, then catching up from Postgres
            await asyncio.to_thread(private_redis.start)  # empty: no persistence
            await asyncio.sleep(1.0)  # long enough for the watcher to find the stream gone
            await asyncio.to_thread(run.chunk)  # Prefect's retry: frames 10-19 into a brand-new stream
            await asyncio.to_thread(run.chunk)  # frames 20-29, live
            await asyncio.to_thread(run.status, "COMPLETED", 100, "done")
            first = await watcher
            return first, await follow(feed_url(server, run.task_id))

    watcher, late = asyncio.run(main())
    assert_exactly_once(watcher, range(30))
    assert watcher.statuses == ["PROCESSING", "COMPLETED"] and watcher.close_code == 1000
    assert_exactly_once(late, range(30))
    assert late.close_code == 1000


def test_unresponsive_client_is_dropped_by_keepalive(live_api, api_settings, new_task_id) -> None:
    run = Run(api_settings, new_task_id())
    run.status("PROCESSING", 0, "start")
    run.chunk()  # the task goes on, silent: no send ever blocks, only pings go unanswered

    async def main() -> tuple[Received, int]:
        with live_api(feed_limits=FAST, ws_ping_interval=0.3, ws_ping_timeout=0.3) as server:
            got = Received()
            # max_queue=1: the client stops reading its socket after one message, pongs included
            async with connect(feed_url(server, run.task_id), max_queue=1, ping_interval=None) as ws:
                await asyncio.sleep(2.0)
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        got.messages.append(json.loads(raw))
                got.close_code, got.close_reason = ws.close_code, ws.close_reason or ""
            await asyncio.sleep(0.5)
            return got, sum(len(t.subscribers) for t in server.app.state.tails._tails.values())

    got, subscribed = asyncio.run(main())
    assert got.close_code == 1011 and "keepalive" in got.close_reason
    assert subscribed == 0  # its feed stopped with it


def test_handshake_auth_and_unknown_tasks(live_api, api_settings, new_task_id) -> None:
    keyed = api_settings.model_copy(update={"api_keys": ["sesame"]})
    run = Run(keyed, new_task_id())
    run.chunk()
    run.status("COMPLETED", 100, "done")

    async def status_of(url: str, headers: dict | None = None) -> int:
        try:
            async with connect(url, additional_headers=headers):
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    async def main() -> tuple[list[int], Received, Received]:
        with live_api(settings=keyed, feed_limits=FAST) as server:
            codes = [
                await status_of(feed_url(server, run.task_id)),
                await status_of(feed_url(server, run.task_id, "?token=wrong")),
                await status_of(feed_url(server, run.task_id), {"X-API-Key": "wrong"}),
                await status_of(feed_url(server, run.task_id, "?token=sesame"), {"Authorization": "Basic x"}),
                await status_of(feed_url(server, uuid.uuid4(), "?token=sesame")),
                await status_of(f"{server.ws}/ws/tracking/not-a-uuid?token=sesame"),
            ]
            by_token = await follow(feed_url(server, run.task_id, "?token=sesame"))
            by_header = await follow(feed_url(server, run.task_id), additional_headers={"X-API-Key": "sesame"})
            return codes, by_token, by_header

    codes, by_token, by_header = asyncio.run(main())
    assert codes[:5] == [401, 403, 403, 403, 404]
    assert codes[5] == 403  # invalid path parameter: FastAPI refuses the handshake
    for ok in (by_token, by_header):
        assert_exactly_once(ok, range(10))
        assert ok.close_code == 1000


def test_ws_client_script_prints_the_feed(live_api, api_settings, new_task_id) -> None:
    run = Run(api_settings, new_task_id())
    run.status("PROCESSING", 0, "start")
    run.chunk()
    run.status("COMPLETED", 100, "done")
    script = Path(__file__).resolve().parents[1] / "scripts" / "ws_client.py"
    with live_api(feed_limits=FAST) as server:
        out = subprocess.run(
            [sys.executable, str(script), "--base-url", server.http, "--task-id", str(run.task_id),
             "--from-frame", "4"],
            capture_output=True, text=True, timeout=120,
        )
    assert out.returncode == 0, out.stderr
    log = out.stderr
    assert f"INFO:websocket_client:[TASK {run.task_id}][STATUS_UPDATE]" in log
    assert "INFO:websocket_client:  Status: COMPLETED" in log and "Progress: 100.00%" in log
    assert log.count("[TRACKING_UPDATE]") == 6 and "Frame 4 (factory)" in log
    assert "c1 000004.jpg: track 10, person 1" in log
