"""Processing tasks: start one (a Prefect flow run), list them, follow and cancel one."""

import logging
from typing import Annotated, Any

import redis
import sqlalchemy.exc
from fastapi import APIRouter, HTTPException, Query, Request

from api import crud, publisher, streams
from api.deps import OrchestratorDep, RedisDep, SessionDep, SettingsDep, TaskDep
from api.models import Message, Task, TaskPublic, TasksPublic, TaskStart, TaskStarted, TaskStatusPublic
from api.orchestration import (
    FlowRunNotFoundError,
    NotCancellableError,
    OrchestratorUnavailableError,
    RunState,
)
from api.routes.environments import resolve_environment
from spoton.types import StatusUpdatePayload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/processing-tasks", tags=["processing-tasks"])

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Message, "description": "Prefect (or the database) is unreachable"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message}}


def flow_parameters(body: TaskStart) -> dict[str, Any]:
    """Parameters of the process-environment flow; omitted ones keep the flow's defaults."""
    params: dict[str, Any] = {"environment_id": body.environment_id, "publish": True}
    if body.videos is not None:
        params["videos"] = body.videos
    if body.chunks is not None:
        params["chunks"] = body.chunks
    if body.run_config is not None:
        params["run_config"] = body.run_config.model_dump(mode="json")
    if body.max_frames is not None:
        params["max_frames"] = body.max_frames
    return params


@router.post(
    "/start",
    status_code=202,
    responses={**NOT_FOUND, 413: {"model": Message, "description": "request body too large"}, **UNAVAILABLE},
    summary="Start processing an environment's videos",
)
def start_task(
    request: Request, body: TaskStart, session: SessionDep, client: RedisDep, orchestrator: OrchestratorDep,
    settings: SettingsDep,
) -> TaskStarted:
    environment = resolve_environment(body.environment_id, body.videos, settings)
    parameters = flow_parameters(body)
    try:
        task_id = orchestrator.start(parameters)
    except OrchestratorUnavailableError as e:
        raise HTTPException(503, str(e)) from None
    try:
        crud.create_task(
            session, task_id=task_id, environment_id=body.environment_id, parameters=parameters,
            fps=environment.fps,
        )
    except sqlalchemy.exc.OperationalError:
        # no half-created task: a run nobody can look up must not go on
        log.exception("could not record task %s; cancelling its flow run", task_id)
        try:
            orchestrator.cancel(task_id)
        except (OrchestratorUnavailableError, FlowRunNotFoundError, NotCancellableError):
            log.exception("could not cancel flow run %s either", task_id)
        raise HTTPException(503, "results database unavailable; the task was not started") from None
    queued = StatusUpdatePayload(status="QUEUED", progress=0.0, current_step="waiting for a worker")
    try:
        publisher.announce(session, client, task_id=task_id, status=queued, settings=settings, first=True)
    except redis.RedisError:
        # the feed's first status is a courtesy; the task itself is started and recorded
        log.warning("task %s: Redis unavailable, QUEUED status not streamed", task_id)
    return TaskStarted(
        task_id=task_id,
        message=f"Processing task for environment '{body.environment_id}' initiated.",
        status_url=request.app.url_path_for("get_status", task_id=str(task_id)),
        websocket_url=request.app.url_path_for("tracking_feed", task_id=str(task_id)),
    )


@router.get("", summary="Tasks, newest first")
def list_tasks(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TasksPublic:
    tasks, count = crud.list_tasks(session, offset=offset, limit=limit)
    return TasksPublic(data=[TaskPublic.model_validate(t, from_attributes=True) for t in tasks], count=count)


def latest_published(task: Task, client: redis.Redis) -> StatusUpdatePayload | None:
    """The flow's latest status_update: from Redis, or its durable copy on the task row."""
    try:
        latest = streams.latest_status(client, task_id=task.task_id)
    except redis.RedisError:
        latest = None
    if latest is None and task.status is not None:
        latest = StatusUpdatePayload(
            status=task.status, progress=task.progress, current_step=task.current_step,  # type: ignore[arg-type]
            details=task.details,
        )
    return latest


def task_status(task: Task, state: RunState | None, latest: StatusUpdatePayload | None) -> TaskStatusPublic:
    """Prefect's state decides the status; progress and step are what the flow published."""
    status = state.status if state else (latest.status if latest else "QUEUED")
    progress = 100.0 if status == "COMPLETED" else (latest.progress if latest else 0.0)
    step = latest.current_step if latest and latest.current_step else (state.name if state else "")
    details = latest.details if latest else None
    if state is not None and state.status in ("FAILED", "CANCELLED") and state.message:
        details = state.message  # the reason Prefect recorded (exception, crash, cancellation)
    return TaskStatusPublic(task_id=task.task_id, status=status, progress=progress, current_step=step,
                            details=details)


@router.get("/{task_id}/status", responses={**NOT_FOUND, **UNAVAILABLE}, summary="Status and progress")
def get_status(task: TaskDep, client: RedisDep, orchestrator: OrchestratorDep) -> TaskStatusPublic:
    try:
        state: RunState | None = orchestrator.state(task.task_id)
    except FlowRunNotFoundError:
        # a run published from elsewhere (CLI, another Prefect): only its own statuses are known
        state = None
    except OrchestratorUnavailableError as e:
        raise HTTPException(503, str(e)) from None
    return task_status(task, state, latest_published(task, client))


@router.post(
    "/{task_id}/cancel",
    status_code=202,
    responses={**NOT_FOUND, 409: {"model": Message, "description": "the task has finished, or Prefect refused"},
               **UNAVAILABLE},
    summary="Ask Prefect to cancel the task's flow run",
)
def cancel_task(task: TaskDep, client: RedisDep, orchestrator: OrchestratorDep) -> TaskStatusPublic:
    try:
        state = orchestrator.cancel(task.task_id)
    except FlowRunNotFoundError as e:
        raise HTTPException(404, str(e)) from None
    except NotCancellableError as e:
        raise HTTPException(409, str(e)) from None
    except OrchestratorUnavailableError as e:
        raise HTTPException(503, str(e)) from None
    return task_status(task, state, latest_published(task, client))
