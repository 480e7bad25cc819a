"""WebSocket fan-out and REST frames latency of the results API: ``python bench/ws_fanout.py``.

1. Live feed: the API runs under uvicorn in its own process; CLIENTS WebSocket clients
   (another process) follow one task while this process appends 4-camera frames at FPS
   to the task's Redis stream, as ``api.publisher`` does. Latency is publish (the
   frame's ``timestamp_processed_utc``, set just before its XADD) to arrival at a client.
   Prints p50/p99/max latency, messages/s delivered, and whether every client got
   every frame exactly once (target: p99 <= 50 ms).
2. REST: a synthetic 1-hour, 4-camera result set (90,000 frames x 4 cameras x 10
   people = 3.6 M track rows) is bulk-inserted once into the bench database through
   ``api.crud``; then random pages of ``/frames`` are timed (p50/p99), plus one call of
   each analytics endpoint.

Uses the local PostgreSQL (database ``spoton_bench``, created if missing, kept for the
next run) and Redis (only this run's task keys, deleted at the end).
"""

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import redis
import sqlalchemy
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import crud, streams  # noqa: E402
from api.db import migrated_engine  # noqa: E402
from api.payloads import FrameRow, tracking_payloads  # noqa: E402
from spoton.types import tracking_message  # noqa: E402

CAMERAS = ["c1", "c2", "c3", "c4"]
PEOPLE = 10
HOUR_FRAMES = 90_000  # 1 hour at 25 fps
BENCH_RUN = uuid.UUID("00000000-0000-4000-8000-0000000be7c4")  # the stored 1-hour run, reused
TS_KEY = '"timestamp_processed_utc":"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ synthetic people


def people_at(frames: np.ndarray, rng_seed: int = 7) -> pd.DataFrame:
    """Track rows of PEOPLE walkers seen by every camera at ``frames``: TRACK_COLUMNS."""
    rng = np.random.default_rng(rng_seed)
    speed = rng.uniform(0.005, 0.02, (PEOPLE, 2))
    start = rng.uniform(1, 14, (PEOPLE, 2))
    f = frames[:, None].astype(np.float64)
    x = (start[None, :, 0] + speed[None, :, 0] * f) % 20.0
    y = (start[None, :, 1] + speed[None, :, 1] * f) % 15.0
    parts = []
    for ci, cam in enumerate(CAMERAS):
        u = 100 + 80 * x + 9 * ci
        v = 150 + 50 * y
        parts.append(pd.DataFrame({
            "frame_idx": np.repeat(frames, PEOPLE),
            "camera_id": cam,
            "track_id": np.tile(np.arange(1, PEOPLE + 1) * 10 + ci, len(frames)),
            "global_id": np.tile(np.arange(1, PEOPLE + 1), len(frames)),
            "x1": (u - 20).ravel().astype(np.float32), "y1": (v - 90).ravel().astype(np.float32),
            "x2": (u + 20).ravel().astype(np.float32), "y2": v.ravel().astype(np.float32),
            "confidence": np.float32(0.9), "class_id": 1,
            "map_x": x.ravel().astype(np.float32), "map_y": y.ravel().astype(np.float32),
        }))
    return pd.concat(parts, ignore_index=True)


def live_messages(frames: range, scene: str) -> list[str]:
    """tracking_update JSON per frame, through the same assembly as the publisher."""
    tracks = people_at(np.arange(frames.start, frames.stop)).sort_values(["frame_idx", "camera_id", "track_id"])
    rows = tracks.loc[:, ["frame_idx", "camera_id", "track_id", "global_id", "x1", "y1", "x2", "y2",
                          "confidence", "class_id", "map_x", "map_y"]].itertuples(index=False, name=None)
    placeholder = datetime(2000, 1, 1, tzinfo=UTC)  # replaced by the publish time
    payloads = tracking_payloads([FrameRow(f, placeholder, CAMERAS) for f in frames], rows, scene_id=scene)
    return [tracking_message(p).model_dump_json() for p in payloads]


# --------------------------------------------------------------------- the server


@contextlib.contextmanager
def api_server(database_url: str, redis_url: str, workers: int):
    port = free_port()
    env = {**os.environ, "SPOTON_DATABASE_URL": database_url, "SPOTON_REDIS_URL": redis_url,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--workers", str(workers)],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API server did not start")
            time.sleep(0.3)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


