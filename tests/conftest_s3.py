"""S3 fixtures over a real local server (see s3server.py).

Registered from tests/conftest.py with ``pytest_plugins = ["conftest_s3"]``.

- ``s3_server`` (session): the running server, shared by all tests.
- ``s3`` (function): that server with ``SPOTON_S3_ENDPOINT_URL`` and AWS credentials
  in the environment and settings reloaded; fault injection disarmed around the test.
- ``s3_bucket`` (function): a fresh empty bucket, as ``s3://name``.
"""

from collections.abc import Iterator

import pytest
from s3server import S3Server, running_s3_server

from spoton.config import get_settings


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # Settings is built once per process: rebuild it with the endpoint
    s3_server.fail_next(0)
    s3_server.reset_counters()
    yield s3_server
    s3_server.fail_next(0)
    get_settings.cache_clear()


@pytest.fixture
def s3_bucket(s3: S3Server) -> str:
    return s3.create_bucket()
