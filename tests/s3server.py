"""A real local S3 server for tests (moto's server in a thread), with injectable 503s.

    server = start_s3_server()               # or: with running_s3_server() as server:
    bucket = server.create_bucket()          # "s3://spoton-test-1a2b3c4d"
    server.upload_dir(local_dir, bucket)     # mirror a local layout
    os.environ.update(server.env)            # SPOTON_S3_ENDPOINT_URL + AWS credentials
    server.fail_next(2)                      # the next 2 requests get a transient 503
    server.stop()

It speaks real HTTP, so s3fs/botocore, subprocesses and Prefect workers reach it like
any S3 endpoint. The helper's own calls (``create_bucket``, ``put``, ``get``, …) carry
an admin header: they bypass failure injection and are not counted in ``requests``.
Independent of pytest; fixtures live in ``conftest_s3.py``.
"""

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ADMIN_HEADER = "x-spoton-test-admin"
_ADMIN_ENVIRON = "HTTP_" + ADMIN_HEADER.upper().replace("-", "_")
_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>Injected transient failure (tests/s3server.py)</Message>"
    b"<RequestId>spoton-test</RequestId></Error>"
)


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Per-request access lines would flood test output."""


class _FaultInjector:
    """WSGI middleware in front of moto: answers the next N requests with 503."""

    def __init__(self, app: Any, fail_first_n: int) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.remaining = fail_first_n
        self.failures_served = 0
        self.requests: list[str] = []

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get(_ADMIN_ENVIRON):
            return self.app(environ, start_response)
        line = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
        if environ.get("QUERY_STRING"):
            line += f"?{environ['QUERY_STRING']}"
        with self.lock:
            self.requests.append(line)
            fail = self.remaining > 0
            if fail:
                self.remaining -= 1
                self.failures_served += 1
        if not fail:
            return self.app(environ, start_response)
        # Drain the body: unread bytes on a kept-alive connection would be parsed
        # as the next request.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        # A HEAD response has no body, as on real S3; clients choke on one.
        body = b"" if environ["REQUEST_METHOD"] == "HEAD" else _UNAVAILABLE
        start_response(
            "503 Service Unavailable",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body]


def _split(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ValueError(f"expected an s3:// URL, got {url!r}")
    bucket, _, key = url[len("s3://"):].partition("/")
    return bucket, key


class S3Server:
    """A running server: ``endpoint_url``, ``env`` for clients, bucket helpers, ``stop()``."""

    def __init__(self, fail_first_n: int = 0, host: str = "127.0.0.1") -> None:
        if fail_first_n < 0:
            raise ValueError(f"fail_first_n must be >= 0, got {fail_first_n}")
        self._faults = _FaultInjector(DomainDispatcherApplication(create_backend_app), fail_first_n)
        self._server = make_server(
            host, 0, self._faults, threaded=True, request_handler=_QuietHandler
        )
        port = self._server.server_port
        self.endpoint_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"s3server:{port}", daemon=True
        )
        self._thread.start()
        self._admin = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self._admin.meta.events.register("before-sign.s3", self._mark_admin)

    @staticmethod
    def _mark_admin(request: Any, **_: Any) -> None:
        request.headers[ADMIN_HEADER] = "1"

    @property
    def env(self) -> dict[str, str]:
        """Environment for SpotOn and any AWS client to use this server.

        Transport retries are off (``AWS_MAX_ATTEMPTS=1``) so each injected 503 reaches
        the caller: the retries under test are the orchestrator's, not botocore's. The
        user's AWS config files are masked so no profile can redirect the tests.
        """
        return {
            "SPOTON_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    # ---------------------------------------------------------- fault injection

    def fail_next(self, n: int) -> None:
        """Answer the next ``n`` client requests with 503 ServiceUnavailable (0 disarms)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._faults.lock:
            self._faults.remaining = n

    @property
    def failures_served(self) -> int:
        return self._faults.failures_served

    @property
    def requests(self) -> list[str]:
        """Client requests seen so far, as ``"METHOD /bucket/key?query"``."""
        with self._faults.lock:
            return list(self._faults.requests)

    def reset_counters(self) -> None:
        """Forget ``requests`` and ``failures_served`` (fixtures call it between tests)."""
        with self._faults.lock:
            self._faults.requests.clear()
            self._faults.failures_served = 0

    # ------------------------------------------------------------------ buckets

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default); return ``s3://name``."""
        name = name or f"spoton-test-{uuid.uuid4().hex[:8]}"
        self._admin.create_bucket(Bucket=name)
        return f"s3://{name}"

    def put(self, url: str, data: bytes) -> None:
        bucket, key = _split(url)
        self._admin.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, url: str) -> bytes:
        bucket, key = _split(url)
        return self._admin.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, url: str) -> None:
        bucket, key = _split(url)
        self._admin.delete_object(Bucket=bucket, Key=key)

    def keys(self, url: str) -> list[str]:
        """Keys under an ``s3://bucket/prefix`` URL, sorted."""
        bucket, prefix = _split(url)
        pages = self._admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def upload_dir(self, local_dir: str | os.PathLike, url: str) -> list[str]:
        """Mirror every file under ``local_dir`` to ``url``; return the keys written."""
        root = Path(local_dir)
        if not root.is_dir():
            raise ValueError(f"not a directory: {root}")
        bucket, prefix = _split(url)
        prefix = prefix.strip("/")
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            self._admin.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_s3_server(fail_first_n: int = 0) -> S3Server:
    """Start a server on a free port; its first ``fail_first_n`` client requests get 503."""
    return S3Server(fail_first_n)


@contextlib.contextmanager
def running_s3_server(fail_first_n: int = 0) -> Iterator[S3Server]:
    server = start_s3_server(fail_first_n)
    try:
        yield server
    finally:
        server.stop()
