"""Shared test setup: isolated Prefect home, real local services, scratch dirs.

Environment variables are set before anything imports Prefect, so no test ever
touches the user's Prefect profile, database or analytics.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="spoton-prefect-home-")
os.environ.update(
    DO_NOT_TRACK="1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    HF_HUB_OFFLINE="1",
    PREFECT_HOME=_PREFECT_HOME,
    PREFECT_LOGGING_TO_API_ENABLED="false",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
)
# An empty PREFECT_API_URL breaks the ephemeral API's events client: unset it instead.
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

# Fixture modules shared across test files (real S3 server, Prefect server + worker, API app).
pytest_plugins = ["conftest_s3", "prefect_fixtures", "api_fixtures"]

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
SHARED = Path(__file__).resolve().parents[2] / "shared"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_service(name: str, host: str, port: int, start_cmd: str) -> None:
    """Start a machine service that is down; fail loudly (never skip) if it won't come up."""
    if port_open(host, port):
        return
    subprocess.run(start_cmd, shell=True, check=False, capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.5)
    pytest.fail(f"{name} is not reachable on {host}:{port} and `{start_cmd}` did not start it")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    ensure_service("PostgreSQL", PG_HOST, PG_PORT, PG_START)
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}"


@pytest.fixture(scope="session")
def redis_server() -> str:
    ensure_service("Redis", REDIS_HOST, REDIS_PORT, REDIS_START)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.fail(f"shared data folder not found at {data}")
    return data


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