# ---------------------------------------------------------------------- clients


async def _follow(ws, frames: int) -> tuple[list[int], list[float]]:
    seen, latencies = [], []
    async for raw in ws:
        now = time.time()
        if raw.startswith('{"type":"tracking_update"'):
            i = raw.index(TS_KEY) + len(TS_KEY)
            sent = datetime.fromisoformat(raw[i:i + 23] + "+00:00").timestamp()
            latencies.append(now - sent)
            j = raw.index('"frame_index":') + 14
            seen.append(int(raw[j:raw.index(",", j)]))
        if len(seen) == frames:
            break
    await ws.close()
    return seen, latencies


def clients_process(url: str, n: int, frames: int, ready, results) -> None:
    from websockets.asyncio.client import connect

    async def main() -> list:
        # every client connected (handshake done, feed started) before the first frame is
        # published: this measures fan-out, not catching up
        sockets = await asyncio.gather(*(connect(url, max_size=None, compression=None) for _ in range(n)))
        await asyncio.sleep(0.5)
        ready.set()
        return await asyncio.gather(*(_follow(ws, frames) for ws in sockets))

    results.put(asyncio.run(main()))


def bench_fanout(
    port: int, database_url: str, redis_url: str, n_clients: int, fps: float, seconds: float, client_procs: int
) -> None:
    task_id = uuid.uuid4()
    n_frames = int(fps * seconds)
    messages = live_messages(range(n_frames), "bench")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # the task must exist for the feed to accept clients: a row as the start endpoint writes it
    with Session(migrated_engine(database_url)) as session:
        crud.create_task(session, task_id=task_id, environment_id="bench", parameters={}, fps=fps)
    url = f"ws://127.0.0.1:{port}/ws/tracking/{task_id}"
    results: mp.Queue = mp.Queue()
    shares = [n_clients // client_procs + (i < n_clients % client_procs) for i in range(client_procs)]
    readies = [mp.Event() for _ in shares]
    procs = [mp.Process(target=clients_process, args=(url, n, n_frames, ready, results))
             for n, ready in zip(shares, readies, strict=True)]
    for proc in procs:
        proc.start()
    if not all(ready.wait(120) for ready in readies):
        raise SystemExit("clients did not connect")
    t0 = time.perf_counter()
    for k, message in enumerate(messages):
        due = t0 + k / fps
        time.sleep(max(0.0, due - time.perf_counter()))
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        data = message.replace('"2000-01-01T00:00:00.000Z"', f'"{stamp}"', 1)
        streams.append_frames(client, task_id=task_id, messages=[(k, data)], maxlen=200_000, ttl_s=600)
    published_s = time.perf_counter() - t0
    out = [followed for _ in procs for followed in results.get(timeout=300)]
    for proc in procs:
        proc.join(30)
    client.delete(streams.stream_key(task_id), streams.status_key(task_id))

    latencies = np.concatenate([np.asarray(lat) for _, lat in out]) * 1000
    frames_of = np.concatenate([np.asarray(seen) for seen, _ in out])
    steady = latencies[frames_of >= 2 * fps]
    exact = sum(seen == list(range(n_frames)) for seen, _ in out)
    delivered = sum(len(seen) for seen, _ in out)
    print(f"\nlive feed: {n_clients} clients ({client_procs} processes), {len(CAMERAS)} cameras x {fps:g} frames/s "
          f"for {seconds:g} s "
          f"({len(messages[0]) / 1024:.1f} kB per message)")
    print(f"  latency publish->client  p50 {np.percentile(latencies, 50):.1f} ms  "
          f"p99 {np.percentile(latencies, 99):.1f} ms  max {latencies.max():.1f} ms  (target p99 <= 50 ms; "
          "timestamps have 1 ms resolution)")
    print(f"  after the first 2 s       p50 {np.percentile(steady, 50):.1f} ms  "
          f"p99 {np.percentile(steady, 99):.1f} ms  max {steady.max():.1f} ms")
    print(f"  delivered {delivered} messages, {delivered / published_s:.0f} messages/s; "
          f"{exact}/{len(out)} clients got every frame exactly once, in order")


# ------------------------------------------------------------------------- REST


def ensure_hour_run(database_url: str) -> None:
    engine = migrated_engine(database_url)
    with Session(engine) as session:
        if crud.last_frame(session, run_id=BENCH_RUN) == HOUR_FRAMES - 1:
            print("1-hour result set already stored")
            return
    print(f"bulk-inserting a 1-hour result set: {HOUR_FRAMES} frames x {len(CAMERAS)} cameras x {PEOPLE} people")
    t0 = time.perf_counter()
    batch = 4_500
    with Session(engine) as session:
        crud.ensure_task(session, task_id=BENCH_RUN, environment_id="factory", fps=25.0)
        session.commit()
    for start in range(0, HOUR_FRAMES, batch):
        frames = np.arange(start, min(start + batch, HOUR_FRAMES))
        tracks = people_at(frames)
        positions = (tracks[tracks.camera_id == CAMERAS[0]]
                     .loc[:, ["global_id", "frame_idx", "map_x", "map_y"]].assign(n_cameras=len(CAMERAS)))
        with Session(engine) as session:
            crud.upsert_frames(session, run_id=BENCH_RUN, frame_indices=frames.tolist(),
                               processed_at=datetime.now(UTC), cameras=CAMERAS)
            crud.upsert_tracks(session, run_id=BENCH_RUN, tracks=tracks)
            crud.upsert_positions(session, run_id=BENCH_RUN, positions=positions)
            session.commit()
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("ANALYZE frame, track, identity_position"))
        conn.commit()
    rows = HOUR_FRAMES * len(CAMERAS) * PEOPLE
    took = time.perf_counter() - t0
    print(f"  {rows / 1e6:.1f} M track rows in {took:.0f} s ({rows / took:,.0f} rows/s)")


