"""The browser viewer: range-served videos (httpx against the ASGI app) and the page
itself in headless Chromium against the real API under uvicorn.

The results the page shows come from the real pipeline: a small synthetic scene is
rendered and run through the ``process_environment`` flow (publish=True) into this
session's Postgres and Redis. Screenshots go to ``test-artifacts/``.
"""

import base64
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
import sqlalchemy
import uvicorn
from api_fixtures import NO_PREFECT, Person, free_port, write_chunk
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from api import crud, streams
from api.main import create_app
from api.publisher import publish_chunk, publish_status
from api.viewer import routes as viewer_routes
from api.viewer.ranges import ByteRange, RangeNotSatisfiable, parse_range
from spoton.config import Settings, get_settings
from spoton.store import RunStore
from spoton.synth import SceneInfo, SceneSpec, generate_scene

ENV = "viewerscene"
SPEC = SceneSpec(env=ENV, cameras=3, people=3, seconds=3.0, sub_videos=2, size=(480, 270), seed=1)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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


def with_viewer(app: FastAPI) -> FastAPI:
    """The app with the viewer's routes (a no-op once api.main includes them itself)."""
    if not any(getattr(r, "path", None) == "/viewer" for r in app.routes):
        app.include_router(viewer_routes.router)
    return app


def flow_parameters(scene: Path, **extra: object) -> dict:
    """What POST /processing-tasks/start records for a task on these videos."""
    return {"environment_id": ENV, "publish": True, "videos": str(scene), **extra}


# ------------------------------------------------------------------ scene + task


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SceneInfo:
    return generate_scene(tmp_path_factory.mktemp("viewer") / "scene", SPEC)


@pytest.fixture(scope="module")
def settings(api_database: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("viewer-runs")
    return Settings(
        _env_file=None,
        database_url=api_database,
        redis_url=f"{redis_server}/0",
        runs_url=str(root / "runs"),
        cache_dir=root / "cache",
        api_keys=[],
    )


@pytest.fixture(scope="module")
def task_ids(settings: Settings) -> Iterator[list[uuid.UUID]]:
    """Task ids this module streams to; their Redis keys are deleted afterwards."""
    made: list[uuid.UUID] = []
    yield made
    client = redis.Redis.from_url(settings.redis_url)
    with contextlib.suppress(redis.ConnectionError):
        for task_id in made:
            client.delete(streams.stream_key(task_id), streams.status_key(task_id))
    client.close()


def record_task(database_url: str, task_id: uuid.UUID, parameters: dict) -> None:
    """The task row POST /processing-tasks/start writes."""
    engine = sqlalchemy.create_engine(database_url)
    with Session(engine) as session:
        crud.create_task(session, task_id=task_id, environment_id=ENV, parameters=parameters, fps=float(SPEC.fps))
    engine.dispose()


@pytest.fixture(scope="module")
def completed(prefect_harness: str, scene: SceneInfo, settings: Settings, task_ids: list[uuid.UUID]) -> dict:
    """The scene through the real flow (Prefect's test harness), published to this session's
    Postgres and Redis, then recorded with the parameters the API's start endpoint stores."""
    keys = {
        "SPOTON_DATABASE_URL": settings.database_url,
        "SPOTON_REDIS_URL": settings.redis_url,
        "SPOTON_RUNS_URL": settings.runs_url,
        "SPOTON_CACHE_DIR": str(settings.cache_dir),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in keys.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            from flows.process import process_environment

            summary = process_environment(environment_id=ENV, videos=str(scene.out), publish=True)
        finally:
            get_settings.cache_clear()
    task_id = uuid.UUID(summary["run_id"])
    task_ids.append(task_id)
    record_task(settings.database_url, task_id, flow_parameters(scene.out))
    engine = sqlalchemy.create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT frame_idx, camera_id, track_id, global_id, x1, y1, x2, y2, map_x, map_y "
                "FROM track WHERE run_id = :r ORDER BY frame_idx, camera_id, track_id"
            ),
            {"r": task_id},
        ).all()
        fused = conn.execute(
            sqlalchemy.text("SELECT frame_idx, global_id, map_x, map_y FROM identity_position WHERE run_id = :r"),
            {"r": task_id},
        ).all()
    engine.dispose()
    assert rows, "the pipeline tracked nobody in the synthetic scene"
    return {"task_id": task_id, "run_id": summary["run_id"], "rows": rows, "fused": fused}


