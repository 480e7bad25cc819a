"""The full stack as native processes: `make stack`, `make stack-down`.

``python -m deployments.stack up`` starts, in dependency order, every service of
``deployments.services`` (moto S3, bucket seeding, Prefect server on the local
PostgreSQL, deployments, a process worker, the API), each as
``python -m deployments.services <name>`` in its own process group: the same
entry point Docker Compose uses. Local PostgreSQL and Redis must be running;
they are machine services, so the stack neither starts nor stops them.

State lives in the state dir (``.stack/``, ``$SPOTON_STACK_DIR`` or ``--state-dir``):
``state.json`` (pid and start time of each service, the stack's variables), ``env``
(those variables as shell exports; ``source`` it to use the CLI against the stack)
and ``logs/<service>.log``. ``down`` stops exactly the processes it recorded and
their descendants, by process group and pid; a pid whose start time no longer
matches (reused by another program) is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deployments.services import INFRASTRUCTURE, Service, probe, start_order

ROOT = Path(__file__).resolve().parent.parent
BUCKET_URL = "s3://spoton-data"
PREFECT_DB_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/spoton_prefect"
# variable -> preferred port; a busy preferred port falls back to a free one unless
# the variable was set explicitly (then a busy port is an error)
PORTS = {
    "PREFECT_SERVER_API_PORT": 4200,
    "API_PORT": 8000,
    "S3_PORT": 9000,
    "PREFECT_WORKER_WEBSERVER_PORT": 8080,
}
START_TIMEOUT_S = float(os.environ.get("SPOTON_STACK_START_TIMEOUT", "300"))
STOP_GRACE_S = 15.0


class StackError(RuntimeError):
    pass


@dataclass
class Started:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells our process from a reused pid
    oneshot: bool


def default_state_dir() -> Path:
    return Path(os.environ.get("SPOTON_STACK_DIR", ROOT / ".stack"))


# ------------------------------------------------------------------ processes


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start_ticks) of a live, non-zombie process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def alive(pid: int, start_ticks: int) -> bool:
    """The process ``pid`` started at ``start_ticks`` still runs (not a reused pid)."""
    stat = proc_stat(pid)
    return stat is not None and stat[2] == start_ticks


def is_ours(entry: Started) -> bool:
    return alive(entry.pid, entry.start_ticks)


def _processes() -> dict[int, tuple[int, int, int]]:
    return {
        int(d.name): stat
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and (stat := proc_stat(int(d.name))) is not None
    }


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start_ticks) of every live descendant, found through /proc parent links."""
    children: dict[int, list[tuple[int, int]]] = {}
    for child, (ppid, _, ticks) in _processes().items():
        children.setdefault(ppid, []).append((child, ticks))
    found: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child, ticks in children.get(todo.pop(), []):
            found.append((child, ticks))
            todo.append(child)
    return found


def group_members(pgid: int) -> list[int]:
    return [pid for pid, (_, group, _) in _processes().items() if group == pgid]


