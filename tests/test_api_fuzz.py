"""Schemathesis fuzzing of the OpenAPI schema against the ASGI app (real Postgres, Redis).

No operation may answer a 5xx, except the 503 that the orchestrator-backed operations
document for an unreachable Prefect (Prefect is deliberately unreachable here: a fuzzer
must not start flow runs). ``status_code_conformance`` holds those 503s to the
operations that declare them, the other default checks hold every answer to its
documented schema. One published task gives the fuzzer real rows to hit.
"""

import uuid

import pytest
import schemathesis
from api_fixtures import REDIS_DB, Person, forget_streams, unreachable_prefect, write_chunk
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from api.publisher import publish_chunk
from spoton.config import Settings
from spoton.store import RunStore

CONFIG = SchemathesisConfig.from_dict({"checks": {
    "not_a_server_error": {"expected-statuses": ["1xx", "2xx", "3xx", "4xx", "503"]},
    # the API validates beyond the schema (an environment must load from its videos, a range
    # must not end before it starts): a schema-valid request may rightly get a 422
    "positive_data_acceptance": {"enabled": False},
}})
KNOWN_TASK = uuid.uuid4()
API_KEY = "fuzz-key"  # keys configured, so the checks also see every operation refuse anonymous calls


@pytest.fixture(scope="module")
def fuzzed_schema(api_database: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory):
    runs = tmp_path_factory.mktemp("fuzz-runs")
    api_settings = Settings(_env_file=None, database_url=api_database, redis_url=f"{redis_server}/{REDIS_DB}",
                            runs_url=str(runs), api_keys=[API_KEY])
    store = RunStore(api_settings.runs_url, str(KNOWN_TASK))
    write_chunk(store, chunk="sub_video_01", chunk_index=0, frames=range(0, 20), cameras=["c1", "c2"],
                people=[Person(1, (3.0, 4.0), (0.05, 0.0), ("c1", "c2")), Person(2, (9.0, 2.0), (0.0, 0.1), ("c2",))])
    publish_chunk(task_id=KNOWN_TASK, environment_id="factory", store=store, chunk="sub_video_01",
                  cameras=["c1", "c2"], settings=api_settings, frames=range(0, 20), fps=25.0)
    app = create_app(api_settings, orchestrator=unreachable_prefect())
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    forget_streams(api_settings.redis_url, [KNOWN_TASK])


def test_no_server_errors(fuzzed_schema) -> None:
    # Each operation in turn (schemathesis' pytest plugin cannot load a schema from a
    # fixture under this pytest); every failure is collected, then reported together.
    failures = []
    for result in fuzzed_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            # half of the task ids go to the task that has results, the rest stay random (404)
            if "task_id" in (case.path_parameters or {}) and hash(case.path_parameters["task_id"]) % 2:
                case.path_parameters["task_id"] = str(KNOWN_TASK)
            case.call_and_validate(headers={"X-API-Key": API_KEY})

        try:
            fuzz()
        except Exception as e:  # noqa: BLE001 - reported below with the operation it came from
            failures.append(f"{operation.label}: {e}")
    assert not failures, "\n\n".join(failures)
