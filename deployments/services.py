"""Every SpotOn service command, defined once for Docker Compose and `make stack`.

``python -m deployments.services <name>`` starts one service: long-running ones
*exec* their program (the process keeps its pid, so signals and process groups
behave), one-shots run a function here and exit. Compose's ``command:`` entries
and the native stack (``deployments.stack``) both call this entry point, and a
test checks that the two agree, so the commands cannot drift apart.

Ports and hosts come from the environment (names below, with defaults), the
rest from ``spoton.config.Settings`` and Prefect's own ``PREFECT_*`` settings:

    API_HOST / API_PORT                              uvicorn (results API)
    PREFECT_SERVER_API_HOST / PREFECT_SERVER_API_PORT  Prefect server
    PREFECT_WORKER_WEBSERVER_PORT                    worker health endpoint
    S3_HOST / S3_PORT                                moto S3 server (native stack only)

``python -m deployments.services health [name]`` probes a service (the Docker
HEALTHCHECK and the native stack use it); ``list`` prints the table. Every
service runs with ``SPOTON_HOME`` (the checkout flow runs execute in, see
prefect.yaml's pull step) defaulting to this checkout.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg
    from fsspec import AbstractFileSystem

PORT_DEFAULTS: dict[str, str] = {
    "API_HOST": "127.0.0.1",
    "API_PORT": "8000",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_SERVER_API_PORT": "4200",
    "PREFECT_WORKER_WEBSERVER_PORT": "8080",
    "S3_HOST": "127.0.0.1",
    "S3_PORT": "9000",
}
# Machine (or container) services that SpotOn uses but does not define: compose runs
# images for them, the native stack expects them running (Postgres, Redis).
INFRASTRUCTURE = ("postgres", "redis")
ROOT = Path(__file__).resolve().parent.parent
# The image sets SPOTON_SERVICE_MARKER: the started service writes its name there so a
# bare `health` (the Dockerfile HEALTHCHECK, one command for every service) knows what to probe.
MARKER_VAR = "SPOTON_SERVICE_MARKER"


@dataclass(frozen=True)
class Service:
    """One process of the platform.

    ``argv`` placeholders (``{API_PORT}``) are filled from :func:`variables`; a
    leading ``python`` is the running interpreter. ``after`` names the services
    (or ``INFRASTRUCTURE``) that must be healthy, or finished for one-shots, first.
    """

    name: str
    help: str
    argv: tuple[str, ...] = ()
    run: Callable[[], None] | None = None
    health: str | None = None
    after: tuple[str, ...] = ()
    oneshot: bool = False
    in_compose: bool = True  # compose runs this command (else an image of its own)

    def command(self, env: Mapping[str, str] | None = None) -> list[str]:
        values = variables(env)
        argv = [part.format_map(values) for part in self.argv]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        return argv

    def health_url(self, env: Mapping[str, str] | None = None) -> str | None:
        return self.health.format_map(variables(env)) if self.health else None


def variables(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Placeholder values: the environment over the defaults (work pool from Settings)."""
    env = os.environ if env is None else env
    values = dict(PORT_DEFAULTS)
    if "SPOTON_WORK_POOL" not in env:
        from spoton.config import get_settings

        values["SPOTON_WORK_POOL"] = get_settings().work_pool
    values.update(env)
    return values


# ------------------------------------------------------------------ one-shots


def _connect_admin(url: str, timeout_s: float = 60.0) -> psycopg.Connection:
    """Autocommit connection to the server's maintenance database, retried while it starts."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conninfo = psycopg.conninfo.make_conninfo(
        host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
        password=u.password or None, dbname="postgres",
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"db-init: no PostgreSQL at {u.host}:{u.port}: {e}") from None
            time.sleep(1)


def ensure_database(url: str) -> bool:
    """Create the database named in a SQLAlchemy URL if missing; True when created."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name:
        raise ValueError(f"database URL names no database: {url}")
    with _connect_admin(url) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        # CREATE DATABASE cannot run inside a transaction block: autocommit connection
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def init_databases() -> None:
    """Create the results database (then migrate it) and Prefect's own when missing."""
    from api.migrate import upgrade
    from spoton.config import get_settings

    results_url = get_settings().database_url
    for url in (results_url, os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "")):
        if url.startswith("postgresql"):
            what = "created" if ensure_database(url) else "present"
            print(f"db-init: database {url.rsplit('/', 1)[-1]} {what}")
    upgrade(results_url)
    print("db-init: results schema at the latest migration")


def _upload_tree(fs: AbstractFileSystem, local: Path, remote: str) -> int:
    """Upload files missing or of another size under ``remote``; returns how many were sent."""
    sent = 0
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = f"{remote}/{path.relative_to(local).as_posix()}"
        if fs.exists(key) and fs.size(key) == path.stat().st_size:
            continue
        fs.put_file(str(path), key)
        sent += 1
    return sent


def _uploaded(folder: str) -> bool:
    """Scene folders that belong in the bucket (not gt/, which is for evaluation)."""
    return folder.startswith("video_") or folder == "homography_data"


