"""The whole stack: REST start -> Prefect server -> process worker -> flow run -> Postgres
and Redis -> WebSocket, on a small synthetic scene.

A deployment of ``process-environment`` is created on the session's Prefect server with
this session's database, Redis and run folder as its flow runs' environment, and the API
starts runs of it by name, as it would in production.
"""

import asyncio
import secrets
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy
from api_fixtures import Received, follow, forget_streams
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixtures import ROOT

from api.orchestration import Orchestrator
from api.websocket import FeedLimits
from deployments.setup import ensure_gpu_limit, ensure_work_pool
from spoton.config import Settings
from spoton.synth import SceneSpec, generate_scene

pytestmark = pytest.mark.slow

SPEC = SceneSpec(env="tinyapi", cameras=2, people=3, seconds=3, sub_videos=3, fps=10, size=(320, 180))
FRAMES = 30  # seconds x fps, over 3 sub-videos of 10 frames
FINAL = ("COMPLETED", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api-flow-scene") / SPEC.env
    generate_scene(out, SPEC)
    return out


async def create_deployment(api_url: str, settings: Settings, name: str) -> str:
    """process-environment on the worker's pool, its runs configured for this test session."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        await ensure_work_pool(settings.work_pool)
        await ensure_gpu_limit(settings.gpu_slots)
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("process-environment")
            await client.create_deployment(
                flow_id=flow_id,
                name=name,
                entrypoint="flows/process.py:process_environment",
                work_pool_name=settings.work_pool,
                path=str(ROOT),
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
                job_variables={"env": {
                    "SPOTON_DATABASE_URL": settings.database_url,
                    "SPOTON_REDIS_URL": settings.redis_url,
                    "SPOTON_RUNS_URL": settings.runs_url,
                    "SPOTON_CACHE_DIR": str(Path(settings.runs_url).parent / "cache"),
                    "SPOTON_DEVICE": "cpu",
                }},
                enforce_parameter_schema=False,
            )
    return f"process-environment/{name}"


@pytest.fixture
def stack(prefect_server: str, prefect_worker, api_settings: Settings, api_engine: sqlalchemy.Engine, live_api):
    name = f"api-test-{secrets.token_hex(4)}"
    deployment = asyncio.run(create_deployment(prefect_server, api_settings, name))
    settings = api_settings.model_copy(update={"deployment_name": deployment})
    orchestrator = Orchestrator(api_url=prefect_server, deployment_name=deployment)
    with live_api(settings=settings, orchestrator=orchestrator, feed_limits=FeedLimits(block_ms=500)) as server:
        yield server, prefect_worker
    with api_engine.connect() as conn:  # every task these tests started
        started = conn.execute(sqlalchemy.text("SELECT task_id FROM task WHERE parameters->>'publish' = 'true'"))
        forget_streams(api_settings.redis_url, list(started.scalars()))


async def run_task(server, body: dict, timeout_s: float = 600) -> tuple[dict, Received, list[str], dict]:
    """Start a task, follow its feed to the end while polling its status; the final status too."""
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        resp = await http.post("/api/v1/processing-tasks/start", json=body)
        assert resp.status_code == 202, resp.text
        started = resp.json()
        feed = asyncio.create_task(follow(server.ws + started["websocket_url"], timeout_s=timeout_s))
        seen: list[str] = []
        async with asyncio.timeout(timeout_s):
            while True:
                status = (await http.get(started["status_url"])).json()
                if not seen or seen[-1] != status["status"]:
                    seen.append(status["status"])
                if feed.done() and status["status"] in FINAL:
                    break
                await asyncio.sleep(0.2)
        return started, await feed, seen, status


def test_task_runs_end_to_end(stack, scene: Path, api_engine: sqlalchemy.Engine, api_settings: Settings) -> None:
    server, worker = stack

    async def main():
        started, feed, seen, final = await run_task(server, {"environment_id": SPEC.env, "videos": str(scene)})
        async with httpx.AsyncClient(base_url=server.http) as http:
            rest = (await http.get(f"/api/v1/processing-tasks/{started['task_id']}/frames",
                                   params={"limit": 1000})).json()
        return started, feed, seen, final, rest

    started, feed, seen, final, rest = asyncio.run(main())
    assert feed.close_code == 1000, worker.log_tail()
    assert feed.frames == list(range(FRAMES)), worker.log_tail()
    assert feed.statuses[0] == "QUEUED" and feed.statuses[-1] == "COMPLETED"
    assert set(feed.statuses) == {"QUEUED", "PROCESSING", "COMPLETED"}
    # REST saw the Prefect states in order (QUEUED while the worker picks the run up)
    assert seen == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert final["progress"] == 100.0 and final["task_id"] == started["task_id"]

    # every streamed frame is the stored one, and the store holds what the pipeline wrote
    assert [m["payload"] for m in feed.messages if m["type"] == "tracking_update"] == rest["items"]
    run_dir = Path(api_settings.runs_url) / started["task_id"]
    # every track association found to be a person (tracks without a global id are not results)
    ids = pd.read_parquet(run_dir / "identities.parquet")
    people = set(zip(ids["camera_id"], ids["track_id"], strict=True))
    written = sum(
        sum((p.parent.parent.name, int(t)) in people for t in pd.read_parquet(p)["track_id"])
        for p in run_dir.glob("*/*/tracks.parquet")
    )
    with api_engine.connect() as conn:
        stored = conn.execute(sqlalchemy.text("SELECT count(*) FROM track WHERE run_id = :r"),
                              {"r": started["task_id"]}).scalar_one()
    streamed = sum(len(c["tracks"]) for p in rest["items"] for c in p["cameras"].values())
    assert written == stored == streamed > 0


def test_failing_task_reports_failed_with_reason(stack, scene: Path) -> None:
    server, worker = stack
    body = {"environment_id": SPEC.env, "videos": str(scene), "chunks": ["sub_video_99"]}
    _, feed, seen, final = asyncio.run(run_task(server, body))
    assert final["status"] == "FAILED", worker.log_tail()
    assert "sub_video_99" in final["details"]
    assert seen[-1] == "FAILED" and "COMPLETED" not in seen
    assert feed.statuses[-1] == "FAILED" and feed.close_code == 1000
    assert feed.frames == []


@pytest.fixture(scope="module")
def long_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough (6 sub-videos of 10 s) that a cancel lands while the run is busy."""
    spec = SPEC.model_copy(update={"env": "longapi", "seconds": 60, "sub_videos": 6})
    out = tmp_path_factory.mktemp("api-flow-long") / spec.env
    generate_scene(out, spec)
    return out


def test_cancelled_task_ends_cancelled(stack, long_scene: Path) -> None:
    server, worker = stack

    async def main() -> tuple[dict, dict, Received, list[str]]:
        async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
            resp = await http.post("/api/v1/processing-tasks/start",
                                   json={"environment_id": "longapi", "videos": str(long_scene)})
            assert resp.status_code == 202, resp.text
            started = resp.json()
            feed = asyncio.create_task(follow(server.ws + started["websocket_url"], timeout_s=600))
            async with asyncio.timeout(300):
                while (await http.get(started["status_url"])).json()["status"] != "PROCESSING":
                    await asyncio.sleep(0.2)
            cancel = await http.post(f"/api/v1/processing-tasks/{started['task_id']}/cancel")
            seen = []
            async with asyncio.timeout(300):
                while not seen or seen[-1] not in FINAL:
                    seen.append((await http.get(started["status_url"])).json()["status"])
                    await asyncio.sleep(0.5)
            again = await http.post(f"/api/v1/processing-tasks/{started['task_id']}/cancel")
            assert again.status_code == 409
            return cancel.json() | {"code": cancel.status_code}, started, await feed, seen

    cancel, started, feed, seen = asyncio.run(main())
    assert cancel["code"] == 202 and cancel["status"] in ("PROCESSING", "CANCELLED"), worker.log_tail()
    assert seen[-1] == "CANCELLED", worker.log_tail()
    assert feed.close_code == 1000 and feed.statuses[-1] in FINAL
    assert feed.frames == list(range(len(feed.frames)))  # whatever was published, once and in order
    assert feed.statuses[-1] == "CANCELLED", feed.messages[-1]