def bench_rest(port: int, requests: int) -> None:
    base = f"http://127.0.0.1:{port}/api/v1/processing-tasks/{BENCH_RUN}"
    rng = random.Random(1)
    with httpx.Client(timeout=60) as http:
        pages: list[tuple[str, dict[str, str | int]]] = [
            ("25 frames, all cameras", {"limit": 25}),
            ("100 frames, one camera", {"limit": 100, "camera_id": "c2"}),
        ]
        for label, params in pages:
            times = []
            for _ in range(requests):
                start = rng.randrange(HOUR_FRAMES - 100)
                t0 = time.perf_counter()
                resp = http.get(f"{base}/frames", params={"start": start, **params})
                times.append((time.perf_counter() - t0) * 1000)
                resp.raise_for_status()
            times.sort()
            print(f"  /frames {label:24s} p50 {statistics.median(times):6.1f} ms  "
                  f"p99 {times[int(0.99 * (len(times) - 1))]:6.1f} ms  ({requests} requests)")
        whole: list[tuple[str, dict[str, str | float]]] = [
            ("identities", {}), ("identities/3", {}), ("analytics/heatmap", {"cell_m": 0.5}),
            ("analytics/people-count", {"bucket": "second"}), ("analytics/dwell", {}),
        ]
        for path, query in whole:
            t0 = time.perf_counter()
            http.get(f"{base}/{path}", params=query).raise_for_status()
            print(f"  /{path:28s} {(time.perf_counter() - t0) * 1000:8.0f} ms (whole hour)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--skip-rest", action="store_true")
    args = parser.parse_args()

    admin = sqlalchemy.create_engine(f"{args.postgres}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = 'spoton_bench'")).first():
            conn.execute(sqlalchemy.text("CREATE DATABASE spoton_bench"))
    admin.dispose()
    database_url = f"{args.postgres}/spoton_bench"
    if not args.skip_rest:
        ensure_hour_run(database_url)
    print(f"API: uvicorn, {args.workers} worker process(es); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    with api_server(database_url, args.redis_url, args.workers) as port:
        bench_fanout(port, database_url, args.redis_url, args.clients, args.fps, args.seconds, args.client_processes)
        if not args.skip_rest:
            print("\nREST on the 1-hour, 4-camera result set:")
            bench_rest(port, args.requests)


if __name__ == "__main__":
    main()