@pytest.fixture(scope="module")
def videos_task(scene: SceneInfo, settings: Settings) -> uuid.UUID:
    """A task row on the scene's videos (no results needed to serve its media)."""
    task_id = uuid.uuid4()
    record_task(settings.database_url, task_id, flow_parameters(scene.out))
    return task_id


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(with_viewer(create_app(settings, orchestrator=NO_PREFECT))) as c:
        yield c


# ------------------------------------------------------------------ range parsing


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-50", ByteRange(950, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),
        ("bytes = 5-9", ByteRange(5, 9)),
        ("items=0-5", None),  # another unit: ignored
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=9-5",
        "bytes=-0",
        "bytes=abc",
        "bytes=1-x",
        "bytes=--5",
        "bytes=5",
        "bytes=+1-2",
        "bytes=٣-5",
    ],
)
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_parse_range_of_empty_file() -> None:
    assert parse_range(None, 0) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-1", 0)


# ------------------------------------------------------------------ media + videos


def video_url(task_id: object, camera: str = "c01", chunk: int | str = 0) -> str:
    return f"/viewer/api/tasks/{task_id}/video/{camera}/{chunk}"


def test_media_lists_chunks_on_the_pipeline_timeline(client: TestClient, videos_task, scene: SceneInfo) -> None:
    r = client.get(f"/viewer/api/tasks/{videos_task}/media")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["environment_id"] == ENV
    assert body["fps"] == SPEC.fps
    assert body["total_frames"] == scene.total_frames
    assert body["plane"] == {"width_m": SPEC.plane[0], "height_m": SPEC.plane[1]}
    assert [c["camera_id"] for c in body["cameras"]] == list(scene.cameras)
    for cam in body["cameras"]:
        assert [c["frames"] for c in cam["chunks"]] == list(scene.frames_per_sub_video)
        assert [c["frame_offset"] for c in cam["chunks"]] == [0, scene.frames_per_sub_video[0]]
        assert all(c["kind"] == "video" and c["width"] == 480 and c["height"] == 270 for c in cam["chunks"])
        assert cam["chunks"][1]["url"] == video_url(videos_task, cam["camera_id"], 1)
        assert cam["position_m"] is not None  # the synthetic scene ships full calibration


def test_media_follows_the_tasks_max_frames_and_chunks(
    client: TestClient, scene: SceneInfo, settings: Settings
) -> None:
    task_id = uuid.uuid4()
    record_task(
        settings.database_url,
        task_id,
        flow_parameters(scene.out, max_frames=20, chunks=["sub_video_02"]),
    )
    cam = client.get(f"/viewer/api/tasks/{task_id}/media").json()["cameras"][0]
    assert [(c["frames"], c["frame_offset"], c["selected"]) for c in cam["chunks"]] == [
        (20, 0, False),
        (20, 20, True),
    ]


