"""REST API against real Postgres and Redis: tasks, environments, results, analytics,
security and errors. Prefect is unreachable here (503 paths); tests that start real
flow runs live in test_api_flow.py."""

import io
import math
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from api_fixtures import Person, unreachable_prefect, write_chunk
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from api.models import SQLModel
from api.orchestration import RunState
from api.publisher import publish_chunk
from api.routes.environments import environment_public
from api.routes.tasks import task_status
from spoton.config import Environment, Settings, load_environment
from spoton.geometry import CameraGeometry, GroundPlane, overlap_matrix
from spoton.store import RunStore
from spoton.types import StatusUpdatePayload

CAMERAS = ["c1", "c2"]
PEOPLE = [
    Person(1, (1.0, 1.0), (0.1, 0.0), ("c1", "c2")),
    Person(2, (5.0, 5.0), (0.0, 0.1), ("c2",)),
]
FACTORY_FPS = 23.0  # environments/factory.json


@pytest.fixture
def published(api_settings: Settings, new_task_id) -> dict:
    """Two chunks (frames 0-9, 10-19) of two cameras; people seen on even frames only."""
    task_id = new_task_id()
    store = RunStore(api_settings.runs_url, str(task_id))
    expected: dict[str, list] = {"c1": [], "c2": [], "map": []}
    for k, frames in enumerate((range(0, 10), range(10, 20))):
        chunk = f"sub_video_{k + 1:02d}"
        written = write_chunk(store, chunk=chunk, chunk_index=k, frames=frames, cameras=CAMERAS,
                              people=PEOPLE, every=2)
        for name, df in written.items():
            expected[name].append(df)
        publish_chunk(task_id=task_id, environment_id="factory", store=store, chunk=chunk, cameras=CAMERAS,
                      settings=api_settings, frames=frames, fps=FACTORY_FPS)
    return {"task_id": task_id, "store": store, "expected": expected}


def url(task_id: uuid.UUID, rest: str) -> str:
    return f"/api/v1/processing-tasks/{task_id}/{rest}"


# ------------------------------------------------------------------- schema


def test_migrations_match_models(api_engine: sqlalchemy.Engine) -> None:
    with api_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


# ----------------------------------------------------------------- results


def test_frames_are_wire_payloads_of_the_stored_rows(api_client: TestClient, published: dict) -> None:
    task_id = published["task_id"]
    tracks = {c: pd.concat(published["expected"][c]) for c in CAMERAS}
    resp = api_client.get(url(task_id, "frames"), params={"start": 6, "end": 7})
    assert resp.status_code == 200
    page = resp.json()
    assert [p["frame_index"] for p in page["items"]] == [6, 7]
    assert page["next_cursor"] is None
    six = page["items"][0]
    assert six["scene_id"] == "factory" and six["schema_version"] == 1
    assert set(six["cameras"]) == set(CAMERAS)
    for cam in CAMERAS:
        rows = tracks[cam][tracks[cam]["frame_idx"] == 6].sort_values("track_id")
        got = six["cameras"][cam]["tracks"]
        assert six["cameras"][cam]["image_source"] == "000006.jpg"
        assert [t["track_id"] for t in got] == rows["track_id"].tolist()
        assert [t["global_id"] for t in got] == [str(g) for g in rows["global_id"]]
        for t, (_, r) in zip(got, rows.iterrows(), strict=True):
            assert t["bbox_xyxy"] == pytest.approx([r.x1, r.y1, r.x2, r.y2], rel=1e-6)
            assert t["confidence"] == pytest.approx(r.confidence, rel=1e-6)
            assert t["class_id"] == 1
            if math.isnan(r.map_x):
                assert t["map_coords"] is None
            else:
                assert t["map_coords"] == pytest.approx([r.map_x, r.map_y], rel=1e-6)
    # nobody is seen on odd frames, yet every camera is there with an empty list
    assert all(c["tracks"] == [] for c in page["items"][1]["cameras"].values())


