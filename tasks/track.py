"""track_camera: one camera's sub-video through the engine, holding a ``gpu`` slot."""

import os
import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency

from spoton.config import Environment, RunConfig, get_settings
from spoton.pipeline import process_camera_chunk
from spoton.sources import fetch
from spoton.store import embeddings_path, tracks_path
from tasks.engine_pool import engine_pool
from tasks.policy import GPU_LIMIT, RETRY, TRACKING_KEY, current_key
from tasks.refs import Artefacts, CameraTracks, RunRef, VideoRef


class FrameProgress:
    """The engine's ``progress(done, total)`` as a progress artifact on the task run.

    Each update is an API call, so updates come at most every ``interval_s`` (and at the end).
    """

    def __init__(self, description: str, interval_s: float = 2.0) -> None:
        self.artifact_id = create_progress_artifact(0.0, description=description)
        self.interval_s = interval_s
        self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval_s:
            return
        self._last = now
        update_progress_artifact(self.artifact_id, 100.0 * done / max(total, 1))


def local_copy(video: VideoRef) -> Path:
    """The downloaded file; fetched again on a worker machine that does not have it."""
    path = Path(video.path)
    if path.exists():
        return path
    local = fetch(video.url, get_settings().cache_dir)
    if local.content_key != video.content_key:
        raise ValueError(
            f"{video.url} changed while the run was in progress "
            f"({video.content_key} -> {local.content_key}); start the run again"
        )
    return local.path


@task(
    name="track_camera",
    task_run_name="track_camera[{video.camera_id}/{video.chunk}]",
    timeout_seconds=4 * 3600,
    cache_policy=TRACKING_KEY,
    persist_result=True,
    **RETRY,
)
def track_camera(
    environment: Environment,
    video: VideoRef,
    config: RunConfig,
    run: RunRef,
    context: list[VideoRef] | None = None,
) -> CameraTracks:
    """Detect, track and embed one camera's chunk; tracks.parquet + embeddings.npz in ``run``.

    ``context``: the camera's neighbouring sub-videos, which the background
    model samples too (their content keys are part of this task's cache key).
    """
    path = local_copy(video)
    context_paths = [local_copy(v) for v in context or []]
    progress = FrameProgress(f"{video.camera_id}/{video.chunk}: frames tracked")
    # One slot per camera chunk: the accelerator, not the thread pool, bounds how many
    # run at once. Without the limit (no `python -m deployments.setup`) Prefect warns
    # and the thread pool alone bounds them; a lease-renewal hiccup must not kill hours
    # of tracking, hence no raise on renewal failure.
    with concurrency(GPU_LIMIT, occupy=1, strict=False, raise_on_lease_renewal_failure=False):
        kwargs = {
            "env": environment,
            "camera_id": video.camera_id,
            "video_path": path,
            "chunk": video.chunk,
            "chunk_index": video.chunk_index,
            "frame_offset": video.frame_offset,
            "config": config,
            "store": run.store(),
            "context": context_paths,
        }
        workers = get_settings().engine_workers or (os.cpu_count() or 1)
        if workers > 1:
            result = engine_pool(workers).run(kwargs, progress)
        else:
            result = process_camera_chunk(**kwargs, progress=progress)
    files = {
        "tracks": tracks_path(video.camera_id, video.chunk),
        "embeddings": embeddings_path(video.camera_id, video.chunk),
    }
    return CameraTracks(
        camera_id=video.camera_id,
        chunk=video.chunk,
        frames=result.frames,
        tracks=result.n_tracks,
        seconds=dict(result.stage_seconds),
        artefacts=Artefacts(run, files, current_key()),
    )
