"""Analytics over a task's stored results: floor occupancy, people counts, dwell times."""

import math
from typing import Annotated, Literal

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response

from api import crud
from api.deps import SessionDep, SettingsDep, TaskDep, unprocessable
from api.models import Dwell, DwellTimes, Heatmap, Message, PeopleCount, PeopleCountBin
from spoton.config import load_environment

router = APIRouter(
    prefix="/processing-tasks/{task_id}/analytics", tags=["analytics"], responses={404: {"model": Message}}
)

MAX_CELLS = 1_000_000
MAX_PNG_SIDE = 4096
CellM = Annotated[float, Query(ge=0.01, le=100, description="cell size in metres")]
FrameIdx = Annotated[int, Query(ge=0, le=2**31 - 1)]


@router.get("/heatmap", summary="Floor occupancy grid")
def occupancy_grid(task: TaskDep, session: SessionDep, settings: SettingsDep, cell_m: CellM = 0.5) -> Heatmap:
    """Identity-frames per floor cell of the task's environment (rows along y)."""
    try:
        env = load_environment(task.environment_id, videos_url=task.parameters.get("videos"), settings=settings)
    except (KeyError, ValueError, OSError) as e:
        raise HTTPException(404, f"the floor of task {task.task_id} is unknown: {e}") from None
    nx = max(1, math.ceil(env.plane.width_m / cell_m))
    ny = max(1, math.ceil(env.plane.height_m / cell_m))
    if nx * ny > MAX_CELLS:
        raise unprocessable(("query", "cell_m"), f"makes {nx}x{ny} cells; use a coarser grid (<= {MAX_CELLS})",
                            cell_m)
    grid = np.zeros((ny, nx), np.int64)
    for ix, iy, n in crud.occupancy(session, run_id=task.task_id, cell_m=cell_m, nx=nx, ny=ny):
        grid[iy, ix] = n
    return Heatmap(
        cell_m=cell_m, width_m=env.plane.width_m, height_m=env.plane.height_m,
        counts=grid.tolist(), max=int(grid.max()), total=int(grid.sum()),
    )


@router.get(
    "/heatmap.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "colour-mapped occupancy, y down"}},
    summary="Floor occupancy as an image",
)
def heatmap_png(
    task: TaskDep, session: SessionDep, settings: SettingsDep, cell_m: CellM = 0.5,
    px_per_cell: Annotated[int, Query(ge=1, le=64)] = 8,
) -> Response:
    heat = occupancy_grid(task, session, settings, cell_m)
    grid = np.asarray(heat.counts, np.float64)
    scale = min(px_per_cell, max(1, MAX_PNG_SIDE // max(grid.shape)))
    # log scale: a few busy cells (doorways) would otherwise wash out the rest
    level = np.log1p(grid) / np.log1p(max(heat.max, 1))
    image = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    image = cv2.resize(image, (grid.shape[1] * scale, grid.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return Response(png.tobytes(), media_type="image/png")


@router.get("/people-count", summary="People seen per frame or per second")
def people_count(
    task: TaskDep,
    session: SessionDep,
    bucket: Literal["frame", "second"] = "second",
    start: FrameIdx = 0,
    end: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="last frame, inclusive")] = None,
) -> PeopleCount:
    per_bin = 1.0 if bucket == "frame" else task.fps
    bins = crud.people_count(
        session, run_id=task.task_id, frames_per_bin=per_bin, start=start, end=2**31 - 1 if end is None else end
    )
    return PeopleCount(
        fps=task.fps,
        bucket=bucket,
        bins=[
            PeopleCountBin(start_frame=b.start_frame, end_frame=b.end_frame, time_s=b.bin * per_bin / task.fps,
                           mean=b.mean, max=b.max, unique=b.unique)
            for b in bins
        ],
    )


@router.get("/dwell", summary="How long each identity stayed")
def dwell(task: TaskDep, session: SessionDep) -> DwellTimes:
    return DwellTimes(
        fps=task.fps,
        data=[
            Dwell(global_id=str(p.global_id), first_frame=p.first_frame, last_frame=p.last_frame,
                  dwell_s=(p.last_frame - p.first_frame + 1) / task.fps, visible_s=p.n_frames / task.fps)
            for p in crud.presence(session, run_id=task.task_id)
        ],
    )