def test_frames_paging_by_range_camera_and_cursor(api_client: TestClient, published: dict) -> None:
    task_id = published["task_id"]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"start": 4, "end": 13, "camera_id": "c2", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = api_client.get(url(task_id, "frames"), params=params).json()
        pages += 1
        for item in body["items"]:
            assert list(item["cameras"]) == ["c2"]
            seen.append(item["frame_index"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(4, 14)) and pages == 4
    assert api_client.get(url(task_id, "frames"), params={"start": 30}).json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("params", [{"start": -1}, {"limit": 0}, {"limit": 1001}, {"cursor": "abc"},
                                    {"cursor": "3000000000"}, {"start": 5, "end": 4}])
def test_frames_rejects_bad_queries(api_client: TestClient, published: dict, params: dict) -> None:
    assert api_client.get(url(published["task_id"], "frames"), params=params).status_code == 422


def test_identities_and_trajectories(api_client: TestClient, published: dict) -> None:
    task_id = published["task_id"]
    body = api_client.get(url(task_id, "identities")).json()
    assert body["count"] == 2
    assert body["data"] == [
        {"global_id": "1", "first_frame": 0, "last_frame": 18, "cameras": ["c1", "c2"], "n_detections": 20},
        {"global_id": "2", "first_frame": 0, "last_frame": 18, "cameras": ["c2"], "n_detections": 10},
    ]
    one = api_client.get(url(task_id, "identities/1")).json()
    assert [p["frame_idx"] for p in one["trajectory"]] == list(range(0, 20, 2))
    assert one["trajectory"][3]["map_x"] == pytest.approx(1.0 + 0.1 * 6, rel=1e-6)
    assert one["trajectory"][3]["map_y"] == pytest.approx(1.0)
    assert one["trajectory"][3]["n_cameras"] == 2
    assert one["appearances"] == [
        {"camera_id": "c1", "first_frame": 0, "last_frame": 18, "n_detections": 10, "track_ids": [10, 100010]},
        {"camera_id": "c2", "first_frame": 0, "last_frame": 18, "n_detections": 10, "track_ids": [11, 100011]},
    ]
    assert api_client.get(url(task_id, "identities/99")).status_code == 404
    paged = api_client.get(url(task_id, "identities"), params={"offset": 1, "limit": 1}).json()
    assert [i["global_id"] for i in paged["data"]] == ["2"] and paged["count"] == 2


def test_heatmap_counts_identity_frames_per_cell(api_client: TestClient, published: dict) -> None:
    body = api_client.get(url(published["task_id"], "analytics/heatmap"), params={"cell_m": 5}).json()
    # factory floor is 20 m x 15 m: 4 x 3 cells of 5 m. Person 1 walks x 1.0 -> 2.8 at y 1,
    # person 2 y 5.0 -> 6.8 at x 5; each is placed on 10 frames
    assert body["counts"] == [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 0, 0]]
    assert (body["max"], body["total"], body["width_m"], body["height_m"]) == (10, 20, 20.0, 15.0)
    fine = api_client.get(url(published["task_id"], "analytics/heatmap")).json()  # 0.5 m default
    grid = np.asarray(fine["counts"])
    assert grid.shape == (30, 40) and grid.sum() == 20
    # y = 1 m -> row 2; x 1.0 1.2 1.4 | 1.6 1.8 | 2.0 2.2 2.4 | 2.6 2.8 -> columns 2, 3, 4, 5
    assert grid[2, 2:6].tolist() == [3, 2, 3, 2]
    assert api_client.get(url(published["task_id"], "analytics/heatmap"),
                          params={"cell_m": 0.001}).status_code == 422


def test_heatmap_png(api_client: TestClient, published: dict) -> None:
    resp = api_client.get(url(published["task_id"], "analytics/heatmap.png"),
                          params={"cell_m": 5, "px_per_cell": 10})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(resp.content))
    assert image.size == (40, 30)
    pixels = np.asarray(image.convert("RGB"))
    assert (pixels[5, 5] != pixels[25, 35]).any()  # busiest cell vs an empty one


def test_people_count_per_frame_and_second(api_client: TestClient, published: dict) -> None:
    per_frame = api_client.get(url(published["task_id"], "analytics/people-count"),
                               params={"bucket": "frame", "start": 2, "end": 5}).json()
    assert per_frame["fps"] == FACTORY_FPS
    assert [(b["start_frame"], b["max"], b["unique"]) for b in per_frame["bins"]] == [
        (2, 2, 2), (3, 0, 0), (4, 2, 2), (5, 0, 0)
    ]
    assert per_frame["bins"][1]["time_s"] == pytest.approx(3 / FACTORY_FPS)
    per_second = api_client.get(url(published["task_id"], "analytics/people-count")).json()
    assert per_second["bins"] == [
        {"start_frame": 0, "end_frame": 19, "time_s": 0.0, "mean": 1.0, "max": 2, "unique": 2}
    ]


def test_dwell_times(api_client: TestClient, published: dict) -> None:
    body = api_client.get(url(published["task_id"], "analytics/dwell")).json()
    assert body["data"] == [
        {"global_id": g, "first_frame": 0, "last_frame": 18, "dwell_s": pytest.approx(19 / FACTORY_FPS),
         "visible_s": pytest.approx(10 / FACTORY_FPS)}
        for g in ("1", "2")
    ]


