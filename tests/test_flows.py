"""The Prefect flows on a tiny synthetic scene, against Prefect's test harness.

Bars: a run writes the whole artefact layout and reports; transient S3 faults are
retried to the right results; a killed run, started again, takes finished
per-camera work from the cache (task states say Cached) and ends with artefacts
byte-identical to an uninterrupted run; the Dask runner gives the same bytes.
"""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import pandas as pd
import pytest
import redis
from botocore.exceptions import EndpointConnectionError
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.results import ResultRecord
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from prefect_fixtures import ROOT

from api import streams
from flows.process import process_environment, reprocess, resolve_config
from flows.runners import task_runner
from spoton.config import RunConfig, Settings, get_settings
from spoton.sources import CorruptVideoError
from spoton.synth import SceneSpec, generate_scene
from spoton.types import WsMessage
from tasks.policy import CONTENT_KEY, TRACKING_KEY, is_transient
from tasks.refs import CameraTracks, VideoRef

ENV = "tiny"
SPEC = SceneSpec(env=ENV, cameras=2, people=3, seconds=3, sub_videos=3, fps=10, size=(320, 180))
CHUNKS = ["sub_video_01", "sub_video_02", "sub_video_03"]
CAMERAS = ["c01", "c02"]
TRACK_TASKS = {f"track_camera[{c}/{k}]" for c in CAMERAS for k in CHUNKS}

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flow-scene") / ENV
    generate_scene(out, SPEC)
    return out


@contextlib.contextmanager
def spoton_env(**env: object) -> Iterator[Settings]:
    """SPOTON_* settings for one flow run (Settings is cached per process: rebuilt around it)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, str(value))
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()


def run_flow(runs: Path, videos: str, flow=process_environment, **params: object) -> dict:
    with spoton_env(SPOTON_RUNS_URL=runs, SPOTON_CACHE_DIR=runs.parent / "cache"):
        return flow(ENV, videos=videos, **params)


def artefact_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every artefact; manifest.json holds this run's id and timings, so not compared."""
    return {
        p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    }


def task_states(flow_run_id: str, expect: set[str], timeout_s: float = 30.0) -> dict[str, str]:
    """Final state names of a flow run's task runs by run name (states arrive as events)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[UUID(flow_run_id)]))
            )
        states = {r.name: r.state.name for r in runs if r.state is not None and r.state.is_final()}
        if expect <= states.keys() or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


@pytest.fixture(scope="module")
def reference(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run with an empty cache: the bytes every other run must reproduce."""
    return run_flow(tmp_path_factory.mktemp("reference") / "runs", str(scene))


# ------------------------------------------------------------------ the flow


def test_run_writes_every_artefact_and_reports(reference: dict, scene: Path) -> None:
    run_dir = Path(reference["run_url"])
    assert run_dir.name == reference["run_id"]
    per_camera = {f"{c}/{k}/{f}" for c in CAMERAS for k in CHUNKS for f in ("tracks.parquet", "embeddings.npz")}
    per_chunk = {f"{k}/{f}" for k in CHUNKS for f in ("identities.parquet", "gallery.npz", "map.parquet")}
    assert set(artefact_digests(run_dir)) == per_camera | per_chunk | {"identities.parquet"}
    assert reference["chunks"] == CHUNKS and reference["cameras"] == CAMERAS
    assert reference["frames"] == 2 * 30 and reference["reused_results"] == 0
    assert {"decode", "detect", "track", "associate", "map", "run"} <= reference["fps"].keys()
    assert reference["metrics"]["mtmc"]["idf1"] > 0  # ground truth next to the videos was scored

    # One identity space across chunks: chunk k+1 continues chunk k's gallery.
    ids = [pd.read_parquet(run_dir / k / "identities.parquet") for k in CHUNKS]
    assert set(ids[0].global_id) & set(ids[1].global_id)
    whole = pd.read_parquet(run_dir / "identities.parquet")
    assert len(whole) == sum(map(len, ids))
    assert reference["identities"] == whole.global_id.nunique()

    manifest = (run_dir / "manifest.json").read_text()
    assert RunConfig().digest() in manifest and "finished_at" in manifest

    states = task_states(reference["run_id"], TRACK_TASKS)
    assert {n: states[n] for n in TRACK_TASKS} == dict.fromkeys(TRACK_TASKS, "Completed")
    assert {f"associate_identities[{k}]" for k in CHUNKS} <= states.keys()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(reference["run_id"])]))
        )
    by_type: dict[str, list] = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    assert {a.key for a in by_type["table"]} == {"tiny-c01-tracks", "tiny-c02-tracks"}
    (summary,) = by_type["markdown"]
    assert "Metrics (ground truth)" in summary.data and reference["run_id"] in summary.data
    # the flow's progress and each track_camera task's, all complete
    assert len(by_type["progress"]) == len(TRACK_TASKS) + 1
    assert {float(a.data) for a in by_type["progress"]} == {100.0}


