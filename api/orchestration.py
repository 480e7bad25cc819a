"""The API's view of Prefect: start, inspect and cancel flow runs (FastAPI-free).

The Prefect API URL is explicit (default: Prefect's own ``PREFECT_API_URL``
setting) and required: without it Prefect would quietly start a throw-away
ephemeral server that no worker listens to, and tasks would never run.
"""

import uuid
from dataclasses import dataclass
from typing import Any, cast

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas import OrchestrationResult, SetStateStatus
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from spoton.types import TaskStatus

STATUS_OF_STATE: dict[StateType, TaskStatus] = {
    StateType.SCHEDULED: "QUEUED",
    StateType.PENDING: "QUEUED",
    StateType.RUNNING: "PROCESSING",
    StateType.CANCELLING: "PROCESSING",
    StateType.PAUSED: "PROCESSING",  # started, waiting for input: not queued any more
    StateType.COMPLETED: "COMPLETED",
    StateType.FAILED: "FAILED",
    StateType.CRASHED: "FAILED",
    StateType.CANCELLED: "CANCELLED",
}
# Prefect answers these when it is there but cannot serve: treat like unreachable
_UNAVAILABLE = (httpx.TransportError, httpx.HTTPStatusError, OSError)


class OrchestratorUnavailableError(RuntimeError):
    """Prefect cannot be reached or cannot start the deployment; nothing was created."""


class FlowRunNotFoundError(LookupError):
    pass


class NotCancellableError(RuntimeError):
    """Cancel asked of a run that has finished, or that Prefect refuses to cancel."""


@dataclass(frozen=True)
class RunState:
    status: TaskStatus
    name: str  # Prefect's state name ("Running", "Crashed", …)
    message: str | None

    @property
    def is_final(self) -> bool:
        return self.status in ("COMPLETED", "FAILED", "CANCELLED")


def run_state(state: Any) -> RunState:
    if state is None:  # created but not yet scheduled: as good as queued
        return RunState("QUEUED", "Scheduled", None)
    return RunState(STATUS_OF_STATE[state.type], state.name or state.type.value.title(), state.message)


class Orchestrator:
    def __init__(self, *, api_url: str | None, deployment_name: str) -> None:
        self.api_url = api_url
        self.deployment_name = deployment_name

    @classmethod
    def from_prefect_settings(cls, deployment_name: str) -> "Orchestrator":
        return cls(api_url=PREFECT_API_URL.value(), deployment_name=deployment_name)

    def _url(self) -> str:
        if not self.api_url:
            raise OrchestratorUnavailableError(
                "no Prefect API configured: set PREFECT_API_URL to the Prefect server the workers use"
            )
        return self.api_url

    def _client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self._url())

    def start(self, parameters: dict[str, Any]) -> uuid.UUID:
        """Create a flow run of the deployment and return at once (``timeout=0``)."""
        url = self._url()
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                # called from a thread: the synchronous path, which returns the FlowRun itself
                run = cast(FlowRun, run_deployment(
                    name=self.deployment_name, parameters=parameters, timeout=0, as_subflow=False
                ))
        except ObjectNotFound:
            raise OrchestratorUnavailableError(
                f"deployment {self.deployment_name!r} does not exist on the Prefect server at {url}: "
                "create it with `python -m deployments.setup` (or set SPOTON_DEPLOYMENT_NAME)"
            ) from None
        except _UNAVAILABLE as e:
            raise OrchestratorUnavailableError(f"Prefect server at {url} is unavailable: {e}") from None
        return run.id

    def state(self, flow_run_id: uuid.UUID) -> RunState:
        try:
            with self._client() as client:
                return run_state(client.read_flow_run(flow_run_id).state)
        except ObjectNotFound:
            raise FlowRunNotFoundError(f"Prefect has no flow run {flow_run_id}") from None
        except _UNAVAILABLE as e:
            raise OrchestratorUnavailableError(f"Prefect server at {self.api_url} is unavailable: {e}") from None

    def cancel(self, flow_run_id: uuid.UUID) -> RunState:
        """Ask for cancellation; the worker stops the run and Prefect moves it to Cancelled."""
        try:
            with self._client() as client:
                current = run_state(client.read_flow_run(flow_run_id).state)
                if current.is_final:
                    raise NotCancellableError(f"task {flow_run_id} has already finished: {current.status}")
                result: OrchestrationResult[Any] = client.set_flow_run_state(flow_run_id, Cancelling())
                if result.status != SetStateStatus.ACCEPT:
                    reason = getattr(result.details, "reason", None) or result.status.value
                    raise NotCancellableError(f"Prefect did not cancel task {flow_run_id}: {reason}")
                return run_state(result.state) if result.state is not None else current
        except ObjectNotFound:
            raise FlowRunNotFoundError(f"Prefect has no flow run {flow_run_id}") from None
        except _UNAVAILABLE as e:
            raise OrchestratorUnavailableError(f"Prefect server at {self.api_url} is unavailable: {e}") from None

    def check(self) -> None:
        """Raise OrchestratorUnavailableError unless the Prefect API answers its health check."""
        try:
            with self._client() as client:
                error = client.api_healthcheck()
        except _UNAVAILABLE as e:
            error = e
        if error is not None:
            raise OrchestratorUnavailableError(f"Prefect server at {self.api_url}: {error}")