@pytest.mark.parametrize("rest", ["frames", "identities", "identities/1", "analytics/heatmap",
                                  "analytics/heatmap.png", "analytics/people-count", "analytics/dwell",
                                  "status"])
def test_unknown_task_is_404(api_client: TestClient, rest: str) -> None:
    resp = api_client.get(url(uuid.uuid4(), rest))
    assert resp.status_code == 404 and "not found" in resp.json()["detail"]
    assert api_client.get(f"/api/v1/processing-tasks/not-a-uuid/{rest}").status_code == 422


# -------------------------------------------------------------------- tasks


def count_tasks(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT count(*) FROM task")).scalar_one()


def test_start_with_prefect_unreachable_is_503_and_creates_nothing(
    api_client: TestClient, api_engine: sqlalchemy.Engine
) -> None:
    before = count_tasks(api_engine)
    resp = api_client.post("/api/v1/processing-tasks/start", json={"environment_id": "factory"})
    assert resp.status_code == 503
    assert "Prefect server" in resp.json()["detail"] and "unavailable" in resp.json()["detail"]
    assert count_tasks(api_engine) == before


def test_start_unknown_environment_is_404(api_client: TestClient) -> None:
    resp = api_client.post("/api/v1/processing-tasks/start", json={"environment_id": "atlantis"})
    assert resp.status_code == 404
    assert "unknown environment 'atlantis'" in resp.json()["detail"]


@pytest.mark.parametrize("body", [
    {},
    {"environment_id": "factory", "surprise": 1},
    {"environment_id": "../factory"},
    {"environment_id": "factory", "max_frames": 0},
    {"environment_id": "factory", "run_config": {"detector": "bgsub", "colour": "red"}},
    {"environment_id": "factory", "chunks": "sub_video_01"},
    {"environment_id": "factory", "videos": "relative/path"},
])
def test_start_rejects_invalid_bodies(api_client: TestClient, body: dict) -> None:
    assert api_client.post("/api/v1/processing-tasks/start", json=body).status_code == 422


def test_task_list_status_and_cancel(api_client: TestClient, published: dict) -> None:
    listed = api_client.get("/api/v1/processing-tasks", params={"limit": 500}).json()
    mine = [t for t in listed["data"] if t["task_id"] == str(published["task_id"])]
    assert len(mine) == 1 and mine[0]["environment_id"] == "factory" and mine[0]["fps"] == FACTORY_FPS
    assert listed["count"] >= 1
    assert api_client.get("/api/v1/processing-tasks", params={"limit": 0}).status_code == 422
    # Prefect is unreachable in this app: the answer says so instead of guessing
    for resp in (api_client.get(url(published["task_id"], "status")),
                 api_client.post(url(published["task_id"], "cancel"))):
        assert resp.status_code == 503 and "unavailable" in resp.json()["detail"]
    assert api_client.post(url(uuid.uuid4(), "cancel")).status_code == 404


def test_status_follows_prefect_state_and_published_progress() -> None:
    task = type("T", (), {"task_id": uuid.uuid4()})()
    step = StatusUpdatePayload(status="PROCESSING", progress=40.0, current_step="published sub_video_02")
    running = task_status(task, RunState("PROCESSING", "Running", None), step)
    assert (running.status, running.progress, running.current_step) == ("PROCESSING", 40.0, "published sub_video_02")
    done = task_status(task, RunState("COMPLETED", "Completed", None), step)
    assert (done.status, done.progress) == ("COMPLETED", 100.0)
    failed = task_status(task, RunState("FAILED", "Crashed", "worker process exited with code -9"), step)
    assert (failed.status, failed.details) == ("FAILED", "worker process exited with code -9")
    queued = task_status(task, RunState("QUEUED", "Scheduled", None), None)
    assert (queued.status, queued.progress, queued.current_step) == ("QUEUED", 0.0, "Scheduled")


# ------------------------------------------------------------- environments


def test_environments(api_client: TestClient) -> None:
    listed = {e["environment_id"]: e for e in api_client.get("/api/v1/environments").json()}
    assert {"factory", "campus", "multiviewx"} <= set(listed)
    assert listed["factory"]["cameras"] == ["c09", "c12", "c13", "c16"]

    factory = api_client.get("/api/v1/environments/factory").json()
    assert (factory["map_width_m"], factory["map_height_m"], factory["fps"]) == (20.0, 15.0, 23.0)
    assert factory["overlap"] is None  # no image sizes in the seed calibration
    assert all(c["reprojection_error_m"] > 0 and not c["has_full_calibration"] for c in factory["calibration"])
    # a failed fit (NaN error) is null on the wire, not invalid JSON
    broken = Environment("x", ("c1",), GroundPlane(10, 5), {"c1": CameraGeometry("c1", np.eye(3), None,
                         reprojection_error_m=float("nan"))}, "/nowhere", "video_x")
    assert environment_public(broken).calibration[0].reprojection_error_m is None

    mvx = api_client.get("/api/v1/environments/multiviewx").json()
    env = load_environment("multiviewx")
    expected = overlap_matrix([env.calibration[c] for c in env.cameras], env.plane)
    assert np.allclose(mvx["overlap"], expected, atol=1e-3) and np.asarray(mvx["overlap"]).shape == (4, 4)
    assert all(c["has_full_calibration"] and c["image_size"] == [1920, 1080] for c in mvx["calibration"])

    assert api_client.get("/api/v1/environments/atlantis").status_code == 404
    assert api_client.get("/api/v1/environments/..hidden").status_code == 422


# ----------------------------------------------------------------- security


@pytest.fixture
def keyed_client(api_settings: Settings) -> TestClient:
    settings = api_settings.model_copy(update={"api_keys": ["key-one", "key-two"], "max_body_bytes": 1024,
                                               "cors_origins": ["https://ui.example"]})
    with TestClient(create_app(settings, orchestrator=unreachable_prefect())) as client:
        yield client


def test_api_keys(keyed_client: TestClient) -> None:
    missing = keyed_client.get("/api/v1/environments")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert keyed_client.get("/api/v1/environments", headers={"X-API-Key": "nope"}).status_code == 403
    assert keyed_client.get("/api/v1/environments", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert keyed_client.get("/api/v1/environments", headers={"Authorization": "Bearer key-one"}).status_code == 200
    assert keyed_client.get("/api/v1/environments", headers={"X-API-Key": "key-two"}).status_code == 200
    assert keyed_client.post("/api/v1/processing-tasks/start", json={}).status_code == 401
    assert keyed_client.get("/health/live").status_code == 200  # probes stay open
    schemes = keyed_client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_body_size_limit(keyed_client: TestClient) -> None:
    headers = {"X-API-Key": "key-one", "Content-Type": "application/json"}
    big = b'{"environment_id": "factory", "chunks": ["' + b"x" * 2000 + b'"]}'
    declared = keyed_client.post("/api/v1/processing-tasks/start", content=big, headers=headers)
    assert declared.status_code == 413 and "1024 bytes" in declared.json()["detail"]

    def chunked():  # no Content-Length: counted while it streams
        yield big[:600]
        yield big[600:]

    streamed = keyed_client.post("/api/v1/processing-tasks/start", content=chunked(), headers=headers)
    assert streamed.status_code == 413


def test_cors(keyed_client: TestClient) -> None:
    resp = keyed_client.options("/api/v1/environments", headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://ui.example"
    other = keyed_client.options("/api/v1/environments", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_unexpected_errors_are_500_without_details(postgres_server: str, api_settings: Settings) -> None:
    """A real failure (a table gone from under the app) answers a bare 500, no traceback."""
    name = f"spoton_broken_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        settings = api_settings.model_copy(update={"database_url": f"{postgres_server}/{name}"})
        with TestClient(create_app(settings, orchestrator=unreachable_prefect()),
                        raise_server_exceptions=False) as client:
            engine = sqlalchemy.create_engine(settings.database_url)
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("DROP TABLE task CASCADE"))
            engine.dispose()
            resp = client.get("/api/v1/processing-tasks")
        assert resp.status_code == 500
        assert resp.json() == {"detail": "internal server error"}
        assert "Traceback" not in resp.text and "task" not in resp.text
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------- health


def test_health(api_client: TestClient, api_settings: Settings, private_redis) -> None:
    assert api_client.get("/health/live").json() == {"status": "ok", "checks": {}}
    ready = api_client.get("/health/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["postgres"] == "ok" and checks["redis"] == "ok"
    assert "Prefect server" in checks["prefect"]

    settings = api_settings.model_copy(update={"redis_url": private_redis.url})
    with TestClient(create_app(settings, orchestrator=unreachable_prefect())) as client:
        private_redis.stop()
        checks = client.get("/health/ready").json()["checks"]
    assert checks["postgres"] == "ok" and checks["redis"].startswith("ConnectionError")
