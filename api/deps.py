"""Typed request dependencies: settings, a database session, Redis, Prefect, the caller's key.

Everything comes from ``app.state``, filled by the lifespan in ``api.main``, so
a test builds an app on its own database and Redis with ``create_app(settings)``.
"""

import uuid
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlmodel import Session

from api import crud
from api.models import Task
from api.orchestration import Orchestrator
from api.security import check_keys, header_keys
from spoton.config import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def get_orchestrator(request: Request) -> Orchestrator:
    return request.app.state.orchestrator


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]


# Declared as dependencies so the OpenAPI schema documents both ways to send a key;
# the check itself reads the headers (security.header_keys), as the WebSocket does.
API_KEY_SCHEMES = [
    Depends(HTTPBearer(auto_error=False, description="an API key as a bearer token")),
    Depends(APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")),
]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_keys(header_keys(request.headers), settings.api_keys)


def get_task(
    session: SessionDep, task_id: Annotated[uuid.UUID, Path(description="the Prefect flow-run id")]
) -> Task:
    task = crud.get_task(session, task_id=task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found")
    return task


TaskDep = Annotated[Task, Depends(get_task)]


def unprocessable(loc: tuple[str, ...], msg: str, value: object) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors, for checks a schema cannot express."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])
