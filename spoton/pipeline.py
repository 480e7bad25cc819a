"""Per-camera processing of one sub-video: decode, detect, track, embed, project, write.

``process_camera_chunk`` is a pure function of its inputs: the same video,
calibration and RunConfig give the same tracks.parquet and embeddings.npz
bytes. ``run_cameras`` is the engine-only runner (no Prefect) that processes
cameras in parallel processes, used by benchmarks and scripts.

A corrupt video keeps what was decoded before the corruption: those frames
are tracked and written, then the ``CorruptVideoError`` is re-raised for the
orchestrator to report.

Options read here besides the models' own: ``embedder_options["sample_every"]``
(embed each track every k-th frame, default 5) and the clean-up knobs in
``tracker_options`` (see ``spoton.track.PostprocessConfig``).
"""

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spoton.config import Environment, RunConfig, get_settings
from spoton.detect import calibrated_size, make_detector
from spoton.embed import make_embedder
from spoton.sources import CorruptVideoError, FrameReader, chunk_name, probe
from spoton.store import (
    TRACKS_COLUMNS,
    RunStore,
    embeddings_path,
    tracks_df_from_frames,
    tracks_path,
)
from spoton.track import Appearance, CameraTracker, postprocess_tracks, split_tracker_options
from spoton.types import FrameTracks

STAGES = ("decode", "detect", "track", "embed", "project")
DEFAULT_SAMPLE_EVERY = 5


@dataclass(frozen=True)
class CameraChunkResult:
    camera_id: str
    chunk: str
    chunk_index: int
    frame_offset: int
    frames: int
    n_tracks: int
    tracks_url: str
    embeddings_url: str
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Wall seconds per stage."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - t0
        return now


