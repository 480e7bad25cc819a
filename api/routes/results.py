"""Stored results of a task: frames as wire payloads, identities and their trajectories."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam

from api import crud
from api.deps import SessionDep, TaskDep, unprocessable
from api.models import FramesPage, IdentitiesPage, IdentityDetail, IdentitySummary, Message

router = APIRouter(prefix="/processing-tasks/{task_id}", tags=["results"], responses={404: {"model": Message}})

FrameIdx = Annotated[int, Query(ge=0, le=2**31 - 1)]
GlobalId = Annotated[int, PathParam(ge=-(2**63), le=2**63 - 1)]


@router.get("/frames", summary="tracking_update payloads of a frame range, paged")
def frames(
    task: TaskDep,
    session: SessionDep,
    start: FrameIdx = 0,
    end: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="last frame, inclusive")] = None,
    camera_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="frames per page")] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,10}$", description="next_cursor of the page before")] = None,
) -> FramesPage:
    if end is not None and end < start:
        raise unprocessable(("query", "end"), f"must not be before start ({start})", end)
    if cursor is not None and int(cursor) > 2**31 - 1:
        raise unprocessable(("query", "cursor"), "is not a cursor this API returned (frame index too large)", cursor)
    first = max(start, int(cursor)) if cursor is not None else start
    items, following = crud.frame_payloads(
        session, run_id=task.task_id, scene_id=task.environment_id, start=first, end=end,
        camera_id=camera_id, limit=limit,
    )
    return FramesPage(items=items, next_cursor=None if following is None else str(following))


@router.get("/identities", summary="Every identity of the task, with where and when it was seen")
def identities(
    task: TaskDep,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> IdentitiesPage:
    rows, count = crud.identities(session, run_id=task.task_id, offset=offset, limit=limit)
    return IdentitiesPage(
        data=[
            IdentitySummary(global_id=str(r.global_id), first_frame=r.first_frame, last_frame=r.last_frame,
                            cameras=r.cameras, n_detections=r.n_detections)
            for r in rows
        ],
        count=count,
    )


@router.get("/identities/{global_id}", summary="One identity: floor trajectory and camera appearances")
def identity(task: TaskDep, session: SessionDep, global_id: GlobalId) -> IdentityDetail:
    appearances = crud.identity_appearances(session, run_id=task.task_id, global_id=global_id)
    trajectory = crud.identity_trajectory(session, run_id=task.task_id, global_id=global_id)
    if not appearances and not trajectory:
        raise HTTPException(404, f"task {task.task_id} has no identity {global_id}")
    frames = [a.first_frame for a in appearances] + [p.frame_idx for p in trajectory]
    last = [a.last_frame for a in appearances] + [p.frame_idx for p in trajectory]
    # validated from plain data in one call: an hour's trajectory is 90,000 points
    return IdentityDetail.model_validate({
        "global_id": str(global_id),
        "first_frame": min(frames),
        "last_frame": max(last),
        "cameras": [a.camera_id for a in appearances],
        "n_detections": sum(a.n_detections for a in appearances),
        "trajectory": [
            {"frame_idx": p.frame_idx, "map_x": p.map_x, "map_y": p.map_y, "n_cameras": p.n_cameras}
            for p in trajectory
        ],
        "appearances": [
            {"camera_id": a.camera_id, "first_frame": a.first_frame, "last_frame": a.last_frame,
             "n_detections": a.n_detections, "track_ids": a.track_ids}
            for a in appearances
        ],
    })
