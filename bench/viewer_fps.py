"""Viewer rendering benchmark: frames drawn per second per camera tile in headless Chromium.

A synthetic 4-camera scene is rendered (``--size``, ``--seconds``), run through the
real ``process_environment`` flow (publish=True) into a scratch Postgres database
and Redis, and served by the API with the viewer under uvicorn. The page plays the
task at each ``--speeds`` and counts, per tile, the video frames it drew boxes for
(requestVideoFrameCallback), the playhead's advance, tile-to-tile drift and the
time spent drawing. Keeping up means every tile draws ``fps x speed`` frames/s; a
bare page playing the same four videos with nothing else gives the frame-callback
rate this browser and machine deliver at all (headless Chromium renders in
software), the ceiling any page can reach.

Plain prints of figures, not a test:
``python bench/viewer_fps.py [--size 960x540] [--seconds 12] [--speeds 1,2]``.
Needs Postgres and Redis (``SPOTON_DATABASE_URL`` server, ``SPOTON_REDIS_URL``) and
Debian's chromium at /usr/bin/chromium.
"""

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="spoton-bench-prefect-"))
os.environ.update(
    DO_NOT_TRACK="1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    HF_HUB_OFFLINE="1",
    PREFECT_API_URL="",
    PREFECT_LOGGING_TO_API_ENABLED="false",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import sqlalchemy  # noqa: E402
import uvicorn  # noqa: E402
from sqlmodel import Session  # noqa: E402

from api import crud, migrate, streams  # noqa: E402
from api.main import create_app  # noqa: E402
from api.orchestration import Orchestrator  # noqa: E402
from api.viewer.routes import router as viewer_router  # noqa: E402
from spoton.config import Settings, get_settings  # noqa: E402
from spoton.synth import SceneSpec, generate_scene, parse_size  # noqa: E402

ENV = "viewerbench"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def scratch_database(server_url: str) -> str:
    name = f"spoton_bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"{server_url}/{name}"
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    admin = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run_pipeline(scene: Path, settings: Settings, fps: float) -> uuid.UUID:
    """The real flow, publishing into ``settings``' Postgres and Redis."""
    os.environ.update(
        SPOTON_DATABASE_URL=settings.database_url,
        SPOTON_REDIS_URL=settings.redis_url,
        SPOTON_RUNS_URL=settings.runs_url,
        SPOTON_CACHE_DIR=str(settings.cache_dir),
    )
    get_settings.cache_clear()
    from flows.process import process_environment

    summary = process_environment(environment_id=ENV, videos=str(scene), publish=True)
    task_id = uuid.UUID(summary["run_id"])
    engine = sqlalchemy.create_engine(settings.database_url)
    with Session(engine) as session:  # what POST /processing-tasks/start records
        crud.create_task(
            session,
            task_id=task_id,
            environment_id=ENV,
            fps=fps,
            parameters={"environment_id": ENV, "publish": True, "videos": str(scene)},
        )
    engine.dispose()
    return task_id


def serve(settings: Settings) -> tuple[uvicorn.Server, int]:
    app = create_app(settings, orchestrator=Orchestrator(api_url=None, deployment_name="-"))
    if not any(getattr(r, "path", None) == "/viewer" for r in app.routes):
        app.include_router(viewer_router)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, port


SAMPLE = """() => ({
  t: performance.now(), frame: spotonViewer.currentFrame(),
  tiles: spotonViewer.renderedPerCamera(), shown: spotonViewer.tileFrames(),
  cost: spotonViewer.drawCost(), quality: spotonViewer.videoQuality(),
  raf: spotonViewer.animationFrames(),
})"""


def measure(page, speed: float, fps: float, window_s: float) -> dict:
    page.evaluate("spotonViewer.pause()")
    page.evaluate(f"spotonViewer.setSpeed({speed})")
    page.evaluate("spotonViewer.seek(0)")
    page.wait_for_function("Object.values(spotonViewer.tileFrames()).every((f) => f === 0)", timeout=20_000)
    page.evaluate("spotonViewer.play()")
    page.wait_for_timeout(700)  # past the start-up seeks
    a = page.evaluate(SAMPLE)
    drift = []
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        shown = [f for f in page.evaluate("Object.values(spotonViewer.tileFrames())") if f >= 0]
        drift.append(max(shown) - min(shown) if shown else 0)
        page.wait_for_timeout(200)
    b = page.evaluate(SAMPLE)
    dt = (b["t"] - a["t"]) / 1000
    per_camera = {c: (b["tiles"][c] - a["tiles"][c]) / dt for c in a["tiles"]}
    presented = {
        c: (
            (b["quality"][c]["total"] - b["quality"][c]["dropped"])
            - (a["quality"][c]["total"] - a["quality"][c]["dropped"])
        )
        / dt
        for c in a["quality"]
    }
    dropped = {c: (b["quality"][c]["dropped"] - a["quality"][c]["dropped"]) / dt for c in a["quality"]}
    draws = b["cost"]["tileDraws"] - a["cost"]["tileDraws"]
    maps = b["cost"]["mapDraws"] - a["cost"]["mapDraws"]
    return {
        "speed": speed,
        "seconds": dt,
        "target": fps * speed,
        "per_camera": per_camera,
        "presented": presented,
        "dropped": dropped,
        "playhead_fps": (b["frame"] - a["frame"]) / dt,
        "raf_fps": (b["raf"] - a["raf"]) / dt,
        "drift_max": max(drift, default=0),
        "drift_mean": sum(drift) / max(len(drift), 1),
        "box_ms": (b["cost"]["tiles"] - a["cost"]["tiles"]) / max(draws, 1),
        "map_ms": (b["cost"]["map"] - a["cost"]["map"]) / max(maps, 1),
    }


BARE_PAGE = """<!doctype html><body style="margin:0;display:grid;grid-template-columns:1fr 1fr">
{videos}
<script>
  window.counts = {{}};
  for (const v of document.querySelectorAll('video')) {{
    window.counts[v.id] = 0;
    const cb = () => {{ window.counts[v.id] += 1; v.requestVideoFrameCallback(cb); }};
    v.requestVideoFrameCallback(cb);
  }}
</script></body>"""


def measure_bare(browser, base_url: str, media: dict, speed: float, window_s: float) -> dict[str, float]:
    """Video frame callbacks per second on a page with the same four videos and nothing else:
    what this browser on this machine can deliver at all, the ceiling for the viewer."""
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    videos = "\n".join(
        f'<video id="{c["camera_id"]}" src="{base_url}{c["chunks"][0]["url"]}" muted playsinline '
        f'preload="auto" style="width:100%"></video>'
        for c in media["cameras"]
    )
    page.set_content(BARE_PAGE.format(videos=videos))
    page.wait_for_function("[...document.querySelectorAll('video')].every((v) => v.readyState >= 3)", timeout=30_000)
    page.evaluate(
        "Promise.all([...document.querySelectorAll('video')]"
        f".map((v) => {{ v.playbackRate = {speed}; return v.play(); }}))"
    )
    page.wait_for_timeout(700)
    a = page.evaluate("({t: performance.now(), c: {...window.counts}})")
    page.wait_for_timeout(int(window_s * 1000))
    b = page.evaluate("({t: performance.now(), c: {...window.counts}})")
    page.close()
    dt = (b["t"] - a["t"]) / 1000
    return {c: (b["c"][c] - a["c"][c]) / dt for c in a["c"]}


def report(r: dict) -> None:
    target = r["target"]
    print(f"speed {r['speed']:g}x: target {target:.1f} frames/s per camera, measured over {r['seconds']:.1f} s")
    for cam, drawn in r["per_camera"].items():
        bare = r["bare"][cam]
        print(
            f"  {cam}: boxes drawn on {drawn:5.1f} frames/s = {drawn / target:4.2f} of target, "
            f"{drawn / max(bare, 1e-9):4.2f} of a bare page's {bare:5.1f} frame callbacks/s; "
            f"video presented {r['presented'][cam]:5.1f}/s, dropped {r['dropped'][cam]:4.1f}/s"
        )
    worst = min(r["per_camera"].values())
    ceiling = min(r["bare"].values())
    print(
        f"  slowest tile {worst / target:.2f} of target ({worst / max(ceiling, 1e-9):.2f} of the bare-page ceiling); "
        f"playhead {r['playhead_fps']:.1f} frames/s ({r['playhead_fps'] / target:.2f}); "
        f"tile drift max {r['drift_max']} frames, mean {r['drift_mean']:.2f}"
    )
    print(
        f"  page rendering {r['raf_fps']:.1f} animation frames/s; drawing costs {r['box_ms']:.3f} ms per "
        f"tile frame (boxes), {r['map_ms']:.3f} ms per map frame"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="960x540")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--speeds", default="1,2")
    ap.add_argument("--window", type=float, default=6.0, help="seconds measured per speed")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    base = Settings()
    work = Path(tempfile.mkdtemp(prefix="spoton-viewer-bench-"))
    # one sub-video: the measured window never straddles a chunk switch
    spec = SceneSpec(
        env=ENV, cameras=4, people=args.people, seconds=args.seconds, sub_videos=1, size=parse_size(args.size), seed=7
    )
    t0 = time.perf_counter()
    scene = generate_scene(work / "scene", spec)
    print(
        f"scene: 4 cameras x {scene.total_frames} frames at {args.size}, {spec.fps} fps "
        f"(rendered in {time.perf_counter() - t0:.0f} s)"
    )
    database = scratch_database(base.database_url.rsplit("/", 1)[0])
    settings = Settings(
        _env_file=None,
        database_url=database,
        redis_url=base.redis_url,
        runs_url=str(work / "runs"),
        cache_dir=work / "cache",
    )
    task_id: uuid.UUID | None = None
    try:
        t0 = time.perf_counter()
        task_id = run_pipeline(scene.out, settings, float(spec.fps))
        print(f"pipeline: task {task_id} published in {time.perf_counter() - t0:.0f} s")
        server, port = serve(settings)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/viewer?task={task_id}")
            page.wait_for_function("window.spotonViewer && spotonViewer.ready()", timeout=30_000)
            page.wait_for_function("spotonViewer.connection() === 'done'", timeout=60_000)
            frames = page.evaluate("spotonViewer.bufferedFrames()")
            print(
                f"page: {frames} frames of results buffered; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)\n"
            )
            media = page.evaluate("spotonViewer.viewer.media")
            for speed in (float(s) for s in args.speeds.split(",")):
                window = min(args.window, (scene.total_frames - 1) / (spec.fps * speed) - 1.2)
                result = measure(page, speed, spec.fps, window)
                page.evaluate("spotonViewer.pause()")
                result["bare"] = measure_bare(browser, f"http://127.0.0.1:{port}", media, speed, window)
                report(result)
            browser.close()
        server.should_exit = True
    finally:
        drop_database(database)
        if task_id is not None:
            redis.Redis.from_url(settings.redis_url).delete(streams.stream_key(task_id), streams.status_key(task_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
