"""Cross-camera identity benchmark: MTMC IDF1, association time per chunk, scaling.

Tracklets come from a synthetic scene's ground truth (``--scene``, default the
hard scene ``data/hard``): every GT box becomes a detection (with pixel noise
proportional to its height), every camera's view of a person a tracklet, cut
at random points into several tracker ids with a few lost frames between them
(id switches, re-acquisitions), and cut at every sub-video boundary as the
pipeline does. Or they come from a finished run (``--run RUN_DIR``), scored
against ``--gt``.

Scaling: the scene is replicated k times side by side on the floor (k times as
many tracklets alive at once) and k times back to back in one chunk (k times
as long), and association time is printed for k = 1, 2, 4.

Plain prints of figures, not a test: ``python bench/identities.py [--scene DIR]``.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spoton.associate import AssociationConfig, IdentityGallery, associate  # noqa: E402
from spoton.config import Environment, load_calibration, load_environment  # noqa: E402
from spoton.geometry import GroundPlane  # noqa: E402
from spoton.metrics import evaluate_mtmc, read_mot, run_store  # noqa: E402
from spoton.store import read_tracklets  # noqa: E402
from spoton.types import Tracklet  # noqa: E402

TRACK_ID_STRIDE = 100_000  # spoton.track.TRACK_ID_STRIDE: chunk_index * stride + local id


def scene_environment(scene: Path) -> tuple[Environment, list[int]]:
    """The scene's environment (calibration from its own folder) and its chunk start frames."""
    info = json.loads((scene / "scene.json").read_text())
    spec = info["spec"]
    env_id = spec["env"]
    plane, calib = load_calibration(scene / "homography_data" / f"{env_id}.json")
    cams = tuple(sorted(calib))
    env = Environment(env_id, cams, plane, calib, str(scene), f"video_{env_id}", fps=float(spec["fps"]))
    bounds = np.cumsum([0, *info["sub_video_frames"]]).tolist()
    return env, bounds


def read_gt(scene: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: read_mot(p) for p in sorted((scene / "gt").glob("*/gt.txt"))}


def fragmented_tracklets(
    gt: dict[str, pd.DataFrame],
    env: Environment,
    bounds: list[int],
    rng: np.random.Generator,
    switches_per_min: float = 3.0,
    box_noise: float = 0.02,
) -> tuple[list[list[Tracklet]], dict[tuple[str, int], int], dict[str, pd.DataFrame]]:
    """Per-chunk tracklets from GT boxes, their true person, and the boxes as detections."""
    chunks: list[list[Tracklet]] = [[] for _ in range(len(bounds) - 1)]
    truth: dict[tuple[str, int], int] = {}
    dets: dict[str, pd.DataFrame] = {}
    for cam, df in gt.items():
        df = df[df["conf"] != 0].sort_values(["id", "frame"])
        frame = df["frame"].to_numpy(np.int64) - 1
        pid = df["id"].to_numpy(np.int64)
        h = df["h"].to_numpy(np.float64)
        xyxy = np.column_stack([df["x"], df["y"], df["x"] + df["w"], df["y"] + df["h"]]).astype(np.float64)
        xyxy += rng.normal(0.0, 1.0, xyxy.shape) * (box_noise * h)[:, None]
        chunk = np.searchsorted(bounds, frame, side="right") - 1
        # A new tracklet starts at a new person, a chunk boundary, a gap, or a random switch.
        p_switch = switches_per_min / 60.0 / env.fps
        cut = np.ones(len(df), bool)
        cut[1:] = (pid[1:] != pid[:-1]) | (chunk[1:] != chunk[:-1]) | (frame[1:] != frame[:-1] + 1)
        cut |= rng.random(len(df)) < p_switch
        lost = cut & (rng.random(len(df)) < 0.5)  # half the switches also lose a few frames
        keep = np.ones(len(df), bool)
        for i in np.flatnonzero(lost):
            keep[i : i + int(rng.integers(1, 10))] = False
        seg = np.cumsum(cut) - 1
        geo = env.calibration[cam]
        map_xy = geo.boxes_to_map(xyxy, env.plane)
        local = {}
        rows_out = []
        for s in np.unique(seg[keep]):
            idx = np.flatnonzero((seg == s) & keep)
            c = int(chunk[idx[0]])
            local[c] = local.get(c, 0) + 1
            tid = c * TRACK_ID_STRIDE + local[c]
            t = Tracklet(cam, tid, frame[idx], xyxy[idx], map_xy[idx], np.ones(idx.size))
            chunks[c].append(t)
            truth[t.key] = int(pid[idx[0]])
            rows_out.append(pd.DataFrame({"frame_idx": frame[idx], "track_id": tid, "person": pid[idx]}))
            rows_out[-1][["x1", "y1", "x2", "y2"]] = xyxy[idx]
        dets[cam] = pd.concat(rows_out, ignore_index=True)
    return chunks, truth, dets


