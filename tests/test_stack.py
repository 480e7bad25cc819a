"""The native stack (`make stack`): process control, and the whole platform end to end.

The end-to-end test starts every service as `make stack` does, on free ports with its
own databases, bucket and state dir: moto S3 holding a tiny synthetic scene in the
source layout, Prefect server on PostgreSQL, deployments, a process worker and the
API. It starts a task over REST, follows the WebSocket to the final status, reads
the results from PostgreSQL and the flow run and its artifacts from the Prefect API,
then stops the stack and checks that every process it started is gone.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from websockets.sync.client import connect

from deployments import stack
from deployments.services import SERVICES, start_order
from spoton.config import PROJECT_ROOT, get_settings
from spoton.synth import SceneSpec, generate_scene

PY = sys.executable
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def run_stack(action: str, state_dir: Path, env: dict[str, str], timeout: float = 900):
    return subprocess.run(
        [PY, "-m", "deployments.stack", action, "--state-dir", str(state_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_tree(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A service-like process in its own group with a child that left for its own session
    (as Prefect's flow-run subprocesses do) and a grandchild in the group."""
    pids = tmp_path / "pids.json"
    code = f"""
import json, subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
detached = subprocess.Popen(sleep, start_new_session=True)
inside = subprocess.Popen(sleep)
open({str(pids)!r}, "w").write(json.dumps([detached.pid, inside.pid]))
time.sleep(120)
"""
    proc = subprocess.Popen([PY, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline, "helper processes did not start"
        time.sleep(0.1)
    return proc, pids


def entry_for(proc: subprocess.Popen, name: str = "svc") -> stack.Started:
    stat = stack.proc_stat(proc.pid)
    assert stat is not None
    return stack.Started(name, proc.pid, stat[2], oneshot=False)


# ------------------------------------------------------------- process control


def test_stop_ends_the_group_and_detached_descendants_and_nothing_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], start_new_session=True)
    proc, pids_file = spawn_tree(tmp_path)
    try:
        children = json.loads(pids_file.read_text())
        assert stack.stop(entry_for(proc), grace_s=10) is True
        proc.wait(timeout=10)
        for pid in children:
            assert stack.proc_stat(pid) is None, f"descendant {pid} survived"
        assert stack.proc_stat(bystander.pid) is not None, "stop() touched an unrelated process"
    finally:
        for p in (bystander, proc):
            p.kill()
            p.wait()


