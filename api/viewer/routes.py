"""The browser viewer: its page, its static files, and what it plays.

``GET /viewer`` is the page (``?task=<id>`` opens a task). Static files are
served from a fixed list, never from a client-supplied path. Videos are
addressed by (task, camera, chunk index) and resolved from the task's
environment exactly as the pipeline resolves them, so a client can only ever
read the sub-videos of a task it can see, and only with HTTP ranges.

The page and its static files are open (they hold no data); everything under
``/viewer/api`` needs an API key when keys are configured, as a header or, for
``<video>``/``<img>`` requests that cannot send headers, as ``?token=``.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Lock
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlmodel import col, select

from api.deps import SessionDep, SettingsDep, TaskDep
from api.models import IdentityPosition
from api.routes.environments import resolve_environment
from api.security import check_key
from api.viewer.media import (
    EnvironmentMedia,
    MediaNotFoundError,
    content_type,
    describe_environment,
    image_files,
)
from api.viewer.ranges import RangeNotSatisfiable, parse_range

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The only files /viewer/static serves: a lookup table, so no client path is ever joined.
STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
BLOCK = 256 * 1024
MEDIA_TTL_S = 30.0  # re-discover a task's videos at most this often
NO_CACHE = {"Cache-Control": "no-cache"}  # the page and its code: revalidate (ETag) each load
POSITIONS_PAGE_MAX = 2000  # frames per /positions request
CAMERA_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"

router = APIRouter(tags=["viewer"])


def _presented_key(authorization: str | None, x_api_key: str | None, token: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return token


def require_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=512, description="API key, for media")] = None,
) -> None:
    """The API's key check; ``?token=`` too, as ``<video>`` and ``<img>`` cannot send headers."""
    check_key(
        _presented_key(authorization, x_api_key, token),
        settings.api_keys,
        how="send 'Authorization: Bearer <key>', 'X-API-Key: <key>' or ?token=<key>",
    )


Authorised = Depends(require_key)


class _MediaCache:
    """Per (environment, videos, selection) media description, refreshed after a TTL."""

    def __init__(self, ttl_s: float, size: int = 64) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._items: dict[tuple, tuple[float, EnvironmentMedia]] = {}
        self._lock = Lock()

    def get(self, key: tuple) -> EnvironmentMedia | None:
        with self._lock:
            hit = self._items.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < self.ttl_s else None

    def put(self, key: tuple, media: EnvironmentMedia) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.pop(min(self._items, key=lambda k: self._items[k][0]))
            self._items[key] = (time.monotonic(), media)


def _media_cache(request: Request) -> _MediaCache:
    """The app's cache (on ``app.state``, like everything the API's dependencies hand out)."""
    cache = getattr(request.app.state, "viewer_media", None)
    if cache is None:
        cache = request.app.state.viewer_media = _MediaCache(MEDIA_TTL_S)
    return cache


def _max_frames(parameters: dict[str, Any]) -> int | None:
    """The flow's cap on frames per sub-video: the start request's, else its run config's."""
    value = parameters.get("max_frames")
    if value is None:
        value = (parameters.get("run_config") or {}).get("max_frames")
    return int(value) if value else None


def task_media(task: TaskDep, settings: SettingsDep, request: Request) -> EnvironmentMedia:
    params = task.parameters or {}
    videos = params.get("videos")
    chunks = params.get("chunks")
    max_frames = _max_frames(params)
    key = (task.environment_id, videos, tuple(chunks) if chunks else None, max_frames)
    cache = _media_cache(request)
    cached = cache.get(key)
    if cached is not None:
        return cached
    env = resolve_environment(task.environment_id, videos, settings)
    try:
        media = describe_environment(env, settings.cache_dir, chunks=chunks, max_frames=max_frames)
    except FileNotFoundError as e:
        raise HTTPException(404, f"videos of environment {task.environment_id!r} not found: {e}") from None
    except (OSError, ValueError) as e:
        raise HTTPException(422, f"videos of environment {task.environment_id!r} unusable: {e}") from None
    cache.put(key, media)
    return media


MediaDep = Annotated[EnvironmentMedia, Depends(task_media)]
CameraId = Annotated[str, PathParam(pattern=CAMERA_ID)]
ChunkIndex = Annotated[int, PathParam(ge=0, le=100_000)]


# ------------------------------------------------------------------- page + static


@router.get("/viewer", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_FILES["index.html"], media_type="text/html", headers=NO_CACHE)


@router.get("/viewer/static/{name}", include_in_schema=False)
def static(name: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=content_type(path.name), headers=NO_CACHE)


# ------------------------------------------------------------------------- media