def seed_bucket() -> None:
    """Create the videos bucket and upload every scene of the data dir in the source layout.

    ``<data_dir>/<env>/video_<env>/<camera>/sub_video_NN.mp4`` and
    ``<data_dir>/<env>/homography_data/<env>.json`` go to the same keys under
    ``SPOTON_VIDEOS_URL``. The demo scene is generated first when absent.
    """
    from spoton.config import get_settings
    from spoton.demo import ensure_demo_scene
    from spoton.sources import filesystem

    settings = get_settings()
    url = settings.videos_url
    if not url or not url.startswith("s3://"):
        raise SystemExit(f"s3-init: SPOTON_VIDEOS_URL must be an s3:// URL, got {url!r}")
    fs, root = filesystem(url)
    root = root.rstrip("/")
    bucket = root.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
        print(f"s3-init: bucket {bucket} created")
    demo = settings.data_dir / "demo"
    if not (demo / "scene.json").exists():  # the default scene, generated once
        ensure_demo_scene(demo)
    for scene in sorted(p for p in settings.data_dir.iterdir() if p.is_dir()):
        parts = [d for d in scene.iterdir() if d.is_dir() and _uploaded(d.name)]
        sent = sum(_upload_tree(fs, d, f"{root}/{d.name}") for d in parts)
        print(f"s3-init: scene {scene.name}: {sent} file(s) uploaded to s3://{root}")


# ------------------------------------------------------------------- the table

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "db-init", "create the results and Prefect databases when missing",
            run=init_databases, after=("postgres",), oneshot=True,
        ),
        Service(
            "s3", "S3-compatible server (moto; compose runs MinIO instead)",
            argv=("python", "-m", "moto.server", "-H", "{S3_HOST}", "-p", "{S3_PORT}"),
            health="http://127.0.0.1:{S3_PORT}/", in_compose=False,
        ),
        Service(
            "s3-init", "create the videos bucket and upload the demo scene",
            run=seed_bucket, after=("s3",), oneshot=True,
        ),
        Service(
            "prefect-server", "Prefect API and UI on PostgreSQL",
            argv=(
                "python", "-m", "prefect", "server", "start",
                "--host", "{PREFECT_SERVER_API_HOST}", "--port", "{PREFECT_SERVER_API_PORT}",
            ),
            health="http://127.0.0.1:{PREFECT_SERVER_API_PORT}/api/health", after=("db-init",),
        ),
        Service(
            "deploy", "work pool, 'gpu' concurrency limit and deployments (idempotent)",
            argv=("python", "-m", "deployments.setup"), after=("prefect-server",), oneshot=True,
        ),
        Service(
            "worker", "process worker on the work pool: runs the flows",
            argv=(
                "python", "-m", "prefect", "worker", "start", "--pool", "{SPOTON_WORK_POOL}",
                "--type", "process", "--with-healthcheck",
            ),
            health="http://127.0.0.1:{PREFECT_WORKER_WEBSERVER_PORT}/health",
            after=("deploy", "s3-init", "redis"),
        ),
        Service(
            "api", "results API (REST + WebSocket)",
            argv=(
                "python", "-m", "uvicorn", "api.main:app",
                "--host", "{API_HOST}", "--port", "{API_PORT}",
            ),
            health="http://127.0.0.1:{API_PORT}/health/ready", after=("db-init", "redis", "deploy"),
        ),
    )
}


def start_order(names: list[str] | None = None) -> list[Service]:
    """Services in dependency order (``after`` first); INFRASTRUCTURE is not in the table."""
    wanted = list(SERVICES) if names is None else names
    ordered: list[Service] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in INFRASTRUCTURE or any(s.name == name for s in ordered):
            return
        if name in path:
            raise ValueError(f"dependency cycle: {' -> '.join((*path, name))}")
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r} (known: {', '.join(SERVICES)})")
        for dep in SERVICES[name].after:
            visit(dep, (*path, name))
        ordered.append(SERVICES[name])

    for name in wanted:
        visit(name, ())
    return ordered


def probe(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 200 <= resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def health(name: str | None = None) -> int:
    """0 when the service answers its health URL (one-shots and URL-less: 0)."""
    if name is None:
        marker = os.environ.get(MARKER_VAR)
        name = Path(marker).read_text().strip() if marker and Path(marker).exists() else ""
    service = SERVICES.get(name)
    if service is None:
        print(f"health: unknown service {name!r}", file=sys.stderr)
        return 1
    url = service.health_url()
    if url is None:
        return 0
    ok = probe(url)
    if not ok:
        print(f"health: {name} does not answer {url}", file=sys.stderr)
    return 0 if ok else 1


def start(name: str) -> int:
    service = SERVICES.get(name)
    if service is None:
        print(f"unknown service {name!r}; known: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    if os.environ.get(MARKER_VAR):
        Path(os.environ[MARKER_VAR]).write_text(name)
    # prefect.yaml's pull step runs flows in $SPOTON_HOME: this checkout unless set
    os.environ.setdefault("SPOTON_HOME", str(ROOT))
    if service.run is not None:
        service.run()
        return 0
    argv = service.command()
    sys.stdout.flush()
    os.execv(argv[0], argv)  # replaces this process: same pid for stack-down and Docker signals


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if args else 2
    if args[0] == "list":
        for s in SERVICES.values():
            what = " ".join(s.command()) if s.run is None else f"(in-process) {s.run.__name__}()"
            print(f"{s.name:<15} {what}\n{'':<15} after: {', '.join(s.after) or '-'}; {s.help}")
        return 0
    if args[0] == "health":
        return health(args[1] if len(args) > 1 else None)
    return start(args[0])


if __name__ == "__main__":
    sys.exit(main())
