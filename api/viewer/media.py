"""What the viewer plays: per camera, its chunks with frame counts and timeline offsets.

FastAPI-free. Chunks are listed, fetched and probed exactly as the flow's
``download_videos`` does (``list_chunks``, ``fetch``, ``probe``; ``max_frames``
caps each chunk), so the viewer's global frame (chunk ``frame_offset`` + local
frame) is the pipeline's ``frame_idx``. Also a small floor-map summary per
camera: where it stands and which part of the floor it sees, in metres.
"""

import functools
import mimetypes
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from spoton.config import Environment
from spoton.geometry import CameraGeometry, GroundPlane
from spoton.sources import chunk_name, fetch, list_chunks, probe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # spoton.sources.IMAGE_EXTENSIONS
IMAGE_SAMPLES = 64  # floor view: image pixels sampled per side


class MediaNotFoundError(LookupError):
    """A camera or chunk the environment does not have."""


@dataclass(frozen=True)
class ChunkMedia:
    index: int  # chunk_index: position among the camera's chunks
    name: str  # "sub_video_01", or "frames" for an image folder
    path: str  # local file or image folder (remote sources via the pipeline's cache)
    kind: str  # "video" | "images"
    frames: int  # frames on the task's timeline (capped by max_frames)
    fps: float
    width: int
    height: int
    frame_offset: int
    selected: bool  # processed by the task (False: outside its ``chunks`` selection)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "frames": self.frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "frame_offset": self.frame_offset,
            "selected": self.selected,
        }


@dataclass(frozen=True)
class CameraMedia:
    camera_id: str
    chunks: tuple[ChunkMedia, ...]
    position_m: tuple[float, float] | None
    fov_m: tuple[tuple[float, float], ...]  # convex outline of the floor it sees; () if unknown

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.chunks)


@dataclass(frozen=True)
class EnvironmentMedia:
    environment_id: str
    fps: float
    plane: GroundPlane
    cameras: tuple[CameraMedia, ...]

    @property
    def total_frames(self) -> int:
        return max((c.frames for c in self.cameras), default=0)

    def camera(self, camera_id: str) -> CameraMedia:
        for cam in self.cameras:
            if cam.camera_id == camera_id:
                return cam
        raise MediaNotFoundError(f"environment {self.environment_id!r} has no camera {camera_id!r}")

    def chunk(self, camera_id: str, chunk_index: int) -> ChunkMedia:
        chunks = self.camera(camera_id).chunks
        if not 0 <= chunk_index < len(chunks):
            raise MediaNotFoundError(f"camera {camera_id!r} has {len(chunks)} chunks, no chunk {chunk_index}")
        return chunks[chunk_index]


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def image_files(folder: str) -> list[Path]:
    """Frames of a local image-sequence chunk, in the pipeline's (natural name) order."""
    files = [
        p
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@functools.lru_cache(maxsize=1024)
def _probe_file(path: str, _size: int, _mtime_ns: int) -> tuple[int, float, int, int]:
    """Probe once per file version: size and mtime are part of the cache key."""
    info = probe(Path(path))
    return int(info.frames), float(info.fps), int(info.width), int(info.height)


def _probe_chunk(url: str, cache_dir: Path) -> tuple[str, str, int, float, int, int]:
    """(kind, served path, frames, fps, width, height) of one chunk."""
    local = Path(fetch(url, cache_dir).path)
    if local.is_dir():
        info = probe(local)
        return "images", str(local), info.frames, info.fps, info.width, info.height
    st = os.stat(local)
    frames, fps, w, h = _probe_file(str(local), st.st_size, st.st_mtime_ns)
    return "video", str(local), frames, fps, w, h


def floor_view(
    geometry: CameraGeometry, plane: GroundPlane, image_size: tuple[int, int] | None
) -> tuple[tuple[float, float], ...]:
    """Convex outline (metres) of the floor the camera sees.

    Image pixels are projected forward (image -> floor, the direction the pipeline
    uses), so pixels above the horizon drop out as NaN; what lands on the plane
    is the visible floor, and both it and the plane are convex.
    """
    size = geometry.image_size or image_size
    if not size or not all(size):
        return ()
    w, h = size
    xs, ys = np.meshgrid(np.linspace(0, w - 1, IMAGE_SAMPLES), np.linspace(0, h - 1, IMAGE_SAMPLES))
    floor = geometry.to_map(np.stack([xs.ravel(), ys.ravel()], axis=1))
    floor = floor[np.all(np.isfinite(floor), axis=1)]
    floor = np.clip(floor, 0.0, [plane.width_m, plane.height_m])
    if len(floor) < 3:
        return ()
    hull = cv2.convexHull(floor.astype(np.float32)).reshape(-1, 2)
    if len(hull) < 3:
        return ()
    return tuple((round(float(x), 3), round(float(y), 3)) for x, y in hull)


def camera_position(geometry: CameraGeometry | None) -> tuple[float, float] | None:
    pos = geometry.position_m() if geometry is not None else None
    if pos is None or not np.all(np.isfinite(pos[:2])):
        return None
    return round(float(pos[0]), 3), round(float(pos[1]), 3)


def describe_environment(
    env: Environment,
    cache_dir: Path,
    *,
    chunks: Sequence[str] | None = None,
    max_frames: int | None = None,
) -> EnvironmentMedia:
    """Every camera's chunks in pipeline order, with frame counts, offsets and floor view.

    ``chunks`` (names) marks the chunks a task processed; ``max_frames`` caps each
    chunk as the pipeline did, so offsets match the task's ``frame_idx``.
    """
    wanted = set(chunks) if chunks else None
    cameras: list[CameraMedia] = []
    for camera_id in env.cameras:
        found: list[ChunkMedia] = []
        offset = 0
        for index, url in enumerate(list_chunks(env, camera_id)):
            kind, path, frames, fps, w, h = _probe_chunk(url, cache_dir)
            if max_frames:
                frames = min(frames, max_frames)
            name = chunk_name(url)
            selected = wanted is None or name in wanted
            found.append(ChunkMedia(index, name, path, kind, frames, fps or env.fps, w, h, offset, selected))
            offset += frames
        geometry = env.calibration.get(camera_id)
        size = (found[0].width, found[0].height) if found else None
        fov = floor_view(geometry, env.plane, size) if geometry is not None else ()
        cameras.append(CameraMedia(camera_id, tuple(found), camera_position(geometry), fov))
    fps = next((c.fps for cam in cameras for c in cam.chunks if c.kind == "video"), env.fps)
    return EnvironmentMedia(env.environment_id, fps, env.plane, tuple(cameras))
