"""process_environment and reprocess: the SpotOn pipeline as Prefect flows.

    download_videos
      -> per chunk, in order:
           track_camera per camera (concurrent, one `gpu` slot each)
           -> associate_identities (continues the previous chunk's gallery)
           -> project_to_map -> copy_artefacts -> publish_frames (publish=True only)
      -> finalise_run -> report_run

Everything is submitted up front: chunk k's association, projection and
publishing run while chunk k+1 is tracked, and futures carry the order. The run
id is the flow-run id (the API's task id); artefacts go to
``<Settings.runs_url>/<run_id>/``.
"""

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.runtime import flow_run as current_flow_run

from flows.runners import task_runner
from spoton.config import RunConfig, get_settings
from tasks import (
    associate_identities,
    copy_artefacts,
    download_videos,
    finalise_run,
    open_run,
    project_to_map,
    publish_frames,
    publish_status,
    report_run,
    track_camera,
)
from tasks.policy import result_storage
from tasks.publish import send_status
from tasks.refs import RunRef, VideoRef


def resolve_config(run_config: RunConfig | dict | None, max_frames: int | None) -> RunConfig:
    """The run's RunConfig; ``max_frames`` overrides the config's (and so enters its digest)."""
    data = run_config.model_dump() if isinstance(run_config, RunConfig) else dict(run_config or {})
    if max_frames is not None:
        data["max_frames"] = max_frames
    return RunConfig.model_validate(data)


def follow_tracking(futures: dict[PrefectFuture, VideoRef], max_frames: int | None) -> None:
    """Progress artifact of the flow run: camera-frames of finished track_camera tasks."""
    planned = {f: min(v.frames, max_frames) if max_frames else v.frames for f, v in futures.items()}
    total = max(sum(planned.values()), 1)
    artifact_id = create_progress_artifact(0.0, description="camera-frames tracked")
    done = 0
    for future in as_completed(list(futures)):
        done += planned[future]
        update_progress_artifact(artifact_id, 100.0 * done / total)


def announce_end(flow: Any, flow_run: Any, state: Any) -> None:  # noqa: ARG001
    """Tell stream readers of a published run that it failed or was cancelled.

    A killed process tells no one; the API also reads the run's Prefect state.
    """
    if not flow_run.parameters.get("publish"):
        return
    status = "CANCELLED" if state.is_cancelled() or state.is_cancelling() else "FAILED"
    send_status(flow_run.id, status, 100.0, state.name, state.message)


@flow(
    name="process-environment",
    task_runner=task_runner(get_settings()),
    on_failure=[announce_end],
    on_cancellation=[announce_end],
    on_crashed=[announce_end],
)
def process_environment(
    environment_id: str,
    videos: str | None = None,
    run_config: RunConfig | dict | None = None,
    publish: bool = False,
    chunks: list[str] | None = None,
    max_frames: int | None = None,
) -> dict:
    """Track every person across the cameras of an environment; returns the run summary.

    ``videos`` overrides where the environment's sub-videos are; ``chunks`` selects
    sub-videos by name (``sub_video_01``); ``max_frames`` caps frames per sub-video;
    ``publish`` streams results to the API (its runs).
    """
    t0 = time.perf_counter()
    logger = get_run_logger()
    settings = get_settings()
    config = resolve_config(run_config, max_frames)
    run = RunRef(settings.runs_url, str(current_flow_run.get_id()))
    # Results (the cache) live with this run's artefacts; resolved per run, not at import.
    storage = result_storage(settings)
    track, associate, project = (
        t.with_options(result_storage=storage) for t in (track_camera, associate_identities, project_to_map)
    )
    if publish:
        publish_status(run, "PROCESSING", 0.0, "downloading videos")

    scene = download_videos(environment_id, videos, chunks, config.max_frames)
    open_run(run, scene, config)
    env = scene.environment
    logger.info(
        "run %s: %d chunks x %d cameras, config %s",
        run.run_id,
        len(scene.chunks),
        len(env.cameras),
        config.digest(),
    )

    tracking: dict[PrefectFuture, VideoRef] = {}
    identities, maps, copies, published = [], [], [], []
    previous = None
    for k, chunk in enumerate(scene.chunks):
        videos_k = scene.chunk_videos(chunk)
        cameras = [track.submit(env, v, config, run, scene.neighbours(v)) for v in videos_k]
        ids = associate.submit(env, chunk, cameras, previous, config, run)
        positions = project.submit(env, chunk, cameras, ids, config, run)
        copies.append(copy_artefacts.submit(chunk, [*cameras, ids, positions], run))
        if publish:
            published.append(
                publish_frames.submit(
                    run,
                    env,
                    chunk,
                    videos_k,
                    cameras,
                    100.0 * (k + 1) / len(scene.chunks),
                    wait_for=[copies[-1], *published[-1:]],  # this chunk complete, chunks in order
                )
            )
        tracking.update(zip(cameras, videos_k, strict=True))
        identities.append(ids)
        maps.append(positions)
        previous = ids

    follow_tracking(tracking, config.max_frames)
    wait([*copies, *published])  # before taking the wall time below
    tracks = list(tracking)
    summary = finalise_run(
        run,
        scene,
        tracks,
        identities,
        maps,
        time.perf_counter() - t0,
        wait_for=[*copies, *published],
    )
    summary = report_run(run, scene, tracks, summary)
    if publish:
        publish_status(
            run,
            "COMPLETED",
            100.0,
            "done",
            f"{summary['identities']} people, {summary['tracks']} tracks",
        )
    logger.info(
        "run %s done: %d camera-frames, %d identities, %d results reused",
        run.run_id,
        summary["frames"],
        summary["identities"],
        summary["reused_results"],
    )
    return summary


@flow(name="reprocess")
def reprocess(
    environment_ids: list[str],
    run_config: RunConfig | dict | None = None,
    chunks: list[str] | None = None,
) -> dict[str, dict]:
    """Run process_environment (a subflow each) for several environments with one config.

    Every environment is attempted; the flow fails at the end if any of them did.
    Unchanged per-camera work is taken from the cache, so a nightly re-run only
    recomputes what a new config or code version changed.
    """
    logger = get_run_logger()
    summaries: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for environment_id in environment_ids:
        state = process_environment(environment_id, run_config=run_config, chunks=chunks, return_state=True)
        if state.is_completed():
            summaries[environment_id] = state.result()
        else:
            failed[environment_id] = state.message or state.name
            logger.error("reprocessing %s failed: %s", environment_id, failed[environment_id])
    if failed:
        raise RuntimeError(f"reprocess failed for {sorted(failed)}: {failed}")
    return summaries