@router.get("/viewer/api/tasks/{task_id}/media", dependencies=[Authorised], summary="What the viewer plays")
def media(task: TaskDep, found: MediaDep) -> dict[str, Any]:
    """Cameras with their chunks (frame counts, offsets on the task's timeline, URLs),
    the floor size and each camera's position and field of view on the floor (metres)."""
    base = f"/viewer/api/tasks/{task.task_id}"
    return {
        "task_id": str(task.task_id),
        "environment_id": found.environment_id,
        "fps": found.fps,
        "total_frames": found.total_frames,
        "plane": {"width_m": found.plane.width_m, "height_m": found.plane.height_m},
        "cameras": [
            {
                "camera_id": cam.camera_id,
                "frames": cam.frames,
                "position_m": cam.position_m,
                "fov_m": [list(p) for p in cam.fov_m],
                "chunks": [
                    {
                        **chunk.to_json(),
                        "url": f"{base}/video/{cam.camera_id}/{chunk.index}"
                        if chunk.kind == "video"
                        else f"{base}/image/{cam.camera_id}/{chunk.index}/{{frame}}",
                    }
                    for chunk in cam.chunks
                ],
            }
            for cam in found.cameras
        ],
    }


@router.get(
    "/viewer/api/tasks/{task_id}/positions",
    dependencies=[Authorised],
    summary="Fused floor positions of every identity over a frame range",
)
def positions(
    task: TaskDep,
    session: SessionDep,
    start: Annotated[int, Query(ge=0, le=2**31 - 1)],
    end: Annotated[int, Query(ge=0, le=2**31 - 1, description="last frame, inclusive")],
) -> dict[str, Any]:
    """The engine's one position per identity and frame (metres), as stored: what the map
    draws, where the tracking feed only has each camera's own projection."""
    if end < start or end - start >= POSITIONS_PAGE_MAX:
        raise HTTPException(422, f"need start <= end < start + {POSITIONS_PAGE_MAX}, got {start}..{end}")
    rows = session.exec(
        select(IdentityPosition.frame_idx, IdentityPosition.global_id, IdentityPosition.map_x, IdentityPosition.map_y)
        .where(
            IdentityPosition.run_id == task.task_id,
            col(IdentityPosition.frame_idx) >= start,
            col(IdentityPosition.frame_idx) <= end,
        )
        .order_by(col(IdentityPosition.frame_idx), col(IdentityPosition.global_id))
    ).all()
    frames: dict[str, list] = {}
    for frame_idx, global_id, x, y in rows:
        frames.setdefault(str(frame_idx), []).append([str(global_id), x, y])
    return {"start": start, "end": end, "frames": frames}


def _chunk(found: EnvironmentMedia, camera_id: str, chunk_index: int, kind: str):
    try:
        chunk = found.chunk(camera_id, chunk_index)
    except MediaNotFoundError as e:
        raise HTTPException(404, str(e)) from None
    if chunk.kind != kind:
        raise HTTPException(404, f"chunk {chunk_index} of camera {camera_id!r} is not {kind}")
    return chunk


def _file_body(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0:
            block = f.read(min(BLOCK, length))
            if not block:
                return
            length -= len(block)
            yield block


def ranged_file(path: str, request: Request) -> Response:
    """A local file as 200 or 206 (one range), 416 when the range cannot be served."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HTTPException(404, "video file has gone missing; reopen the task") from None
    size = st.st_size
    etag = f'"{st.st_mtime_ns:x}-{size:x}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=3600",
        "Content-Type": content_type(path),
    }
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag:
        header = None  # the client's partial copy is of another version: send it all
    try:
        wanted = parse_range(header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        start, length, status = 0, size, 200
    else:
        start, length, status = wanted.start, wanted.length, 206
        headers["Content-Range"] = wanted.content_range(size)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(_file_body(path, start, length), status_code=status, headers=headers)


@router.api_route(
    "/viewer/api/tasks/{task_id}/video/{camera_id}/{chunk_index}",
    methods=["GET", "HEAD"],
    dependencies=[Authorised],
    summary="One sub-video of a task's camera, with HTTP range support",
)
def video(found: MediaDep, camera_id: CameraId, chunk_index: ChunkIndex, request: Request) -> Response:
    return ranged_file(_chunk(found, camera_id, chunk_index, "video").path, request)


@router.get(
    "/viewer/api/tasks/{task_id}/image/{camera_id}/{chunk_index}/{frame}",
    dependencies=[Authorised],
    summary="One frame of an image-sequence camera",
)
def image(
    found: MediaDep,
    camera_id: CameraId,
    chunk_index: ChunkIndex,
    frame: Annotated[int, PathParam(ge=0, le=10_000_000)],
) -> Response:
    chunk = _chunk(found, camera_id, chunk_index, "images")
    files = image_files(chunk.path)
    if frame >= min(len(files), chunk.frames):
        raise HTTPException(404, f"chunk {chunk_index} of camera {camera_id!r} has {chunk.frames} frames")
    return FileResponse(files[frame], headers={"Cache-Control": "private, max-age=3600"})