def add_appearance(
    chunks: list[list[Tracklet]], scene: Path, env: Environment, embedder_name: str, every: int = 5
) -> list[list[Tracklet]]:
    """Mean appearance of each tracklet from the scene's videos, every ``every``-th frame,
    as the per-camera pipeline computes it (spoton.pipeline)."""
    import cv2

    from spoton.embed import make_embedder

    embedder = make_embedder(embedder_name, device="cpu")
    wanted: dict[tuple[str, int], list[tuple[int, int, np.ndarray]]] = {}
    flat = [t for c in chunks for t in c]
    for i, t in enumerate(flat):
        for k in range(0, len(t), every):
            wanted.setdefault((t.camera_id, int(t.frame_idx[k])), []).append((i, k, t.xyxy[k]))
    sums = np.zeros((len(flat), embedder.dim))
    for cam in sorted({t.camera_id for t in flat}):
        frame_idx = 0
        for video in sorted((scene / env.video_dir / cam).glob("sub_video_*.mp4")):
            cap = cv2.VideoCapture(str(video))
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                items = wanted.get((cam, frame_idx))
                if items:
                    emb = embedder.embed(frame, np.stack([b for _, _, b in items]))
                    for (i, _, _), e in zip(items, emb, strict=True):
                        sums[i] += e
                frame_idx += 1
            cap.release()
    out, pos = [], 0
    for c in chunks:
        out.append([replace(t, embedding=sums[pos + j].astype(np.float32)) for j, t in enumerate(c)])
        pos += len(c)
    return out


def run_chunks(
    chunks: list[list[Tracklet]], env: Environment, config: AssociationConfig
) -> tuple[dict[tuple[str, int], int], list[dict]]:
    gallery = IdentityGallery()
    ids: dict[tuple[str, int], int] = {}
    stats = []
    for tracklets in chunks:
        res = associate(tracklets, env, config, gallery)
        gallery = res.gallery
        ids.update(res.global_ids)
        stats.append(res.stats)
    return ids, stats


def mtmc(dets: dict[str, pd.DataFrame], ids: dict[tuple[str, int], int], gt: dict[str, pd.DataFrame]) -> dict:
    pred = {}
    for cam, df in dets.items():
        # A tracklet without an id is one the association found to be no person: not a result.
        gid = np.array([ids.get((cam, int(t)), 0) for t in df["track_id"]], np.int64)
        pred[cam] = df.assign(global_id=gid)[gid > 0]
    return evaluate_mtmc(pred, gt)


def purity(ids: dict[tuple[str, int], int], truth: dict[tuple[str, int], int]) -> tuple[int, int, int]:
    """(identities, true persons, identities holding more than one person)."""
    owners: dict[int, set[int]] = {}
    for key, g in ids.items():
        owners.setdefault(g, set()).add(truth[key])
    return len(owners), len(set(truth.values())), sum(len(v) > 1 for v in owners.values())


