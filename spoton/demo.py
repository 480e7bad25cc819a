"""The embedded end-to-end demo behind `make demo`.

Generates the synthetic `demo` scene once, runs the Prefect flow on it, then
leaves annotated H.264 videos, a trajectory map and the metrics for the user.
"""

import json
import time
from pathlib import Path

from spoton.config import get_settings, load_environment


def ensure_demo_scene(scene_dir: Path, regenerate: bool = False) -> Path:
    """Generate the default scene unless a complete one is already there."""
    from spoton.synth import SceneSpec, generate_scene

    if regenerate or not (scene_dir / "scene.json").exists():
        print(f"[1/4] generating the synthetic demo scene in {scene_dir} …")
        t0 = time.perf_counter()
        generate_scene(scene_dir, SceneSpec(), progress=True)
        print(f"      done in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"[1/4] using the demo scene already in {scene_dir}")
    return scene_dir


def render_outputs(run_dir: Path, scene_dir: Path, out: Path, environment_id: str) -> list[Path]:
    """Annotated videos per camera and chunk, plus the trajectory map."""
    import pandas as pd

    from spoton.render import write_annotated_video, write_trajectories_png
    from spoton.sources import discover_location

    env = load_environment(environment_id, str(scene_dir))
    location = discover_location(str(scene_dir), environment_id, env.video_dir)
    ids = pd.read_parquet(run_dir / "identities.parquet")
    global_ids = {(r.camera_id, int(r.track_id)): int(r.global_id) for r in ids.itertuples()}
    written: list[Path] = []
    for camera_id in env.cameras:
        offset = 0
        for url in location.chunks[camera_id]:
            chunk = Path(url).stem
            tracks = pd.read_parquet(run_dir / camera_id / chunk / "tracks.parquet")
            # Only tracks association found to be people (others have no global id).
            known = [(camera_id, int(t)) in global_ids for t in tracks["track_id"]]
            tracks = tracks[known]
            target = out / "videos" / f"{camera_id}_{chunk}.mp4"
            n = write_annotated_video(
                Path(url), tracks, target, global_ids=global_ids, camera_id=camera_id, frame_offset=offset
            )
            offset += n
            written.append(target)
    maps = sorted(run_dir.glob("*/map.parquet"))
    map_df = pd.concat([pd.read_parquet(p) for p in maps], ignore_index=True) if maps else None
    gt_path = scene_dir / "gt" / "ground_plane.csv"
    gt = pd.read_csv(gt_path) if gt_path.exists() else None
    png = out / "trajectories.png"
    write_trajectories_png(map_df, env.plane, env.calibration, png, gt=gt)
    written.append(png)
    return written


def run_demo(out: Path, regenerate: bool = False) -> int:
    from spoton.cli import format_metrics, run_flow
    from spoton.config import RunConfig
    from spoton.metrics import evaluate_run

    t_start = time.perf_counter()
    settings = get_settings()
    scene_dir = ensure_demo_scene(settings.data_dir / "demo", regenerate)
    out.mkdir(parents=True, exist_ok=True)

    print("[2/4] running the Prefect flow process_environment(environment_id='demo') …")
    t0 = time.perf_counter()
    summary = run_flow("demo", str(scene_dir), RunConfig(), str(out / "runs"))
    print(f"      run {summary['run_id']} finished in {time.perf_counter() - t0:.1f} s")
    run_dir = Path(summary["run_url"])

    print("[3/4] rendering annotated videos and the trajectory map …")
    files = render_outputs(run_dir, scene_dir, out, "demo")

    print("[4/4] scoring against the synthetic ground truth …")
    metrics = evaluate_run(str(run_dir), str(scene_dir))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(format_metrics(metrics))

    print(f"\nDemo finished in {time.perf_counter() - t_start:.0f} s. Look at:")
    print(f"  artefacts      {run_dir}")
    print(f"  videos         {out / 'videos'}  ({sum(f.suffix == '.mp4' for f in files)} H.264 files)")
    print(f"  map            {out / 'trajectories.png'}")
    print(f"  metrics        {out / 'metrics.json'}")
    return 0
