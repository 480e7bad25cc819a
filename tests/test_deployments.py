"""Deployments on a real Prefect server (PostgreSQL) with a real process worker.

``python -m deployments.setup`` (run twice: it converges) creates the work pool,
the ``gpu`` concurrency limit and, through ``prefect deploy --all``, both
deployments of prefect.yaml. A ``process-environment`` run started with
``run_deployment`` is picked up by the worker and completes with its artefacts;
``reprocess`` has its nightly runs scheduled.
"""

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixtures import ROOT, Worker, prefect_env

from spoton.config import get_settings
from spoton.synth import SceneSpec, generate_scene
from tasks.policy import GPU_LIMIT

ENV = "tiny"


def setup_deployments(api_url: str, home: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deployments.setup"],
        cwd=ROOT,
        env=prefect_env(api_url, home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_setup_deploys_and_a_worker_runs_the_flow(prefect_server: str, prefect_worker: Worker, tmp_path: Path) -> None:
    # The session's server may already have the pool and limit (other tests set them up).
    setup_deployments(prefect_server, tmp_path / "home")
    again = setup_deployments(prefect_server, tmp_path / "home")
    assert f"work pool {get_settings().work_pool}: present" in again
    assert "concurrency limit gpu: unchanged" in again

    settings = get_settings()
    scene = tmp_path / ENV
    generate_scene(scene, SceneSpec(env=ENV, cameras=2, people=2, seconds=2, sub_videos=1, fps=10, size=(320, 180)))
    runs = tmp_path / "runs"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool(settings.work_pool)
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            deployments = {
                d.name: d
                for d in client.read_deployments(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["process-environment", "reprocess"])
                    )
                )
            }
        assert pool.type == "process" and limit.limit == settings.gpu_slots
        assert set(deployments) == {"process-environment", "reprocess"}
        steps = deployments["process-environment"].pull_steps
        assert steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

        flow_run = run_deployment(
            settings.deployment_name,
            parameters={"environment_id": ENV, "videos": str(scene)},
            job_variables={"env": {"SPOTON_RUNS_URL": str(runs), "SPOTON_CACHE_DIR": str(tmp_path / "cache")}},
            timeout=420,
            poll_interval=2,
        )
        assert flow_run.state is not None and flow_run.state.is_completed(), (
            f"{flow_run.state}\n--- worker log ---\n{prefect_worker.log_tail()}"
        )
        # the worker's flow run found the limit setup created and queued its cameras on it
        log = prefect_worker.log_tail(1_000_000)
        assert "track_camera[c01/sub_video_01]" in log and "skipping acquisition" not in log
        run_dir = runs / str(flow_run.id)
        ids = pd.read_parquet(run_dir / "identities.parquet")
        assert not ids.empty
        assert (run_dir / "c01" / "sub_video_01" / "tracks.parquet").is_file()

        nightly = deployments["reprocess"]
        assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
        assert nightly.parameters == {"environment_ids": ["factory", "campus"]}
        deadline = time.monotonic() + 120
        scheduled = []
        while not scheduled and time.monotonic() < deadline:
            with get_client(sync_client=True) as client:
                scheduled = [
                    r
                    for r in client.read_flow_runs(
                        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["reprocess"]))
                    )
                    if r.state is not None
                    and r.state.is_scheduled()
                    and r.expected_start_time is not None
                    and r.expected_start_time > datetime.now(UTC)
                ]
            time.sleep(2)
    assert scheduled, "the scheduler created no future runs of the nightly reprocess deployment"
    assert all(r.expected_start_time.hour == 2 for r in scheduled)
