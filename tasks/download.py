"""download_videos: an environment's sub-videos in the local cache, probed and placed in time."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

from fsspec.implementations.local import LocalFileSystem
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spoton.config import get_settings, load_environment
from spoton.sources import (
    LocalVideo,
    VideoInfo,
    chunk_name,
    fetch,
    filesystem,
    list_chunks,
    probe,
)
from tasks.policy import RETRY
from tasks.refs import SceneRef, VideoRef

FETCH_THREADS = 8  # downloads are network-bound: overlap them, a few at a time


def _selected(available: dict[str, list[str]], chunks: list[str] | None) -> set[str]:
    names = {chunk_name(url) for urls in available.values() for url in urls}
    if chunks is None:
        return names
    unknown = sorted(set(chunks) - names)
    if unknown:
        raise ValueError(f"unknown chunks {unknown}; this environment has {sorted(names)}")
    return set(chunks)


@task(
    name="download_videos",
    task_run_name="download_videos[{environment_id}]",
    timeout_seconds=6 * 3600,
    # Always runs: fetch() itself skips unchanged files, and a remote video that
    # changed must be seen as changed, which a cached answer would hide.
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY,
)
def download_videos(
    environment_id: str,
    videos: str | None = None,
    chunks: list[str] | None = None,
    max_frames: int | None = None,
) -> SceneRef:
    """Fetch the selected chunks of every camera and give each its place on the timeline.

    A chunk's ``frame_offset`` counts the frames processed before it (``max_frames``
    caps each chunk, as in ``spoton.pipeline.run_cameras``), so earlier chunks are
    fetched and probed too when only later ones are selected.
    """
    settings = get_settings()
    env = load_environment(environment_id, videos)
    available = {camera: list_chunks(env, camera) for camera in env.cameras}
    wanted = _selected(available, chunks)
    # Everything up to the last wanted chunk of each camera (offsets need their
    # lengths) and the one after it: a chunk's neighbours give its background
    # model context, so its results do not depend on which chunks were selected.
    needed = []
    for camera, urls in available.items():
        last = max((i for i, u in enumerate(urls) if chunk_name(u) in wanted), default=-1)
        upto = last + 2 if last >= 0 else 0
        needed += [(camera, i, url) for i, url in enumerate(urls[:upto])]

    def fetch_and_probe(url: str) -> tuple[LocalVideo, VideoInfo]:
        local = fetch(url, settings.cache_dir)
        return local, probe(local.path)

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        fetched = list(pool.map(fetch_and_probe, [url for _, _, url in needed]))

    logger = get_run_logger()
    rates = {round(info.fps, 3) for _, info in fetched if info.fps > 0}
    if len(rates) == 1 and (rate := rates.pop()) != env.fps:
        # As load_environment does for local videos: the footage's own frame rate wins,
        # here for remote ones too (time thresholds of tracking and association use it).
        logger.info("videos run at %g fps (environment: %g): using the videos' rate", rate, env.fps)
        env = dataclasses.replace(env, fps=rate)
    elif len(rates) > 1:
        logger.warning("cameras disagree on frame rate %s: keeping the environment's %g fps", sorted(rates), env.fps)

    offsets = dict.fromkeys(env.cameras, 0)
    refs, context = [], []
    for (camera, index, url), (local, info) in zip(needed, fetched, strict=True):
        name = chunk_name(url)
        ref = VideoRef(
            camera_id=camera,
            chunk=name,
            chunk_index=index,
            url=url,
            path=str(local.path),
            content_key=local.content_key,
            frames=info.frames,
            frame_offset=offsets[camera],
        )
        (refs if name in wanted else context).append(ref)
        offsets[camera] += min(info.frames, max_frames) if max_frames else info.frames
    refs.sort(key=lambda v: (v.chunk_index, env.cameras.index(v.camera_id)))

    # Scoring reads ground truth from local disk: a gt/ folder next to local videos.
    fs, root = filesystem(env.videos_url)
    gt_dir = f"{root.rstrip('/')}/gt"
    gt_url = gt_dir if isinstance(fs, LocalFileSystem) and fs.isdir(gt_dir) else None
    logger.info(
        "%d sub-videos of %d cameras ready (%d frames)%s",
        len(refs),
        len(env.cameras),
        sum(v.frames for v in refs),
        f"; ground truth in {gt_url}" if gt_url else "",
    )
    return SceneRef(env, env.videos_url, tuple(refs), gt_url, tuple(context))
