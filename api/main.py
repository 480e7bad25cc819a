"""The FastAPI app: ``uvicorn api.main:app`` (or ``create_app(settings)`` in tests).

The lifespan brings the database to the latest schema and owns the engine, both
Redis pools (sync for REST handlers in the thread pool, asyncio for WebSocket
feeds) and the shared live tails of task streams (``api.tail``).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import migrate
from api.db import create_db_engine
from api.deps import API_KEY_SCHEMES, require_api_key
from api.models import Message
from api.orchestration import Orchestrator
from api.routes import analytics, environments, health, results, tasks
from api.security import AuthError, BodySizeLimit, auth_error_response, internal_error_response
from api.tail import Tails
from api.viewer.routes import router as viewer_router
from api.websocket import FeedLimits
from api.websocket import router as ws_router
from spoton.config import Settings, get_settings

API_V1 = "/api/v1"
AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"model": Message, "description": "no API key (when keys are configured)"},
    403: {"model": Message, "description": "API key not accepted"},
}


def create_app(
    settings: Settings | None = None,
    *,
    orchestrator: Orchestrator | None = None,
    feed_limits: FeedLimits | None = None,
) -> FastAPI:
    """The app on ``settings``; Prefect from its own settings unless an orchestrator is given."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(migrate.upgrade, settings.database_url)
        app.state.engine = create_db_engine(settings.database_url)
        app.state.redis = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        # one connection per blocked XREAD: as many as there are feeds
        app.state.aredis = aioredis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5,
            max_connections=10_000,
        )
        app.state.tails = Tails(app.state.aredis, batch=app.state.feed_limits.batch,
                                block_ms=app.state.feed_limits.block_ms)
        try:
            yield
        finally:
            await app.state.tails.close()
            await app.state.aredis.aclose()
            app.state.redis.close()
            app.state.engine.dispose()

    app = FastAPI(
        title="SpotOn",
        summary="Multi-camera person tracking: tasks, results, analytics and live feeds",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.orchestrator = orchestrator or Orchestrator.from_prefect_settings(settings.deployment_name)
    app.state.feed_limits = feed_limits or FeedLimits()

    protected = [*API_KEY_SCHEMES, Depends(require_api_key)]
    for module in (tasks, environments, results, analytics):
        app.include_router(module.router, prefix=API_V1, dependencies=protected, responses=AUTH_RESPONSES)
    app.include_router(health.router)
    app.include_router(ws_router)
    # The browser viewer checks keys itself (<video> cannot send headers) and is not public API.
    app.include_router(viewer_router, include_in_schema=False)

    app.add_exception_handler(AuthError, auth_error_response)
    app.add_exception_handler(Exception, internal_error_response)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        # credentials with a wildcard origin would let any site act as the user
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type"],
    )
    return app


app = create_app()
