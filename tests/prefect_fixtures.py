"""Prefect fixtures: the test harness, a real `prefect server` on PostgreSQL, a worker.

Registered from tests/conftest.py with ``pytest_plugins = ["prefect_fixtures"]``.

- ``prefect_harness`` (module): Prefect's test harness (a temporary server on
  SQLite) as this process's API for the module's tests; yields its API URL.
- ``prefect_server`` (session): ``prefect server start`` on a free port over a
  database created for the session on the local PostgreSQL (dropped at the end);
  yields the API URL (``http://127.0.0.1:<port>/api``). It shares nothing with
  the user's Prefect: own home, own database, no UI, no analytics.
- ``prefect_worker`` (session): ``python -m deployments.worker`` (a process worker
  on ``Settings.work_pool``) polling ``prefect_server`` every second; yields a
  ``Worker`` (process, log file). Flow runs start in subprocesses of it, so give
  them their settings with ``run_deployment(..., job_variables={"env": {...}})``.
"""

import contextlib
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a Prefect subprocess talking to ``api_url`` with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        # tasks/ and flows/ are imported from the checkout, as the deployments do
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        **extra,
    )
    return env


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    """Terminate a process we started (its own group: the worker's flow-run children too)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[str]:
    with prefect_test_harness(server_startup_timeout=None):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def prefect_database(postgres_server: str) -> Iterator[str]:
    """asyncpg URL of a fresh PostgreSQL database for the Prefect server, dropped afterwards."""
    if importlib.util.find_spec("asyncpg") is None:
        pytest.fail("asyncpg is not installed: the Prefect server needs it for PostgreSQL")
    name = f"spoton_prefect_test_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{postgres_server.replace('+psycopg', '+asyncpg')}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def prefect_server(prefect_database: str) -> Iterator[str]:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    with tempfile.TemporaryDirectory(prefix="spoton-prefect-server-") as tmp:
        home = Path(tmp)
        log = home / "server.log"
        env = prefect_env(
            api_url,
            home,
            PREFECT_API_DATABASE_CONNECTION_URL=prefect_database,
            PREFECT_UI_ENABLED="false",
        )
        env.pop("PREFECT_API_URL")  # the server is the API; it must not call one
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_http(f"{api_url}/health", process, log, timeout_s=180)
            yield api_url
        finally:
            stop(process)


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: str) -> Iterator[Worker]:
    health_port = free_port()
    with tempfile.TemporaryDirectory(prefix="spoton-prefect-worker-") as tmp:
        home = Path(tmp)
        log = home / "worker.log"
        env = prefect_env(
            prefect_server,
            home,
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_WEBSERVER_PORT=str(health_port),
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "deployments.worker"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_http(f"http://127.0.0.1:{health_port}/health", process, log, timeout_s=120)
            yield Worker(process, log)
        finally:
            stop(process)