def test_stop_leaves_a_reused_pid_alone() -> None:
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        stale = stack.Started("svc", other.pid, entry_for(other).start_ticks - 1, oneshot=False)
        assert stack.stop(stale, grace_s=1) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_ends_what_is_left_of_a_group_whose_leader_exited() -> None:
    code = (
        "import subprocess, sys; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print(c.pid, flush=True); sys.stdin.readline()"
    )
    leader = subprocess.Popen(
        [PY, "-c", code],
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert leader.stdout is not None and leader.stdin is not None
    orphan = int(leader.stdout.readline())
    entry = entry_for(leader)
    leader.stdin.write("exit\n")
    leader.stdin.flush()
    leader.wait(timeout=10)
    assert stack.group_members(entry.pid) == [orphan]
    assert stack.stop(entry, grace_s=10) is True
    assert stack.proc_stat(orphan) is None


def test_stop_escalates_to_sigkill() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [PY, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    assert stack.stop(entry_for(proc), grace_s=1) is True
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert time.monotonic() - t0 < 8


def test_ports_prefer_defaults_and_refuse_busy_explicit_ones() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"API_PORT={port} is in use"):
            stack.choose_ports({"API_PORT": str(port)})
        chosen = stack.choose_ports({})
        assert len(set(chosen.values())) == len(chosen) and port not in chosen.values()


def test_stack_env_points_every_service_at_the_local_bucket_and_servers(tmp_path: Path) -> None:
    env = stack.stack_env(
        tmp_path, {"PATH": "/usr/bin", "SPOTON_DATABASE_URL": "postgresql+psycopg://x/y"}
    )
    assert env["SPOTON_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{env['S3_PORT']}"
    assert env["SPOTON_VIDEOS_URL"] == "s3://spoton-data"
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{env['PREFECT_SERVER_API_PORT']}/api"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("/spoton_prefect")
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect-home")
    assert env["SPOTON_DATABASE_URL"] == "postgresql+psycopg://x/y"  # the caller's wins
    assert set(stack.exported(env)) >= {"API_PORT", "SPOTON_VIDEOS_URL", "PREFECT_API_URL"}
    assert "PATH" not in stack.exported(env)


def test_start_order_follows_dependencies() -> None:
    names = [s.name for s in start_order()]
    for service in SERVICES.values():
        for dep in service.after:
            if dep in SERVICES:
                assert names.index(dep) < names.index(service.name), (dep, service.name)
    assert [s.name for s in start_order(["deploy"])] == ["db-init", "prefect-server", "deploy"]
    with pytest.raises(ValueError, match="unknown service"):
        start_order(["nope"])


def test_up_says_how_to_start_a_missing_database(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("SPOTON_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x")
    get_settings.cache_clear()
    try:
        assert stack.main(["up", "--state-dir", str(tmp_path)]) == 1
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "state.json").exists()


def test_down_without_a_stack_is_a_no_op(tmp_path: Path, capsys) -> None:
    assert stack.main(["down", "--state-dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


# ------------------------------------------------------------------ end to end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def databases(postgres_server: str):
    names = {k: f"spoton_stack_{k}_{uuid.uuid4().hex[:8]}" for k in ("results", "prefect")}
    yield names
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for name in names.values():
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def sample_processes(started: list, seen: set, done: threading.Event) -> None:
    """Record the services and every process they spawn (flow runs) until ``done``."""
    while True:
        for s in started:
            if stack.is_ours(s):
                seen.add((s.pid, s.start_ticks))
                seen.update(stack.descendants(s.pid))
        if done.wait(0.5):
            return


def wait_for_final_flow_run(prefect_api: str, flow_run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        flow_run = httpx.get(f"{prefect_api}/flow_runs/{flow_run_id}", timeout=30).json()
        if flow_run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return flow_run
        if time.monotonic() > deadline:
            pytest.fail(f"flow run still {flow_run['state_type']} after {timeout_s} s")
        time.sleep(1)


def read_ws_until_final(url: str, timeout_s: float) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout_s
    with connect(url, open_timeout=30, max_size=None) as ws:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            messages.append(msg)
            if msg["type"] == "status_update" and msg["payload"]["status"] in {
                "COMPLETED",
                "FAILED",
                "CANCELLED",
            }:
                return messages
    pytest.fail(f"no final status within {timeout_s} s; last messages: {messages[-3:]}")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_native_stack_runs_a_task_end_to_end(
    tmp_path: Path, databases: dict, redis_server: str
) -> None:
    data = tmp_path / "data"
    scene = generate_scene(
        data / "demo",
        SceneSpec(cameras=2, people=3, seconds=2.0, sub_videos=1, fps=10, size=(320, 240), seed=3),
    )
    state_dir = tmp_path / "stack"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "SPOTON_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{databases['results']}",
        "SPOTON_REDIS_URL": f"{redis_server}/0",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['prefect']}",
        "SPOTON_DATA_DIR": str(data),
        "SPOTON_RUNS_URL": str(tmp_path / "runs"),
        "SPOTON_CACHE_DIR": str(tmp_path / "cache"),
        "SPOTON_VIDEOS_URL": f"s3://spoton-stack-{uuid.uuid4().hex[:8]}",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "HF_HUB_OFFLINE": "1",
        **{var: str(free_port()) for var in stack.PORTS},
    }
    up = run_stack("up", state_dir, env)
    assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
    started: list[stack.Started] = []
    seen: set[tuple[int, int]] = set()
    done = threading.Event()
    try:
        assert "Prefect UI" in up.stdout and "/docs" in up.stdout and "curl" in up.stdout
        started, _ = stack.State(state_dir).load()
        assert [s.name for s in started] == [s.name for s in start_order()]
        again = run_stack("up", state_dir, env, timeout=120)
        assert again.returncode == 0 and "already running" in again.stdout
        assert stack.State(state_dir).load()[0] == started, "a second `up` must not start anything"

        api = f"http://127.0.0.1:{env['API_PORT']}"
        prefect_api = f"http://127.0.0.1:{env['PREFECT_SERVER_API_PORT']}/api"
        sampler = threading.Thread(target=sample_processes, args=(started, seen, done), daemon=True)
        sampler.start()
        # the tiny scene has 2 cameras where the configured demo has 4: naming the bucket
        # makes cameras and calibration come from it (homography_data/demo.json there)
        resp = httpx.post(
            f"{api}/api/v1/processing-tasks/start",
            json={"environment_id": "demo", "videos": env["SPOTON_VIDEOS_URL"]},
            timeout=60,
        )
        assert resp.status_code in (200, 202), resp.text
        task = resp.json()
        task_id = task["task_id"]
        messages = read_ws_until_final(
            f"ws://127.0.0.1:{env['API_PORT']}{task['websocket_url']}", 900
        )
        running = sum(1 for s in started if not s.oneshot)
        assert len(seen) > running, "the worker's flow-run processes were never seen"
        final = messages[-1]["payload"]
        assert final["status"] == "COMPLETED", final
        frames = {m["payload"]["frame_index"] for m in messages if m["type"] == "tracking_update"}
        assert frames and max(frames) < scene.total_frames

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:5432/{databases['results']}"
        ) as conn:
            n_frames, n_tracks = conn.execute(
                "SELECT (SELECT count(*) FROM frame WHERE run_id = %(r)s),"
                " (SELECT count(*) FROM track WHERE run_id = %(r)s)",
                {"r": task_id},
            ).fetchone()
            status = conn.execute(
                "SELECT status FROM task WHERE task_id = %s", (task_id,)
            ).fetchone()
        assert n_frames == scene.total_frames and n_tracks > 0
        assert status == ("COMPLETED",)

        # the flow publishes its final status just before it returns: Prefect's state follows
        flow_run = wait_for_final_flow_run(prefect_api, task_id, timeout_s=120)
        assert flow_run["state_type"] == "COMPLETED", flow_run
        deployment = httpx.get(
            f"{prefect_api}/deployments/{flow_run['deployment_id']}", timeout=30
        ).json()
        assert deployment["name"] == "process-environment"
        assert deployment["work_pool_name"] == "gpu-pool"
        artifacts = httpx.post(
            f"{prefect_api}/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [task_id]}}},
            timeout=30,
        ).json()
        assert artifacts, "the flow run published no artifacts"
    finally:
        done.set()
        sample_processes(started, seen, done)
        down = run_stack("down", state_dir, env, timeout=300)
        assert down.returncode == 0, down.stderr
    assert "stack stopped" in down.stdout
    assert not (state_dir / "state.json").exists()
    survivors = [pid for pid, ticks in seen if stack.alive(pid, ticks)]
    assert not survivors, f"processes left running after stack-down: {survivors}"
    assert (state_dir / "logs" / "api.log").exists()
