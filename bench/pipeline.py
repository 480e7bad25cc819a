"""Per-camera pipeline throughput: frames/s per stage and in total, 4 cameras in parallel.

Not a test: prints figures. Runs the engine-only runner (``spoton.pipeline.run_cameras``,
one process per core) on the demo scene at 1280x720 and on a generated 1920x1080 scene,
with the default weightless detector (bgsub) and, with ``--torchvision``, with
Faster R-CNN ResNet50-FPN v2 on random weights (timing only; nothing is downloaded).

    .venv/bin/python bench/pipeline.py [--frames 250] [--workers 2] [--torchvision]

Stage seconds are summed over cameras (CPU-side time inside each worker); ``decode``
is the time the consumer waited for the prefetching reader, so ~0 means decoding
never starved the detector. Target on the 2-core dev box: >= 100 frames/s in total
with bgsub (4 cameras x 25 fps, real time).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spoton.config import Environment, RunConfig, load_calibration  # noqa: E402
from spoton.pipeline import STAGES, run_cameras  # noqa: E402
from spoton.store import RunStore  # noqa: E402


def scene_environment(scene: Path) -> tuple[Environment, dict[str, list[Path]]]:
    doc = json.loads((scene / "scene.json").read_text())
    env_id = doc["spec"]["env"]
    cameras = tuple(c["id"] for c in doc["cameras"])
    plane, calib = load_calibration(scene / "homography_data" / f"{env_id}.json", cameras)
    env = Environment(
        env_id, cameras, plane, calib, str(scene), f"video_{env_id}", fps=doc["spec"]["fps"]
    )
    chunks = {c: sorted((scene / f"video_{env_id}" / c).glob("*.mp4")) for c in cameras}
    return env, chunks


def ensure_scene(path: Path, size: tuple[int, int], seconds: float) -> Path:
    if (path / "scene.json").exists():
        return path
    from spoton.synth import SceneSpec, generate_scene

    print(f"generating a {size[0]}x{size[1]} scene in {path} ...", flush=True)
    generate_scene(path, SceneSpec(size=size, seconds=seconds, sub_videos=2, seed=3))
    return path


def bench(label: str, scene: Path, config: RunConfig, workers: int, cameras: int) -> dict:
    env, chunks = scene_environment(scene)
    # Every sub-video of each camera, in order: each one's background also samples its
    # neighbours, as in a real run (from a fresh sample cache, so nothing is pre-warmed).
    chunks = {c: chunks[c] for c in list(chunks)[:cameras]}
    with tempfile.TemporaryDirectory(prefix="spoton-bench-") as runs:
        os.environ["SPOTON_CACHE_DIR"] = str(Path(runs) / "cache")  # read by the spawned workers
        store = RunStore(runs, "bench")
        t0 = time.perf_counter()
        results = run_cameras(env, chunks, config, store, workers=workers)
        wall = time.perf_counter() - t0
    frames = sum(r.frames for rs in results.values() for r in rs)
    stages = {s: sum(r.stage_seconds[s] for rs in results.values() for r in rs) for s in STAGES}
    busy = sum(stages.values())
    n_sub = max(len(v) for v in chunks.values())
    print(f"\n{label}: {len(chunks)} cameras x {frames // len(chunks)} frames ({n_sub} sub-videos), {workers} workers")
    print(
        f"  total          {frames / wall:8.1f} frames/s   ({wall:.1f} s wall, incl. process start)"
    )
    # Busy time spread over the workers: the rate once processes and models are up.
    steady = frames / (busy / min(workers, len(chunks)))
    print(f"  steady state   {steady:8.1f} frames/s   (stage seconds / workers)")
    for s in STAGES:
        fps = frames / stages[s] if stages[s] > 0 else float("inf")
        print(
            f"  {s:<14} {fps:8.1f} frames/s   {stages[s]:7.2f} s   {100 * stages[s] / busy:5.1f} %"
        )
    print(f"  consumer wait on decode: {1000 * stages['decode'] / frames:.2f} ms/frame")
    return {"frames": frames, "wall": wall, **stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=250, help="frames per camera and sub-video (bgsub)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--demo", type=Path, default=ROOT / "data" / "demo")
    ap.add_argument("--hd", type=Path, default=Path(tempfile.gettempdir()) / "spoton-bench-1080p-2sub")
    ap.add_argument(
        "--torchvision", action="store_true", help="also time Faster R-CNN (random weights)"
    )
    ap.add_argument(
        "--tv-frames", type=int, default=6, help="frames per camera for the torchvision run"
    )
    args = ap.parse_args()

    demo = (
        args.demo
        if (args.demo / "scene.json").exists()
        else ensure_scene(Path(tempfile.gettempdir()) / "spoton-bench-720p", (1280, 720), 10.0)
    )
    hd = ensure_scene(args.hd, (1920, 1080), 20.0)
    cfg = RunConfig(max_frames=args.frames)
    # Baseline in the same run: upright boxes only (no warp of the mask to make verticals columns).
    upright = bench(
        "bgsub 1280x720, upright boxes (rectify off)",
        demo,
        RunConfig(max_frames=args.frames, detector_options={"rectify": False}),
        args.workers,
        args.cameras,
    )
    default = bench("bgsub 1280x720", demo, cfg, args.workers, args.cameras)
    print(
        f"\nrectified / upright detect time at 720p: {default['detect'] / max(upright['detect'], 1e-9):.2f}x, "
        f"total frames/s {default['frames'] / default['wall']:.1f} vs {upright['frames'] / upright['wall']:.1f}"
    )
    bench("bgsub 1920x1080", hd, cfg, args.workers, args.cameras)

    if args.torchvision:
        import torch
        import torchvision

        with tempfile.TemporaryDirectory(prefix="spoton-tv-") as wdir:
            net = torchvision.models.get_model(
                "fasterrcnn_resnet50_fpn_v2", weights=None, weights_backbone=None
            )
            path = Path(wdir) / "random_frcnn.pth"
            torch.save(net.state_dict(), path)
            del net
            tv = RunConfig(
                detector="torchvision",
                detector_options={"weights": str(path), "score_threshold": 0.05},
                max_frames=args.tv_frames,
                batch_size=2,
            )
            r = bench("torchvision Faster R-CNN v2 1280x720", demo, tv, args.workers, args.cameras)
            share = (r["track"] + r["project"]) / r["detect"]
            print(f"  tracking + projection = {100 * share:.2f} % of detect time (target <= 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