@pytest.mark.slow
def test_the_flow_meets_the_cross_camera_bar_on_a_fresh_scene(tmp_path: Path) -> None:
    """Offline defaults through the whole flow on a scene generated here (3 cameras, 6 people,
    8 s in 2 sub-videos at 1280x720): one identity per person across cameras and chunks.

    The bar is MTMC IDF1 >= 0.85 and a map error <= 0.3 m; measured 0.916 and 0.19 m
    (7 identities for 6 people).
    """
    scene = tmp_path / ENV
    generate_scene(scene, SceneSpec(env=ENV, cameras=3, people=6, seconds=8, sub_videos=2, seed=5))
    metrics = run_flow(tmp_path / "runs", str(scene))["metrics"]
    assert metrics["mtmc"]["idf1"] >= 0.85, metrics["mtmc"]
    assert metrics["map_error_m"]["mean"] <= 0.3, metrics["map_error_m"]
    ids = metrics["identities"]
    assert ids["true"] == 6 and ids["true"] <= ids["predicted"] <= ids["true"] + 2, ids


def test_transient_s3_faults_are_retried(s3, scene: Path, reference: dict, tmp_path: Path) -> None:
    bucket = s3.create_bucket()
    s3.upload_dir(scene, f"{bucket}/{ENV}")
    s3.fail_next(2)  # the first two requests of the run (environment discovery) get a 503
    summary = run_flow(tmp_path / "runs", f"{bucket}/{ENV}")
    assert s3.failures_served == 2
    states = task_states(summary["run_id"], {f"download_videos[{ENV}]"})
    assert states[f"download_videos[{ENV}]"] == "Completed"
    with get_client(sync_client=True) as client:
        (download,) = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(summary["run_id"])])),
            task_run_filter=TaskRunFilter(name={"any_": [f"download_videos[{ENV}]"]}),
        )
    assert download.run_count > 1  # failed, retried, succeeded
    assert artefact_digests(Path(summary["run_url"])) == artefact_digests(Path(reference["run_url"]))


def test_runs_and_cache_on_s3(s3, scene: Path, reference: dict, tmp_path: Path) -> None:
    runs = f"{s3.create_bucket()}/runs"
    with spoton_env(SPOTON_RUNS_URL=runs, SPOTON_CACHE_DIR=tmp_path / "cache"):
        first = process_environment(ENV, videos=str(scene), chunks=["sub_video_01"])
        again = process_environment(ENV, videos=str(scene), chunks=["sub_video_01"])
    tracking = {f"track_camera[{c}/sub_video_01]" for c in CAMERAS}
    states = task_states(again["run_id"], tracking)
    assert {n: states[n] for n in tracking} == dict.fromkeys(tracking, "Cached")
    assert s3.keys(f"{runs}/.results/")  # the cache lives in the bucket, next to the runs
    expected = artefact_digests(Path(reference["run_url"]))
    for summary in (first, again):
        assert summary["run_url"] == f"{runs}/{summary['run_id']}"
        for rel in ("c01/sub_video_01/tracks.parquet", "sub_video_01/identities.parquet"):
            data = s3.get(f"{summary['run_url']}/{rel}")
            assert hashlib.sha256(data).hexdigest() == expected[rel]