def _track_appearance(
    samples: Appearance, kept: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """embeddings.npz arrays: every kept track, its mean appearance, its sample count.

    A track without samples (only possible when no embedder row was ever
    non-zero) keeps a zero row and n_samples 0.
    """
    ids = np.sort(np.asarray(kept, np.int64))
    emb = np.zeros((ids.shape[0], dim), np.float32)
    n = np.zeros(ids.shape[0], np.int64)
    s_ids, s_mean, s_n = samples.means()
    pos = np.searchsorted(ids, s_ids)
    hit = (pos < ids.shape[0]) & (ids[np.minimum(pos, max(ids.shape[0] - 1, 0))] == s_ids)
    emb[pos[hit]] = s_mean[hit]
    n[pos[hit]] = s_n[hit]
    return ids, emb, n


def process_camera_chunk(
    env: Environment,
    camera_id: str,
    video_path: Path | str,
    *,
    chunk: str,
    chunk_index: int,
    frame_offset: int,
    config: RunConfig,
    store: RunStore,
    progress: Callable[[int, int], None] | None = None,
    context: Sequence[Path | str] = (),
) -> CameraChunkResult:
    """Track one camera's sub-video and write its tracks.parquet and embeddings.npz.

    ``context``: local paths of the same camera's neighbouring sub-videos (the
    one before and after); detectors that model the scene (bgsub's background)
    look at them too. Results still depend only on these videos' contents.
    """
    if camera_id not in env.calibration:
        raise ValueError(
            f"camera {camera_id!r} has no calibration in environment {env.environment_id!r}"
        )
    if chunk_index < 0 or frame_offset < 0:
        raise ValueError(
            f"chunk_index and frame_offset must be >= 0, got {chunk_index} and {frame_offset}"
        )
    geometry = env.calibration[camera_id]
    weights_dir = get_settings().weights_dir
    stages = _Stages()
    total = probe(video_path).frames
    if config.max_frames is not None:
        total = min(total, config.max_frames)

    t0 = time.perf_counter()
    detector_options = dict(config.detector_options)
    if config.detector.strip().lower() == "bgsub":
        # Background samples of each sub-video are drawn once per machine, not once per neighbour.
        detector_options.setdefault("sample_cache", get_settings().cache_dir / "bg-samples")
    detector = make_detector(
        config.detector,
        geometry=geometry,
        plane=env.plane,
        weights_dir=weights_dir,
        device=config.device,
        **detector_options,
    )
    prepare = getattr(detector, "prepare", None)
    if prepare is not None:  # bgsub builds its background, mot aligns its frame cursor
        prepare(video_path, frame_offset=frame_offset, context=tuple(context))
    t0 = stages.add("detect", t0)
    embedder_options = dict(config.embedder_options)
    sample_every = embedder_options.pop("sample_every", DEFAULT_SAMPLE_EVERY)
    embedder = make_embedder(
        config.embedder, weights_dir=weights_dir, device=config.device, **embedder_options
    )
    for_camera = getattr(embedder, "for_camera", None)
    if for_camera is not None:  # e.g. colour crops that follow the camera's slant
        embedder = for_camera(geometry)
    t0 = stages.add("embed", t0)
    tracker_options, cleanup = split_tracker_options(config.tracker_options)
    tracker = CameraTracker(
        config.tracker,
        tracker_options,
        camera_id=camera_id,
        chunk_index=chunk_index,
        fps=env.fps,
        embedder=embedder,
        embed_every=sample_every,
        weights_dir=weights_dir,
        device=config.device,
    )
    stages.add("track", t0)

    frames: list[FrameTracks] = []
    done = 0

    def run_batch(batch: list[tuple[int, np.ndarray]]) -> None:
        nonlocal done
        t = time.perf_counter()
        dets = detector.detect_batch([image for _, image in batch])
        t = stages.add("detect", t)
        for (local_idx, image), d in zip(batch, dets, strict=True):
            embed_before = tracker.embed_seconds
            ft = tracker.update(frame_offset + local_idx, image, d)
            embedding_s = tracker.embed_seconds - embed_before
            now = time.perf_counter()
            stages.seconds["track"] += now - t - embedding_s
            stages.seconds["embed"] += embedding_s
            t = now
            frames.append(ft)
        done += len(batch)
        if progress is not None:
            progress(done, max(total, done))

    failure: CorruptVideoError | None = None
    batch: list[tuple[int, np.ndarray]] = []
    with FrameReader(video_path, prefetch=config.prefetch, max_frames=config.max_frames) as reader:
        try:
            for item in reader:
                batch.append(item)
                if len(batch) >= config.batch_size:
                    run_batch(batch)
                    batch = []
        except CorruptVideoError as e:
            failure = e  # finish and write the frames read so far, then report
        if batch:
            run_batch(batch)
        stages.seconds["decode"] = reader.stats.wait_s  # decoding costs the consumer only its waits

    t0 = time.perf_counter()
    tracks, samples = postprocess_tracks(
        tracks_df_from_frames(frames),
        cleanup,
        Appearance.from_frames(frames, embedder.dim),
        size=getattr(detector, "size", None) or calibrated_size(geometry),
        image_size=geometry.image_size,
    )
    t0 = stages.add("track", t0)
    boxes = tracks[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    map_xy = geometry.boxes_to_map(boxes, env.plane) if len(boxes) else np.zeros((0, 2))
    tracks = tracks.assign(map_x=map_xy[:, 0], map_y=map_xy[:, 1])
    tracks = tracks[list(TRACKS_COLUMNS)].astype(TRACKS_COLUMNS).reset_index(drop=True)
    stages.add("project", t0)
    track_ids, emb, n_samples = _track_appearance(
        samples, tracks["track_id"].unique(), embedder.dim
    )

    tracks_rel, emb_rel = tracks_path(camera_id, chunk), embeddings_path(camera_id, chunk)
    store.write_parquet(tracks_rel, tracks)
    store.write_npz(emb_rel, track_id=track_ids, embedding=emb, n_samples=n_samples)
    result = CameraChunkResult(
        camera_id=camera_id,
        chunk=chunk,
        chunk_index=chunk_index,
        frame_offset=frame_offset,
        frames=done,
        n_tracks=int(track_ids.shape[0]),
        tracks_url=store.url(tracks_rel),
        embeddings_url=store.url(emb_rel),
        stage_seconds={k: round(v, 6) for k, v in stages.seconds.items()},
    )
    if failure is not None:
        raise failure
    return result


# ------------------------------------------------------------ parallel runner


def _limit_threads() -> None:
    """One compute thread per worker process: the parallelism comes from the processes.

    torch is not imported for this (3 s per process, and the default weightless
    pipeline never needs it): set before its import, OMP_NUM_THREADS gives it one
    intra-op thread too. NumPy (and SciPy) are imported by now, their OpenBLAS
    pools already started with a thread per core, so those are cut at run time:
    an idle OpenBLAS thread spins after each call, 5 % of a worker's CPU.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import sys

    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # every BLAS and OpenMP pool loaded so far; later ones read the variables
    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def neighbours(paths: Sequence[str], index: int) -> tuple[str, ...]:
    """The sub-videos just before and after ``paths[index]`` (a camera's chunks in order)."""
    return tuple(paths[i] for i in (index - 1, index + 1) if 0 <= i < len(paths))


def _camera_job(
    env: Environment, camera_id: str, paths: Sequence[str], config: RunConfig, store: RunStore
) -> list[CameraChunkResult]:
    """All chunks of one camera, in order; a chunk's offset is the frames before it."""
    out: list[CameraChunkResult] = []
    offset = 0
    for index, path in enumerate(paths):
        res = process_camera_chunk(
            env,
            camera_id,
            path,
            chunk=chunk_name(path),
            chunk_index=index,
            frame_offset=offset,
            config=config,
            store=store,
            context=neighbours(paths, index),
        )
        out.append(res)
        offset += res.frames
    return out


def run_cameras(
    env: Environment,
    chunks_per_camera: Mapping[str, Sequence[Path | str]],
    config: RunConfig,
    store: RunStore,
    workers: int | None = None,
) -> dict[str, list[CameraChunkResult]]:
    """Process every camera's chunks (local paths in chunk order), cameras in parallel.

    Detection is CPU-bound NumPy/OpenCV under the GIL, so cameras run in
    separate processes (``workers``, default one per core), each limited to
    one compute thread so they do not oversubscribe the cores (each reader
    still decodes in its own thread). ``workers=1`` runs in this process.
    Workers are spawned, so a script calling this with ``workers > 1`` needs
    the usual ``if __name__ == "__main__":`` guard.
    """
    cameras = list(chunks_per_camera)
    unknown = [c for c in cameras if c not in env.calibration]
    if unknown:
        raise ValueError(f"cameras {unknown} are not in environment {env.environment_id!r}")
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = {c: [str(p) for p in chunks_per_camera[c]] for c in cameras}
    if n == 1 or len(cameras) <= 1:
        return {c: _camera_job(env, c, jobs[c], config, store) for c in cameras}
    import multiprocessing as mp

    # spawn, not fork: a forked child inherits torch's and OpenCV's thread
    # pools in whatever state the parent left them, which can deadlock.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(n, len(cameras)), mp_context=ctx, initializer=_limit_threads
    ) as pool:
        futures = {c: pool.submit(_camera_job, env, c, jobs[c], config, store) for c in cameras}
        return {c: futures[c].result() for c in cameras}


def camera_tracks(
    results: Mapping[str, list[CameraChunkResult]], store: RunStore
) -> dict[str, pd.DataFrame]:
    """Every chunk's tracks per camera read back from the store, in frame order."""
    out: dict[str, pd.DataFrame] = {}
    for cam, chunks in results.items():
        parts = [store.read_parquet(tracks_path(cam, r.chunk)) for r in chunks]
        out[cam] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out
