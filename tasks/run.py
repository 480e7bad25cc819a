"""Run-level steps: manifest, reuse of cached artefacts, the final tables and the report."""

import platform
import re
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import prefect
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from spoton.cli import format_metrics
from spoton.config import RunConfig
from spoton.metrics import evaluate_run
from spoton.pipeline import STAGES
from tasks.policy import RETRY, code_version
from tasks.refs import CameraTracks, ChunkIdentities, ChunkMap, RunRef, SceneRef

RUN_STEP: dict[str, Any] = {
    "timeout_seconds": 3600,
    "cache_policy": NO_CACHE,  # cheap, and about this run: its id, its folder, its timings
    "persist_result": False,
    **RETRY,
}


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(name="open_run", task_run_name="open_run[{scene.environment.environment_id}]", **RUN_STEP)
def open_run(run: RunRef, scene: SceneRef, config: RunConfig) -> None:
    """manifest.json with inputs, config and versions, first, so even a crashed run is described."""
    store = run.store()
    store.update_manifest(
        run_id=run.run_id,
        environment_id=scene.environment.environment_id,
        videos_url=scene.videos_url,
        inputs=[
            {
                "camera_id": v.camera_id,
                "chunk": v.chunk,
                "url": v.url,
                "content_key": v.content_key,
                "frames": v.frames,
                "frame_offset": v.frame_offset,
            }
            for v in scene.videos
        ],
        config=config.model_dump(mode="json"),
        config_digest=config.digest(),
        versions={
            "spoton": code_version(),
            "prefect": prefect.__version__,
            "python": platform.python_version(),
        },
        started_at=datetime.now(UTC).isoformat(),
    )


@task(name="copy_artefacts", task_run_name="copy_artefacts[{chunk}]", **RUN_STEP)
def copy_artefacts(chunk: str, results: list[CameraTracks | ChunkIdentities | ChunkMap], run: RunRef) -> int:
    """Copy, byte for byte, artefacts that cached results point to (an earlier run) into this run.

    A cached task did not write into this run; after this step the run folder is
    what an uninterrupted run would have written. Returns how many files were copied.
    """
    store = run.store()
    copied = 0
    for result in results:
        source = result.artefacts.run
        if source == run:
            continue
        for rel in result.artefacts.files.values():
            try:
                data = source.store().read_bytes(rel)
            except FileNotFoundError as e:
                raise FileNotFoundError(
                    f"{e}: a cached result of run {source.run_id} points at it, "
                    "but it was deleted; "
                    "re-run with PREFECT_TASKS_REFRESH_CACHE=true to recompute"
                ) from None
            store.write_bytes(rel, data)
            copied += 1
    if copied:
        get_run_logger().info("chunk %s: %d artefacts reused from earlier runs", chunk, copied)
    return copied


def stage_fps(
    tracks: list[CameraTracks],
    identities: list[ChunkIdentities],
    maps: list[ChunkMap],
    wall_seconds: float,
) -> dict[str, float]:
    """Camera-frames per second of each stage (engine stages summed over cameras and chunks)."""
    frames = sum(t.frames for t in tracks)
    seconds = {stage: sum(t.seconds.get(stage, 0.0) for t in tracks) for stage in STAGES}
    seconds["associate"] = sum(i.seconds for i in identities)
    seconds["map"] = sum(m.seconds for m in maps)
    seconds["run"] = wall_seconds
    return {stage: round(frames / s, 1) for stage, s in seconds.items() if s > 0}


@task(
    name="finalise_run",
    task_run_name="finalise_run[{scene.environment.environment_id}]",
    **RUN_STEP,
)
def finalise_run(
    run: RunRef,
    scene: SceneRef,
    tracks: list[CameraTracks],
    identities: list[ChunkIdentities],
    maps: list[ChunkMap],
    wall_seconds: float,
) -> dict:
    """All chunks' identities.parquet, the manifest's timings; returns the run summary."""
    store = run.store()
    all_ids = pd.concat([i.artefacts.read_parquet("identities") for i in identities], ignore_index=True)
    store.write_parquet("identities.parquet", all_ids)
    fps = stage_fps(tracks, identities, maps, wall_seconds)
    reused = sum(r.artefacts.run != run for r in (*tracks, *identities, *maps))
    store.update_manifest(
        finished_at=datetime.now(UTC).isoformat(),
        wall_seconds=round(wall_seconds, 3),
        fps=fps,
        stage_seconds={f"{t.camera_id}/{t.chunk}": t.seconds for t in tracks},
        reused_results=reused,
    )
    return {
        "run_id": run.run_id,
        "run_url": store.root_url,
        "environment_id": scene.environment.environment_id,
        "cameras": list(scene.environment.cameras),
        "chunks": scene.chunks,
        "frames": sum(t.frames for t in tracks),
        "tracks": sum(t.tracks for t in tracks),
        "identities": int(all_ids["global_id"].nunique()),
        "fps": fps,
        "wall_seconds": round(wall_seconds, 3),
        "reused_results": reused,
        "metrics": None,
    }


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# {summary['environment_id']}: run `{summary['run_id']}`",
        "",
        "| cameras | chunks | camera-frames | tracks | identities | wall (s) | results reused |",
        "|---|---|---|---|---|---|---|",
        f"| {', '.join(summary['cameras'])} | {len(summary['chunks'])} | {summary['frames']} "
        f"| {summary['tracks']} | {summary['identities']} | {summary['wall_seconds']} "
        f"| {summary['reused_results']} |",
        "",
        "## Throughput (camera-frames per second)",
        "",
        "| stage | fps |",
        "|---|---|",
        *(f"| {stage} | {fps} |" for stage, fps in summary["fps"].items()),
        "",
        f"Artefacts: `{summary['run_url']}`",
    ]
    if summary["metrics"]:
        lines += [
            "",
            "## Metrics (ground truth)",
            "",
            "```",
            format_metrics(summary["metrics"]),
            "```",
        ]
    return "\n".join(lines)


@task(name="report_run", task_run_name="report_run[{scene.environment.environment_id}]", **RUN_STEP)
def report_run(run: RunRef, scene: SceneRef, tracks: list[CameraTracks], summary: dict) -> dict:
    """Scores the run when the scene has ground truth; summary and per-camera table artifacts."""
    if scene.gt_url is not None:
        summary = {**summary, "metrics": evaluate_run(run.store(), scene.gt_url)}
    env_id = scene.environment.environment_id
    create_markdown_artifact(
        summary_markdown(summary),
        key=artifact_key(env_id, "summary"),
        description=f"run {run.run_id}",
    )
    for camera in scene.environment.cameras:
        rows = [
            {
                "chunk": t.chunk,
                "frames": t.frames,
                "tracks": t.tracks,
                "fps": round(t.frames / max(sum(t.seconds.values()), 1e-9), 1),
                "reused": t.artefacts.run != run,
            }
            for t in tracks
            if t.camera_id == camera
        ]
        create_table_artifact(
            rows,
            key=artifact_key(env_id, camera, "tracks"),
            description=f"camera {camera}, run {run.run_id}",
        )
    return summary