def _signal(entry: Started, extra: list[tuple[int, int]], sig: int) -> None:
    if group_members(entry.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(entry.pid, sig)  # started with start_new_session: pgid == pid
    for pid, ticks in extra:
        if alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def stop(entry: Started, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM the service's process group and its descendants, SIGKILL after ``grace_s``.

    A live process holding the pid with another start time means the pid was reused:
    the kernel frees a pid only once its process group is empty, so nothing of ours
    is left and nothing is signalled. Returns True when something of ours was running.
    """
    stat = proc_stat(entry.pid)
    if stat is not None and stat[2] != entry.start_ticks:
        return False
    # flow runs leave the group (own session): found through parent links, before signals
    extra = descendants(entry.pid)

    def running() -> bool:
        return bool(group_members(entry.pid)) or any(alive(p, t) for p, t in extra)

    if not running():
        return False
    _signal(entry, extra, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while running():
        if time.monotonic() > deadline:
            _signal(entry, extra, signal.SIGKILL)
            break
        time.sleep(0.2)
    return True


# ---------------------------------------------------------------- environment


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def choose_ports(env: dict[str, str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for var, preferred in PORTS.items():
        if var in env:
            port = int(env[var])
            if not port_free(port):
                raise StackError(f"{var}={port} is in use; choose another port or unset {var}")
        else:
            port = preferred if port_free(preferred) else free_port()
        ports[var] = port
    return ports


def stack_env(state_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables every service of the native stack runs with (over ``base``)."""
    base = dict(os.environ if base is None else base)
    ports = choose_ports(base)
    prefect_api = f"http://127.0.0.1:{ports['PREFECT_SERVER_API_PORT']}/api"
    own = {
        **{k: str(v) for k, v in ports.items()},
        "API_HOST": "127.0.0.1",
        "S3_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(state_dir / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": base.get(
            "PREFECT_API_DATABASE_CONNECTION_URL", PREFECT_DB_URL
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "SPOTON_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['S3_PORT']}",
        "SPOTON_VIDEOS_URL": base.get("SPOTON_VIDEOS_URL", BUCKET_URL),
        # moto accepts any key; fixed values keep real credentials away from the local server
        "AWS_ACCESS_KEY_ID": "spoton-local",
        "AWS_SECRET_ACCESS_KEY": "spoton-local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p),
    }
    return {**base, **own}


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url.replace("+psycopg", "").replace("+asyncpg", ""))
    return parts.hostname or "127.0.0.1", parts.port or default_port


def check_infrastructure() -> None:
    """PostgreSQL and Redis are machine services: say how to start them when they are down."""
    from spoton.config import get_settings

    settings = get_settings()
    checks = {
        "postgres": (_host_port(settings.database_url, 5432), "pg_ctlcluster <version> main start"),
        "redis": (_host_port(settings.redis_url, 6379), "redis-server --daemonize yes"),
    }
    for name in INFRASTRUCTURE:
        (host, port), how = checks[name]
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            raise StackError(
                f"{name} is not reachable on {host}:{port}; start it first (e.g. `{how}`)"
            ) from None


# ---------------------------------------------------------------------- state


class State:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.json"
        self.logs = state_dir / "logs"

    def load(self) -> tuple[list[Started], dict[str, str]]:
        if not self.file.exists():
            return [], {}
        doc = json.loads(self.file.read_text())
        return [Started(**s) for s in doc["services"]], doc["env"]

    def save(self, started: list[Started], env: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": [asdict(s) for s in started], "env": env}, indent=2))
        tmp.replace(self.file)

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)


def exported(env: dict[str, str]) -> dict[str, str]:
    """The stack's own variables (not the whole inherited environment), for the ``env`` file."""
    keep = ("SPOTON_", "PREFECT_", "AWS_", "API_", "S3_")
    return {k: v for k, v in sorted(env.items()) if k.startswith(keep) and v != ""}


# ------------------------------------------------------------------ up / down


def _launch(
    service: Service, env: dict[str, str], state: State
) -> tuple[subprocess.Popen, Started]:
    state.logs.mkdir(parents=True, exist_ok=True)
    with open(state.logs / f"{service.name}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.services", service.name],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = proc_stat(proc.pid)
    return proc, Started(service.name, proc.pid, stat[2] if stat else 0, service.oneshot)


def _log_tail(state: State, name: str, lines: int = 30) -> str:
    path = state.logs / f"{name}.log"
    text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
    return f"its log ({path}) ends:\n" + "\n".join(f"    {line}" for line in text)


def _wait(service: Service, proc: subprocess.Popen, env: dict[str, str], state: State) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = service.health_url(env)
    while time.monotonic() < deadline:
        rc = proc.poll()
        if service.oneshot and rc == 0:
            return
        if rc is not None:
            raise StackError(f"{service.name} exited with {rc}; {_log_tail(state, service.name)}")
        if (url is None and not service.oneshot) or (url is not None and probe(url, timeout_s=2)):
            return
        time.sleep(0.5)
    late = f"{service.name} not ready after {START_TIMEOUT_S:.0f} s"
    raise StackError(f"{late}; {_log_tail(state, service.name)}")


def urls(env: dict[str, str]) -> str:
    api = f"http://127.0.0.1:{env['API_PORT']}"
    ui = f"http://127.0.0.1:{env['PREFECT_SERVER_API_PORT']}"
    body = json.dumps({"environment_id": "demo"})
    return "\n".join([
        f"  Prefect UI    {ui}",
        f"  API docs      {api}/docs",
        f"  WebSocket     ws://127.0.0.1:{env['API_PORT']}/ws/tracking/<task_id>",
        f"  S3 (moto)     {env['SPOTON_S3_ENDPOINT_URL']}  bucket {env['SPOTON_VIDEOS_URL']}",
        "  start a task:",
        f"    curl -s -X POST -H 'Content-Type: application/json' -d {shlex.quote(body)} "
        f"{api}/api/v1/processing-tasks/start",
    ])


def up(state_dir: Path) -> int:
    state = State(state_dir)
    started, env = state.load()
    long_running = [s for s in started if not s.oneshot]
    if long_running and all(is_ours(s) for s in long_running):
        print(f"stack already running (state in {state_dir}):\n{urls(env)}")
        return 0
    if started:
        print(f"stack in {state_dir} is partly down; stopping what is left and starting afresh")
        down(state_dir, quiet=True)

    check_infrastructure()
    env = stack_env(state_dir)
    (state_dir / "prefect-home").mkdir(parents=True, exist_ok=True)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exported(env).items())
    (state_dir / "env").write_text(exports)
    started = []
    try:
        for service in start_order():
            print(f"starting {service.name:<15} ({service.help})", flush=True)
            proc, entry = _launch(service, env, state)
            started.append(entry)
            state.save(started, exported(env))
            _wait(service, proc, env, state)
    except BaseException as e:  # Ctrl-C or a failure: leave nothing half-started behind
        down(state_dir, quiet=True)
        if not isinstance(e, StackError):
            raise
        print(f"stack start failed: {e}", file=sys.stderr)
        return 1
    print(f"stack ready (logs in {state.logs}; `source {state_dir / 'env'}` points the CLI at it):")
    print(urls(env))
    return 0


def down(state_dir: Path, quiet: bool = False) -> int:
    state = State(state_dir)
    started, _ = state.load()
    if not started:
        if not quiet:
            print(f"no stack recorded in {state_dir}: nothing to stop")
        return 0
    for entry in reversed(started):
        was_running = stop(entry)
        if not quiet and was_running:
            print(f"stopped {entry.name} (pid {entry.pid})")
    state.clear()
    if not quiet:
        print("stack stopped")
    return 0


def status(state_dir: Path) -> int:
    started, env = State(state_dir).load()
    if not started:
        print(f"no stack recorded in {state_dir}")
        return 1
    for entry in started:
        running = is_ours(entry)
        what = "running" if running else ("done" if entry.oneshot else "DOWN")
        print(f"{entry.name:<15} pid {entry.pid:<8} {what}")
    print(urls(env))
    return 0 if all(is_ours(s) for s in started if not s.oneshot) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, help="default: .stack/ or $SPOTON_STACK_DIR")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    try:
        return {"up": up, "down": down, "status": status}[args.action](state_dir)
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
