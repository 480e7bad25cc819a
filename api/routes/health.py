"""Liveness and readiness probes (no API key: orchestrators call them)."""

from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from api.models import HealthReport

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_S = 5.0


@router.get("/live", summary="The process answers")
def live() -> HealthReport:
    return HealthReport(status="ok", checks={})


def _postgres(request: Request) -> None:
    with request.app.state.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _redis(request: Request) -> None:
    request.app.state.redis.ping()


def _prefect(request: Request) -> None:
    request.app.state.orchestrator.check()


@router.get(
    "/ready",
    responses={503: {"model": HealthReport, "description": "a dependency failed; `checks` says which"}},
    summary="Postgres, Redis and the Prefect API answer",
)
async def ready(request: Request, response: Response) -> HealthReport:
    checks: dict[str, str] = {}

    async def run(name: str, check: Callable[[Request], None]) -> None:
        try:
            with anyio.fail_after(CHECK_TIMEOUT_S):
                await anyio.to_thread.run_sync(check, request, abandon_on_cancel=True)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as e:  # any failure of a dependency is the answer, not an error
            checks[name] = f"{type(e).__name__}: {e}"

    async with anyio.create_task_group() as tg:
        for name, check in (("postgres", _postgres), ("redis", _redis), ("prefect", _prefect)):
            tg.start_soon(run, name, check)
    report = HealthReport(status="ok" if all(v == "ok" for v in checks.values()) else "unavailable",
                          checks=dict(sorted(checks.items())))
    if report.status != "ok":
        response.status_code = 503
    return report