def test_video_whole_file(client: TestClient, videos_task, scene: SceneInfo) -> None:
    data = scene.videos["c01"][0].read_bytes()
    r = client.get(video_url(videos_task))
    assert r.status_code == 200
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == len(data)
    assert r.content == data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-64", -64, None),
        ("bytes=10-99999999", 10, None),
    ],
)
def test_video_byte_ranges(client: TestClient, videos_task, scene: SceneInfo, header, start, end) -> None:
    data = scene.videos["c01"][1].read_bytes()
    size = len(data)
    first = start % size
    last = size - 1 if end is None else end
    r = client.get(video_url(videos_task, chunk=1), headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert int(r.headers["content-length"]) == last - first + 1
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == data[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=50-10", "bytes=x-y", "bytes=-0"])
def test_video_unsatisfiable_range_is_416(client: TestClient, videos_task, scene: SceneInfo, header) -> None:
    size = scene.videos["c01"][0].stat().st_size
    r = client.get(video_url(videos_task), headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.content == b""


def test_video_if_range_and_head(client: TestClient, videos_task, scene: SceneInfo) -> None:
    size = scene.videos["c01"][0].stat().st_size
    head = client.head(video_url(videos_task), headers={"Range": "bytes=0-9"})
    assert head.status_code == 206
    assert head.headers["content-length"] == "10"
    assert head.content == b""
    etag = head.headers["etag"]
    same = client.get(video_url(videos_task), headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206
    stale = client.get(video_url(videos_task), headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200
    assert int(stale.headers["content-length"]) == size


@pytest.mark.parametrize(
    ("camera", "chunk"),
    [
        ("c09", "0"),  # not a camera of the environment
        ("c01", "2"),  # no such chunk
        ("c01", "-1"),
        ("..", "0"),
        ("%2E%2E", "0"),
        ("..%2F..%2Fetc", "passwd"),
        ("c01%2F..%2F..", "0"),
        ("c01", "0%2F..%2F..%2Fscene.json"),
        ("%2Fetc%2Fpasswd", "0"),
    ],
)
def test_video_paths_cannot_escape(client: TestClient, videos_task, camera: str, chunk: str) -> None:
    """Videos are (task, camera, chunk index): nothing a client sends is ever a path."""
    r = client.get(f"/viewer/api/tasks/{videos_task}/video/{camera}/{chunk}")
    assert r.status_code in (404, 422), r.text
    assert r.headers["content-type"] == "application/json"


def test_static_files_come_from_a_fixed_list(client: TestClient) -> None:
    page = client.get("/viewer")
    assert page.status_code == 200 and "viewer.js" in page.text
    for name, kind in (
        ("viewer.js", "javascript"),
        ("viewer.css", "text/css"),
        ("index.html", "text/html"),
    ):
        r = client.get(f"/viewer/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    for bad in ("routes.py", "..%2Froutes.py", "..%2F..%2Fmain.py", "%2E%2E", "missing.js"):
        assert client.get(f"/viewer/static/{bad}").status_code == 404


def test_positions_are_the_stored_fused_rows(client: TestClient, settings: Settings, scene, task_ids) -> None:
    task_id = uuid.uuid4()
    task_ids.append(task_id)
    record_task(settings.database_url, task_id, flow_parameters(scene.out))
    store = RunStore(settings.runs_url, str(task_id))
    people = [Person(1, (1.0, 2.0), (0.1, 0.0), ("c01", "c02")), Person(2, (5.0, 5.0), (0.0, 0.1), ("c02",))]
    written = write_chunk(
        store, chunk="sub_video_01", chunk_index=0, frames=range(0, 10), cameras=["c01", "c02"], people=people, every=2
    )
    publish_chunk(
        task_id=task_id,
        environment_id=ENV,
        store=store,
        chunk="sub_video_01",
        cameras=["c01", "c02"],
        settings=settings,
        frames=range(0, 10),
        fps=float(SPEC.fps),
    )
    body = client.get(f"/viewer/api/tasks/{task_id}/positions", params={"start": 2, "end": 5}).json()
    expected: dict[str, list] = {}
    for r in written["map"].itertuples():
        if 2 <= r.frame_idx <= 5:
            expected.setdefault(str(r.frame_idx), []).append([str(r.global_id), r.map_x, r.map_y])
    assert body["start"] == 2 and body["end"] == 5
    assert body["frames"].keys() == expected.keys()
    for f, rows in expected.items():
        got = body["frames"][f]
        assert [g[0] for g in got] == [w[0] for w in rows]
        assert np.allclose([g[1:] for g in got], [w[1:] for w in rows], atol=1e-5)
    for bad in ({"start": 5, "end": 2}, {"start": 0, "end": 5000}, {"start": -1, "end": 2}, {"start": 0}):
        assert client.get(f"/viewer/api/tasks/{task_id}/positions", params=bad).status_code == 422


def test_unknown_task_is_404(client: TestClient) -> None:
    assert client.get(f"/viewer/api/tasks/{uuid.uuid4()}/media").status_code == 404
    assert client.get(video_url(uuid.uuid4())).status_code == 404
    assert client.get("/viewer/api/tasks/not-a-uuid/media").status_code == 422


def test_api_keys_as_header_or_token(settings: Settings, videos_task) -> None:
    keyed = settings.model_copy(update={"api_keys": ["k1"]})
    with TestClient(with_viewer(create_app(keyed, orchestrator=NO_PREFECT))) as c:
        assert c.get("/viewer").status_code == 200  # the page itself holds no data
        assert c.get(video_url(videos_task)).status_code == 401
        assert c.get(video_url(videos_task), params={"token": "nope"}).status_code == 403
        ok = c.get(video_url(videos_task), params={"token": "k1"}, headers={"Range": "bytes=0-0"})
        assert ok.status_code == 206
        assert c.get(f"/viewer/api/tasks/{videos_task}/media", headers={"X-API-Key": "k1"}).status_code == 200
        bearer = {"Authorization": "Bearer k1"}
        assert c.get(f"/viewer/api/tasks/{videos_task}/media", headers=bearer).status_code == 200


# ------------------------------------------------------------------ browser


@dataclass
class Server:
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_server(settings: Settings, port: int) -> Server:
    app = with_viewer(create_app(settings, orchestrator=NO_PREFECT))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return Server(port, server, thread)


@pytest.fixture(scope="module")
def live(settings: Settings) -> Iterator[Server]:
    server = start_server(settings, free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.errors = errors
    yield p
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"viewer_{name}.png"))


def open_task(page, server: Server, task_id: object) -> None:
    page.goto(f"{server.url}/viewer?task={task_id}")
    page.wait_for_function("window.spotonViewer && window.spotonViewer.ready()", timeout=30_000)


def rows_by_camera(rows, frame: int) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows:
        if r.frame_idx == frame:
            out.setdefault(r.camera_id, []).append(r)
    return out


def best_frame(rows) -> tuple[int, int]:
    """(frame, global id) where one identity is seen by the most cameras (then most boxes)."""
    cams: dict[tuple[int, int], set] = {}
    boxes: dict[int, int] = {}
    for r in rows:
        boxes[r.frame_idx] = boxes.get(r.frame_idx, 0) + 1
        if r.global_id is not None:
            cams.setdefault((r.frame_idx, r.global_id), set()).add(r.camera_id)
    (frame, gid), _ = max(cams.items(), key=lambda kv: (len(kv[1]), boxes[kv[0][0]], -kv[0][0]))
    return frame, gid


def seek_paused(page, frame: int) -> None:
    page.evaluate("spotonViewer.pause()")
    page.evaluate(f"spotonViewer.seek({frame})")
    page.wait_for_function(
        f"Object.values(spotonViewer.tileFrames()).every((f) => f === {frame}) "
        "&& Object.values(spotonViewer.boxes())"
        f".every((bs) => bs.every((b) => b.frame === {frame})) "
        f"&& spotonViewer.currentFrame() === {frame}",
        timeout=15_000,
    )


@pytest.mark.slow
def test_tiles_play_and_boxes_match_stored_rows(page, live: Server, completed: dict, scene: SceneInfo) -> None:
    open_task(page, live, completed["task_id"])
    assert page.locator(".tile").count() == len(scene.cameras)
    start = page.evaluate("spotonViewer.videoTimes()")
    page.wait_for_function(
        f"Object.entries(spotonViewer.videoTimes()).every(([c, t]) => t > {start}[c] + 0.4)",
        timeout=20_000,
    )
    page.wait_for_function("spotonViewer.connection() === 'done'", timeout=20_000)
    assert page.evaluate("spotonViewer.coverage()") == [[0, scene.total_frames - 1]]
    assert page.evaluate("spotonViewer.renderedFrames()") > 10

    frame, _ = best_frame(completed["rows"])
    seek_paused(page, frame)
    stored = rows_by_camera(completed["rows"], frame)
    drawn = page.evaluate("spotonViewer.boxes()")
    assert set(drawn) == set(scene.cameras)
    for cam in scene.cameras:
        want = sorted((r.track_id, str(r.global_id), r.x1, r.y1, r.x2, r.y2) for r in stored.get(cam, []))
        got = sorted((b["track_id"], b["global_id"], *b["src"]) for b in drawn[cam])
        assert len(got) == len(want), f"{cam} at frame {frame}: drew {len(got)} boxes, stored {len(want)}"
        for g, w in zip(got, want, strict=True):
            assert g[:2] == w[:2]
            assert np.allclose(g[2:], w[2:], atol=1e-3)
    shot(page, "frame")


def _decoded_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.slow
def test_shown_pixels_are_the_frame_the_boxes_belong_to(page, live: Server, completed: dict, scene) -> None:
    """The frame a tile reports (and draws boxes for) is the decoded frame on screen."""
    open_task(page, live, completed["task_id"])
    decoded = {c: _decoded_frames(scene.videos[c][1]) for c in scene.cameras[:2]}
    offset = scene.frames_per_sub_video[0]
    for local in (3, 17, len(decoded[scene.cameras[0]]) - 2):
        seek_paused(page, offset + local)
        for cam, frames in decoded.items():
            url = page.evaluate(f"spotonViewer.frameImage('{cam}')")
            png = base64.b64decode(url.split(",", 1)[1])
            shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            diffs = [float(np.abs(shown.astype(np.int16) - f.astype(np.int16)).mean()) for f in frames]
            assert int(np.argmin(diffs)) == local, f"{cam}: showing decoded frame {np.argmin(diffs)}, not {local}"


@pytest.mark.slow
def test_selecting_a_person_highlights_them_everywhere(page, live: Server, completed: dict) -> None:
    frame, gid = best_frame(completed["rows"])
    cams = {r.camera_id for r in completed["rows"] if r.frame_idx == frame and r.global_id == gid}
    assert len(cams) >= 2, (
        f"the pipeline never put one global id in two cameras at once (best: {gid} in {cams} at frame {frame})"
    )
    open_task(page, live, completed["task_id"])
    page.wait_for_selector(f'#identity-list li[data-global-id="{gid}"]', timeout=15_000)
    seek_paused(page, frame)
    page.click(f'#identity-list li[data-global-id="{gid}"]')
    page.wait_for_function("spotonViewer.trajectory() !== null", timeout=10_000)
    assert page.evaluate("spotonViewer.selected()") == str(gid)
    page.wait_for_function(
        f"Object.values(spotonViewer.boxes()).filter((bs) => bs.some((b) => b.highlighted)).length >= {len(cams)}",
        timeout=5_000,
    )
    drawn = page.evaluate("spotonViewer.boxes()")
    lit = {c for c, bs in drawn.items() for b in bs if b["highlighted"]}
    assert lit == cams
    assert all(b["global_id"] == str(gid) for bs in drawn.values() for b in bs if b["highlighted"])
    # the colour is a function of the id alone
    assert page.evaluate(f"spotonViewer.colourFor('{gid}')") == page.evaluate(f"spotonViewer.colourFor({gid})")
    assert page.locator("#identity-list li.selected").get_attribute("data-global-id") == str(gid)
    trajectory = page.evaluate("spotonViewer.trajectory()")
    assert trajectory["global_id"] == str(gid) and len(trajectory["points"]) >= 1
    shot(page, "selected")


@pytest.mark.slow
def test_map_dots_sit_on_stored_positions(page, live: Server, completed: dict) -> None:
    """One dot per identity: the engine's fused position where one is stored, else the mean of
    its cameras' projections; within 0.5 m of the stored rows either way."""
    fused: dict[int, dict[str, tuple]] = {}
    for r in completed["fused"]:
        fused.setdefault(r.frame_idx, {})[str(r.global_id)] = (r.map_x, r.map_y)
    by_cameras: dict[int, dict[str, list]] = {}
    for r in completed["rows"]:
        if r.global_id is not None and r.map_x is not None:
            by_cameras.setdefault(r.frame_idx, {}).setdefault(str(r.global_id), []).append((r.map_x, r.map_y))
    placed = {f: set(fused.get(f, {})) | set(by_cameras.get(f, {})) for f in set(fused) | set(by_cameras)}
    assert placed, "the pipeline put nobody on the floor map (no positions, every map_x NULL)"
    frame = max(placed, key=lambda f: (len(placed[f]), -f))
    want_fused = sorted(fused.get(frame, {}))
    open_task(page, live, completed["task_id"])
    seek_paused(page, frame)
    page.wait_for_function(
        f"spotonViewer.fusedLoaded({frame}) && spotonViewer.mapFrame() === {frame} && "
        f"{want_fused}.every((g) => spotonViewer.mapDots().some((d) => d.global_id === g && d.source === 'fused'))",
        timeout=10_000,
    )
    dots = {d["global_id"]: d for d in page.evaluate("spotonViewer.mapDots()") if d["global_id"] is not None}
    assert set(dots) == placed[frame]
    for gid, dot in dots.items():
        if gid in fused.get(frame, {}):
            x, y = fused[frame][gid]
            assert dot["source"] == "fused"
        else:
            x, y = np.mean(by_cameras[frame][gid], axis=0)
            assert dot["source"] == "cameras"
        assert np.hypot(dot["x"] - x, dot["y"] - y) < 0.5, f"identity {gid}: dot {dot}, stored ({x}, {y})"
    shot(page, "map")


@pytest.mark.slow
def test_running_task_live_tail_and_reconnect(
    page, completed: dict, scene: SceneInfo, settings: Settings, task_ids: list[uuid.UUID]
) -> None:
    """A late joiner on a running task gets the history, follows new results live, survives
    the server going away (reconnects with from_frame) and sees the task complete."""
    task_id = uuid.uuid4()
    task_ids.append(task_id)
    store = RunStore(settings.runs_url, completed["run_id"])  # the real run's artefacts
    cameras = list(SPEC.camera_ids)
    first, second = SPEC.chunk_bounds()[1], SPEC.total_frames
    record_task(settings.database_url, task_id, flow_parameters(scene.out))
    publish_status(
        task_id=task_id,
        status="PROCESSING",
        progress=10,
        current_step="tracking",
        settings=settings,
    )
    publish_chunk(
        task_id=task_id,
        environment_id=ENV,
        store=store,
        chunk="sub_video_01",
        cameras=cameras,
        settings=settings,
        frames=range(0, first),
        fps=float(SPEC.fps),
    )

    port = free_port()
    server = start_server(settings, port)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        open_task(page, server, task_id)
        page.wait_for_function(
            f"spotonViewer.coverage().length === 1 && spotonViewer.coverage()[0][1] === {first - 1}",
            timeout=15_000,
        )
        assert page.evaluate("spotonViewer.status().status") == "PROCESSING"
        # playing past the published frames waits for results instead of running on
        page.wait_for_function(f"spotonViewer.currentFrame() >= {first - 3}", timeout=15_000)
        time.sleep(1.0)
        assert page.evaluate("spotonViewer.currentFrame()") <= first
        server.stop()
        page.wait_for_function("spotonViewer.connection() === 'lost'", timeout=15_000)
        assert "reconnecting" in page.locator("#messages").inner_text()
        shot(page, "reconnecting")
        server = start_server(settings, port)
        page.wait_for_function("spotonViewer.connection() === 'open'", timeout=30_000)
        assert any(f"from_frame={first}" in u for u in sockets[1:]), sockets
        publish_chunk(
            task_id=task_id,
            environment_id=ENV,
            store=store,
            chunk="sub_video_02",
            cameras=cameras,
            settings=settings,
            frames=range(first, second),
            fps=float(SPEC.fps),
        )
        publish_status(
            task_id=task_id,
            status="COMPLETED",
            progress=100,
            current_step="done",
            settings=settings,
        )
        page.wait_for_function(f"spotonViewer.coverage()[0][1] === {second - 1}", timeout=15_000)
        page.wait_for_function("spotonViewer.status().status === 'COMPLETED'", timeout=15_000)
        page.wait_for_function(f"spotonViewer.currentFrame() > {first + 5}", timeout=15_000)
        shot(page, "live_completed")
    finally:
        server.stop()
