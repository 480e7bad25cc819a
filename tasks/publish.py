"""publish_frames and publish_status: a run's results to the API's Postgres and Redis stream.

Only runs started with ``publish=True`` (the API's) call these. ``api.publisher``
is idempotent, so a retried publish re-sends nothing twice. It is imported on
first use: runs that do not publish need neither the API's database nor Redis.
"""

from prefect import task
from prefect.cache_policies import NO_CACHE

from spoton.config import Environment
from spoton.types import TaskStatus
from tasks.policy import RETRY
from tasks.refs import CameraTracks, RunRef, VideoRef


def send_status(
    task_id: object,
    status: TaskStatus,
    progress: float,
    current_step: str,
    details: str | None = None,
) -> None:
    """A status_update on the run's stream (and as its latest status in Postgres)."""
    from api.publisher import publish_status as publish_status_message

    publish_status_message(
        task_id=task_id,
        status=status,
        progress=progress,
        current_step=current_step,
        details=details,
    )


@task(
    name="publish_frames",
    task_run_name="publish_frames[{chunk}]",
    timeout_seconds=3600,
    cache_policy=NO_CACHE,  # a side effect per run: every run has its own stream
    persist_result=False,
    **RETRY,
)
def publish_frames(
    run: RunRef,
    environment: Environment,
    chunk: str,
    videos: list[VideoRef],
    tracks: list[CameraTracks],
    progress: float,
) -> int:
    """Every frame of the chunk (empty ones too) to Postgres and the stream; returns frames sent."""
    from api.publisher import publish_chunk

    start = min(v.frame_offset for v in videos)
    published = publish_chunk(
        task_id=run.run_id,
        environment_id=environment.environment_id,
        store=run.store(),
        chunk=chunk,
        cameras=[t.camera_id for t in tracks],
        frames=range(start, start + max(t.frames for t in tracks)),
        fps=environment.fps,
    )
    send_status(run.run_id, "PROCESSING", progress, f"published {chunk}")
    return published.frames


@task(
    name="publish_status",
    task_run_name="publish_status[{status}]",
    timeout_seconds=300,
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY,
)
def publish_status(
    run: RunRef, status: TaskStatus, progress: float, current_step: str, details: str | None = None
) -> None:
    send_status(run.run_id, status, progress, current_step, details)