def test_published_run_streams_every_frame_in_order(
    api_database: str, redis_server: str, scene: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    with spoton_env(
        SPOTON_RUNS_URL=runs,
        SPOTON_CACHE_DIR=tmp_path / "cache",
        SPOTON_DATABASE_URL=api_database,
        SPOTON_REDIS_URL=f"{redis_server}/0",
    ):
        summary = process_environment(ENV, videos=str(scene), publish=True)
    client = redis.Redis.from_url(f"{redis_server}/0", decode_responses=True)
    try:
        entries = [streams.parse_entry(i, f) for i, f in client.xrange(streams.stream_key(summary["run_id"]))]
        final = streams.latest_status(client, task_id=summary["run_id"])
    finally:
        client.delete(streams.stream_key(summary["run_id"]), streams.status_key(summary["run_id"]))
        client.close()
    frames = [e.after_frame for e in entries if e.is_frame]
    assert frames == list(range(summary["frames"] // len(CAMERAS)))  # every frame, once, in order
    statuses = [WsMessage.model_validate_json(e.data).payload for e in entries if not e.is_frame]
    assert [s.status for s in statuses] == ["PROCESSING"] * (1 + len(CHUNKS)) + ["COMPLETED"]
    assert [s.progress for s in statuses[1:-1]] == pytest.approx([100 / 3, 200 / 3, 100])
    assert final is not None and final.status == "COMPLETED"


KILLED_RUN = """
import os, sys
sys.path.insert(0, {root!r})
from flows.process import process_environment
process_environment({env!r}, videos={videos!r})
"""


def persisted_tracks(results_dir: Path) -> set[str]:
    """Track task names whose result record reached result storage (complete records only)."""
    names = set()
    for path in results_dir.glob("*") if results_dir.is_dir() else ():
        with contextlib.suppress(Exception):  # a record being written is not there yet
            result = ResultRecord.deserialize(path.read_bytes()).result
            if isinstance(result, CameraTracks):
                names.add(f"track_camera[{result.camera_id}/{result.chunk}]")
    return names


def test_killed_run_resumes_from_cache_with_identical_artefacts(
    prefect_harness: str, scene: Path, reference: dict, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPOTON_")},
        "PREFECT_API_URL": prefect_harness,
        "SPOTON_RUNS_URL": str(runs),
        "SPOTON_CACHE_DIR": str(tmp_path / "cache"),
        "SPOTON_MAX_WORKERS": "1",  # one task at a time, so the kill lands mid-run
    }
    code = KILLED_RUN.format(root=str(ROOT), env=ENV, videos=str(scene))
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    done: set[str] = set()
    while not done and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        done = persisted_tracks(runs / ".results")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = persisted_tracks(runs / ".results")
    assert done, f"no track_camera task finished before the kill:\n{process.stderr.read()[-3000:]}"
    assert done < TRACK_TASKS, "the run finished before it could be killed"

    resumed = run_flow(runs, str(scene))
    states = task_states(resumed["run_id"], TRACK_TASKS)
    assert {n: states[n] for n in TRACK_TASKS} == {n: "Cached" if n in done else "Completed" for n in TRACK_TASKS}
    assert resumed["reused_results"] >= len(done)
    assert artefact_digests(Path(resumed["run_url"])) == artefact_digests(Path(reference["run_url"]))


def test_dask_runner_on_an_existing_scheduler(scene: Path, reference: dict, tmp_path: Path) -> None:
    from distributed import LocalCluster

    # In-process workers over real TCP, reached the way a remote scheduler is: dask://host:port
    with LocalCluster(
        processes=False,
        n_workers=1,
        threads_per_worker=2,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        runner = task_runner(Settings(task_runner=cluster.scheduler_address.replace("tcp://", "dask://")))
        assert isinstance(runner, DaskTaskRunner)
        flow = process_environment.with_options(task_runner=runner)
        summary = run_flow(tmp_path / "runs", str(scene), flow=flow, chunks=["sub_video_01"])
    assert summary["chunks"] == ["sub_video_01"]
    first_chunk = {
        rel: digest for rel, digest in artefact_digests(Path(reference["run_url"])).items() if "sub_video_01" in rel
    }
    produced = artefact_digests(Path(summary["run_url"]))
    assert {rel: produced[rel] for rel in first_chunk} == first_chunk


def test_reprocess_with_new_association_config_keeps_tracking(scene: Path, reference: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    environments = tmp_path / "environments"
    environments.mkdir()
    (environments / f"{ENV}.json").write_text(
        json.dumps(
            {
                "environment_id": ENV,
                "cameras": CAMERAS,
                "video_dir": f"video_{ENV}",
                "videos_url": str(scene),
                "calibration": str(scene / "homography_data" / f"{ENV}.json"),
                "fps": SPEC.fps,
            }
        )
    )
    with spoton_env(
        SPOTON_RUNS_URL=runs,
        SPOTON_CACHE_DIR=tmp_path / "cache",
        SPOTON_ENVIRONMENTS_DIR=environments,
    ):
        first = process_environment(ENV)
        tuned = RunConfig(association={"merge_max_cost": 0.8})
        state = reprocess([ENV], run_config=tuned, chunks=["sub_video_01"], return_state=True)
    assert state.is_completed()
    summary = state.result()[ENV]
    with get_client(sync_client=True) as client:
        child = client.read_flow_run(UUID(summary["run_id"]))
    assert child.parent_task_run_id is not None  # a subflow of reprocess
    tracking = {f"track_camera[{c}/sub_video_01]" for c in CAMERAS}
    states = task_states(summary["run_id"], tracking | {"associate_identities[sub_video_01]"})
    assert {n: states[n] for n in tracking} == dict.fromkeys(tracking, "Cached")
    assert states["associate_identities[sub_video_01]"] == "Completed"  # new thresholds
    assert first["run_id"] != summary["run_id"]


# ------------------------------------------------------------------ policies


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError("reset"), True),
        (ConnectionError("refused"), True),
        (TimeoutError("slow"), True),
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ValueError("bad"), False),
        (CorruptVideoError("/v.mp4", 12), False),
        (FileNotFoundError("gone"), False),
        (KeyError("x"), False),
    ],
)
def test_retry_condition(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retry_condition_follows_the_cause_chain() -> None:
    try:
        try:
            raise ConnectionError("redis down")
        except ConnectionError as inner:
            raise RuntimeError("publish failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    try:
        try:
            raise OSError("read failed")
        except OSError as inner:
            raise CorruptVideoError("/v.mp4", 3) from inner
    except CorruptVideoError as outer:
        assert not is_transient(outer)


def _video(**changes: object) -> VideoRef:
    base = dict(
        camera_id="c01",
        chunk="sub_video_01",
        chunk_index=0,
        url="s3://b/v.mp4",
        path="/cache/a/v.mp4",
        content_key="etag:1",
        frames=10,
        frame_offset=0,
    )
    return VideoRef(**{**base, **changes})


def _key(policy, **inputs: object) -> str:
    ctx = SimpleNamespace(task=SimpleNamespace(name="track_camera"))
    return policy.compute_key(task_ctx=ctx, inputs=inputs, flow_parameters={})


def test_cache_key_is_content_not_location_nor_run() -> None:
    config = RunConfig()
    key = _key(CONTENT_KEY, video=_video(), config=config, run="run-1")
    assert key == _key(
        CONTENT_KEY,
        video=_video(path="/elsewhere/v.mp4", url="/local/v.mp4"),
        config=config,
        run="run-2",
    )
    assert key != _key(CONTENT_KEY, video=_video(content_key="etag:2"), config=config, run="run-1")
    assert key != _key(CONTENT_KEY, video=_video(frame_offset=10), config=config, run="run-1")
    assert key != _key(CONTENT_KEY, video=_video(), config=RunConfig(tracker="ocsort"), run="r")


def test_tracking_key_ignores_association_settings() -> None:
    tuned = RunConfig(association={"merge_max_cost": 0.8})
    assert _key(TRACKING_KEY, video=_video(), config=RunConfig()) == _key(TRACKING_KEY, video=_video(), config=tuned)
    assert _key(CONTENT_KEY, video=_video(), config=RunConfig()) != _key(CONTENT_KEY, video=_video(), config=tuned)


def test_cache_key_changes_with_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.policy

    before = _key(CONTENT_KEY, video=_video(), config=RunConfig())
    monkeypatch.setattr(tasks.policy, "code_version", lambda: "0.1.0+changed")
    assert _key(CONTENT_KEY, video=_video(), config=RunConfig()) != before


def test_resolve_config() -> None:
    assert resolve_config(None, None) == RunConfig()
    assert resolve_config({"tracker": "ocsort"}, 5) == RunConfig(tracker="ocsort", max_frames=5)
    assert resolve_config(RunConfig(max_frames=9), None).max_frames == 9
    with pytest.raises(ValueError, match="max_frames"):
        resolve_config(None, 0)


def test_task_runner_from_settings() -> None:
    threads = task_runner(Settings(task_runner="threads", max_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(Settings(task_runner="dask", max_workers=2))
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1}
    remote = task_runner(Settings(task_runner="dask://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="SPOTON_TASK_RUNNER"):
        task_runner(Settings(task_runner="ray"))
