"""Orchestration overhead: the same scene through the engine alone and through the Prefect flow.

1. engine: ``spoton.pipeline.run_cameras`` (cameras in parallel processes) then,
   chunk by chunk, ``associate`` and ``fuse_positions``, writing the same
   artefacts the flow writes;
2. flow: ``process_environment`` with an empty cache (Settings' task runner);
3. resumed: the same flow again on the same runs location, every task cached.

Prints wall times, the flow's overhead over the engine (target <= 5 % on a
one-minute scene), the resumed run's time as a fraction of the fresh one
(target <= 10 %), per-stage fps, and whether engine and flow wrote identical
artefacts. The Prefect API is a temporary local server (Prefect's test harness),
started before any timing, so the user's Prefect database is never touched.

    python bench/orchestration.py [--seconds 60] [--cameras 4] [--size 640x360]
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from spoton.associate import (  # noqa: E402
    AssociationConfig,
    IdentityGallery,
    associate,
    fuse_positions,
)
from spoton.config import PROJECT_ROOT, RunConfig, get_settings, load_environment  # noqa: E402
from spoton.pipeline import run_cameras  # noqa: E402
from spoton.sources import discover_location  # noqa: E402
from spoton.store import RunStore, read_tracklets, tracks_path  # noqa: E402
from spoton.synth import SceneSpec, generate_scene, parse_size  # noqa: E402


def scene_for(spec: SceneSpec, root: Path) -> Path:
    """The scene of ``spec``, generated once and kept (generation is not what is measured)."""
    out = root / hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:12]
    if not (out / "scene.json").exists():
        print(f"generating the scene in {out} …", flush=True)
        generate_scene(out, spec)
    return out


def engine_run(scene: Path, env_id: str, config: RunConfig, runs: Path, workers: int | None) -> float:
    """Seconds for every artefact of a run, written by the engine without Prefect."""
    from tasks.identities import identities_frame

    t0 = time.perf_counter()
    env = load_environment(env_id, str(scene))
    location = discover_location(str(scene), env_id, env.video_dir)
    store = RunStore(runs, "engine")
    results = run_cameras(env, location.chunks, config, store, workers=workers)
    assoc_config = AssociationConfig(**config.association)
    gallery: IdentityGallery | None = None
    for chunk in [r.chunk for r in results[env.cameras[0]]]:
        tracklets = [t for cam in env.cameras for t in read_tracklets(store, cam, chunk)]
        result = associate(tracklets, env, assoc_config, gallery)
        gallery = result.gallery
        store.write_parquet(f"{chunk}/identities.parquet", identities_frame(result.global_ids))
        store.write_npz(f"{chunk}/gallery.npz", **gallery.to_npz())
        tracks = [store.read_parquet(tracks_path(cam, chunk)).assign(camera_id=cam) for cam in env.cameras]
        positions = fuse_positions(pd.concat(tracks, ignore_index=True), result.global_ids, env, assoc_config)
        store.write_parquet(f"{chunk}/map.parquet", positions)
    return time.perf_counter() - t0


def flow_run(scene: Path, env_id: str, config: RunConfig, runs: Path) -> tuple[float, dict]:
    from flows.process import process_environment

    os.environ["SPOTON_RUNS_URL"] = str(runs)
    get_settings.cache_clear()
    t0 = time.perf_counter()
    summary = process_environment(env_id, videos=str(scene), run_config=config)
    return time.perf_counter() - t0, summary


def digests(run_dir: Path, names: set[str] | None = None) -> dict[str, str]:
    """sha256 per artefact; manifest.json names the run and its timings, so it is left out."""
    files = (
        p
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json"
    )
    out = {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return {k: v for k, v in out.items() if names is None or k in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--sub-videos", type=int, default=2)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--workers", type=int, default=None, help="engine processes (default: cores)")
    parser.add_argument("--scenes", type=Path, default=PROJECT_ROOT / ".cache" / "bench-scenes")
    args = parser.parse_args()

    spec = SceneSpec(
        env="benchorch",
        cameras=args.cameras,
        people=args.people,
        seconds=args.seconds,
        sub_videos=args.sub_videos,
        size=parse_size(args.size),
    )
    scene = scene_for(spec, args.scenes)
    config = RunConfig()
    frames = args.cameras * round(args.seconds * spec.fps)
    print(
        f"scene: {args.cameras} cameras x {args.seconds:g} s at {spec.fps} fps, {args.size} "
        f"({frames} camera-frames), {os.cpu_count()} cores, task runner "
        f"{get_settings().task_runner!r} (max_workers {get_settings().max_workers})",
        flush=True,
    )

    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="spoton-bench-") as tmp, prefect_test_harness(server_startup_timeout=180):
        work = Path(tmp)
        t_engine = engine_run(scene, spec.env, config, work / "engine-runs", args.workers)
        print(f"engine   {t_engine:8.1f} s  {frames / t_engine:7.1f} camera-frames/s", flush=True)
        t_flow, summary = flow_run(scene, spec.env, config, work / "flow-runs")
        print(
            f"flow     {t_flow:8.1f} s  {frames / t_flow:7.1f} camera-frames/s  "
            f"overhead {100 * (t_flow / t_engine - 1):+.1f} % (target <= 5 %)",
            flush=True,
        )
        t_resumed, resumed = flow_run(scene, spec.env, config, work / "flow-runs")
        print(
            f"resumed  {t_resumed:8.1f} s  = {100 * t_resumed / t_flow:.1f} % of the fresh run "
            f"(target <= 10 %), {resumed['reused_results']} results from the cache",
            flush=True,
        )
        print("stage fps (flow): " + ", ".join(f"{k} {v}" for k, v in summary["fps"].items()))
        flow_files = digests(Path(summary["run_url"]))
        engine_files = digests(work / "engine-runs" / "engine", set(flow_files))
        same = engine_files == {k: flow_files[k] for k in engine_files}
        print(f"engine and flow artefacts identical: {same} ({len(engine_files)} files)")
        identical_resume = digests(Path(resumed["run_url"])) == flow_files
        print(f"resumed run artefacts identical to the fresh run's: {identical_resume}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