def replicate_space(chunks: list[list[Tracklet]], env: Environment, k: int) -> tuple[list[list[Tracklet]], Environment]:
    """k copies of the scene side by side on a k-times wider floor, cameras copied too."""
    gap = env.plane.width_m + 10.0
    calib = dict(env.calibration)
    out = [list(c) for c in chunks]
    for r in range(1, k):
        for cam, geo in env.calibration.items():
            shift = np.array([[1.0, 0.0, r * gap], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            calib[f"{cam}r{r}"] = replace(geo, camera_id=f"{cam}r{r}", H=shift @ geo.H, K=None, R=None, t=None)
        for c, tracklets in enumerate(chunks):
            out[c] += [replace(t, camera_id=f"{t.camera_id}r{r}", map_xy=t.map_xy + [r * gap, 0.0]) for t in tracklets]
    plane = GroundPlane(env.plane.width_m + (k - 1) * gap, env.plane.height_m)
    return out, replace(env, cameras=tuple(sorted(calib)), calibration=calib, plane=plane)


def replicate_time(tracklets: list[Tracklet], k: int, span: int) -> list[Tracklet]:
    """One chunk made of k back-to-back copies of ``tracklets`` (span frames each)."""
    return [
        replace(t, track_id=t.track_id + r * 10 * TRACK_ID_STRIDE, frame_idx=t.frame_idx + r * span)
        for r in range(k)
        for t in tracklets
    ]


def bench_scene(
    scene: Path,
    seed: int,
    config: AssociationConfig,
    switches_per_min: float,
    box_noise: float,
    appearance: str | None,
) -> None:
    env, bounds = scene_environment(scene)
    gt = read_gt(scene)
    rng = np.random.default_rng(seed)
    chunks, truth, dets = fragmented_tracklets(gt, env, bounds, rng, switches_per_min, box_noise)
    if appearance:
        t0 = time.perf_counter()
        chunks = add_appearance(chunks, scene, env, appearance)
        print(f"{appearance} embeddings of every 5th box: {time.perf_counter() - t0:.1f} s")
    n = sum(len(c) for c in chunks)
    print(f"scene {scene}: {len(env.cameras)} cameras, {bounds[-1]} frames, {len(chunks)} chunks, {n} tracklets")
    ids, stats = run_chunks(chunks, env, config)
    for i, s in enumerate(stats):
        print(
            f"  chunk {i}: {s['tracklets']} tracklets -> {s['clusters']} identities "
            f"({s['gallery_matches']} continued) in {s['seconds'] * 1000:.0f} ms"
        )
    figures = mtmc(dets, ids, gt)
    n_ids, n_true, impure = purity(ids, truth)
    print(f"  MTMC IDF1 {figures['idf1']:.4f}  IDP {figures['idp']:.4f}  IDR {figures['idr']:.4f}")
    print(f"  identities predicted {n_ids} / true {n_true}; identities mixing people: {impure}")

    print("scaling (one chunk of the scene, replicated):")
    base_chunk = max(chunks, key=len)
    span = bounds[-1]
    for mode in ("space", "time"):
        ref = None
        for k in (1, 2, 4):
            if mode == "space":
                (rep,), env_k = replicate_space([base_chunk], env, k)
            else:
                rep, env_k = replicate_time(base_chunk, k, span), env
            t0 = time.perf_counter()
            res = associate(rep, env_k, config)
            sec = time.perf_counter() - t0
            ref = ref or sec
            print(
                f"  {mode} x{k}: {len(rep):5d} tracklets, {res.stats['clusters']:4d} identities, "
                f"{sec * 1000:7.0f} ms  ({sec / ref:.2f}x time for {k}x tracklets)"
            )


def bench_run(run: Path, gt_dir: Path, environment: str | None, config: AssociationConfig) -> None:
    store = run_store(run)
    files = store.list()
    pairs = sorted({tuple(f.split("/")[:2]) for f in files if f.count("/") == 2 and f.endswith("/tracks.parquet")})
    chunk_names = sorted({c for _, c in pairs})
    manifest = store.read_json("manifest.json") if "manifest.json" in files else {}
    # A self-describing location (video_<env>/, homography_data/<env>.json) needs its URL.
    env = load_environment(environment or manifest.get("environment_id"), manifest.get("videos_url"))
    chunks = [[t for cam, c in pairs if c == name for t in read_tracklets(store, cam, name)] for name in chunk_names]
    ids, stats = run_chunks(chunks, env, config)
    stage = manifest.get("stage_seconds", {})
    for name, s in zip(chunk_names, stats, strict=True):
        # Per-camera tracking of the chunk: every camera's stage seconds (decode .. project).
        tracking = sum(sum(v.values()) for k, v in stage.items() if k.endswith(f"/{name}") and isinstance(v, dict))
        share = f", {s['seconds'] / tracking:.2%} of its per-camera tracking ({tracking:.1f} s)" if tracking else ""
        ms = s["seconds"] * 1000
        print(f"  {name}: {s['tracklets']} tracklets -> {s['clusters']} identities in {ms:.0f} ms{share}")
    gt = read_gt(gt_dir)
    dets = {}
    for cam in sorted({cam for cam, _ in pairs}):
        df = pd.concat([store.read_parquet(f"{cam}/{c}/tracks.parquet") for cc, c in pairs if cc == cam])
        dets[cam] = df
    print(f"  MTMC IDF1 {mtmc(dets, ids, gt)['idf1']:.4f}; identities {len(set(ids.values()))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", type=Path, default=Path("data/hard"))
    parser.add_argument("--run", type=Path, default=None, help="score a finished run's tracks instead")
    parser.add_argument("--gt", type=Path, default=None, help="ground-truth folder for --run")
    parser.add_argument("--environment", default=None, help="environment of --run (default: manifest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--switches-per-min", type=float, default=3.0, help="simulated id switches")
    parser.add_argument("--box-noise", type=float, default=0.02, help="box noise, fraction of height")
    parser.add_argument("--appearance", default=None, help="embedder run on the videos, e.g. color")
    parser.add_argument("--config", type=json.loads, default={}, help="AssociationConfig overrides, JSON")
    args = parser.parse_args(argv)
    config = AssociationConfig.model_validate(args.config)
    if args.run is not None:
        if args.gt is None:
            parser.error("--run needs --gt (a folder with gt/<camera>/gt.txt)")
        bench_run(args.run, args.gt, args.environment, config)
        return 0
    if not (args.scene / "scene.json").is_file():
        parser.error(f"{args.scene} is no generated scene: make one with `spoton synth` or pass --scene")
    bench_scene(args.scene, args.seed, config, args.switches_per_min, args.box_noise, args.appearance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
