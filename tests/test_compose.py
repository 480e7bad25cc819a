"""Containers without a Docker engine: the compose file, the image and their commands.

``docker-compose config`` (Debian's docker-compose 1.29) validates and resolves the
compose file; the resolved services are then checked against the one definition of
the service commands (``deployments.services``), the Dockerfile is read instruction
by instruction, and every program those commands run must exist in the project.
"""

import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments.services import INFRASTRUCTURE, SERVICES, Service
from deployments.stack import PORTS
from spoton.config import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
ENTRY = ["python", "-m", "deployments.services"]
SECRET = re.compile(r"PASSWORD|SECRET")


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed; install Debian's docker-compose 1.29 "
            "(`apt-get install -y docker-compose`, as .ci/run does) to validate docker-compose.yml"
        )
    # a bare environment: variables of the test process must not leak into interpolation
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(
        [
            exe,
            "--project-directory",
            str(PROJECT_ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as Compose resolves it, gpu profile included."""
    out = compose("--profile", "gpu", "config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str | None]:
    """Every variable .env.example names: value when set, None when only shown commented."""
    names: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            names[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line):
            names.setdefault(m[1], None)
    return names


def ours(resolved: dict) -> dict[str, dict]:
    """Compose services built from the SpotOn image (the rest are third-party images)."""
    return {name: svc for name, svc in resolved["services"].items() if "build" in svc}


def service_of(svc: dict) -> Service:
    command = svc["command"]
    assert command[:3] == ENTRY and len(command) == 4, f"not a service entry point: {command}"
    return SERVICES[command[3]]


# ---------------------------------------------------------------- compose file


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["cpu", "gpu"])
def test_compose_file_is_valid(profile: list[str]) -> None:
    out = compose(*profile, "config", "-q")
    assert out.returncode == 0, f"docker-compose config failed:\n{out.stderr}"


def test_compose_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = compose("config", "-q", env_file=empty)
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr and ".env.example" in out.stderr


def test_spoton_containers_run_the_shared_service_entry_points(resolved: dict) -> None:
    seen = set()
    for name, svc in ours(resolved).items():
        service = service_of(svc)
        assert service.in_compose, f"compose service {name} runs {service.name}, marked native-only"
        seen.add(service.name)
        if service.oneshot:
            # `healthcheck: {disable: true}` resolves to test NONE
            assert svc.get("restart") == "no" and svc["healthcheck"]["test"] == ["NONE"], name
        else:
            assert svc["healthcheck"]["test"] == ["CMD", *ENTRY, "health", service.name], name
    expected = {s.name for s in SERVICES.values() if s.in_compose}
    assert seen == expected, f"services missing from compose: {expected - seen}"


def test_compose_dependencies_are_the_service_dependencies(resolved: dict) -> None:
    services = resolved["services"]
    by_compose_name = {n: service_of(s).name for n, s in ours(resolved).items()}
    for name, svc in ours(resolved).items():
        service = service_of(svc)
        depends = svc.get("depends_on", {})
        assert {by_compose_name.get(d, d) for d in depends} == set(service.after), name
        for dep, spec in depends.items():
            target = SERVICES.get(by_compose_name.get(dep, dep))
            if target is not None and target.oneshot:
                assert spec["condition"] == "service_completed_successfully", (name, dep)
            else:
                assert spec["condition"] == "service_healthy", (name, dep)
                assert "test" in services[dep]["healthcheck"], f"{dep} has no healthcheck"
    for infra in INFRASTRUCTURE:
        assert infra in services and "build" not in services[infra]


def test_third_party_images_are_pinned_and_healthy(resolved: dict) -> None:
    for name in ("postgres", "redis", "s3"):
        svc = resolved["services"][name]
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), svc["image"]
        assert svc["healthcheck"]["test"], name
    assert resolved["services"]["postgres"]["image"].startswith("timescale/timescaledb:")
    assert resolved["services"]["s3"]["image"].startswith("minio/minio:")


def test_gpu_worker_is_a_profile_variant_of_the_worker(resolved: dict) -> None:
    services = resolved["services"]
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert "profiles" not in cpu, "the CPU worker must run without any profile"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == cpu["command"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert gpu["image"] != cpu["image"], "CPU and CUDA builds must not share a tag"
    assert gpu["environment"]["SPOTON_DEVICE"] == "cuda"
    assert cpu["environment"]["SPOTON_DEVICE"] == "auto"
    argv = SERVICES["worker"].command({})
    assert argv[argv.index("--pool") + 1] == Settings().work_pool == "gpu-pool"
    assert argv[argv.index("--type") + 1] == "process"


def test_prefect_server_has_its_own_database(resolved: dict) -> None:
    env = resolved["services"]["prefect-server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    results = resolved["services"]["api"]["environment"]["SPOTON_DATABASE_URL"]
    assert results.endswith("@postgres:5432/spoton")


# ---------------------------------------------------------------- .env.example


def test_env_example_names_every_setting_and_variable(env_example: dict) -> None:
    raw = COMPOSE.read_text()
    wanted = {f"SPOTON_{field.upper()}" for field in Settings.model_fields}
    wanted |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", raw))
    wanted |= {k for k in re.findall(r"^\s+([A-Z][A-Z0-9_]*):", raw, re.M) if k.startswith(("SPOTON_", "PREFECT_"))}
    wanted |= set(PORTS) | {"SPOTON_STACK_DIR", "SPOTON_STACK_START_TIMEOUT", "SPOTON_HOME"}
    missing = sorted(wanted - set(env_example))
    assert not missing, f".env.example does not mention {missing}"


def _setting_text(value: object) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def test_defaults_agree_with_settings(env_example: dict) -> None:
    """Pass-through defaults in compose and the values in .env.example are Settings' defaults."""
    defaults = {
        f"SPOTON_{n.upper()}": f.get_default(call_default_factory=True) for n, f in Settings.model_fields.items()
    }
    for var, default in re.findall(r"\$\{(SPOTON_[A-Z0-9_]+):-([^}]*)\}", COMPOSE.read_text()):
        if defaults.get(var) is not None and var not in {"SPOTON_RUNS_URL"}:
            assert default == _setting_text(defaults[var]), var
    for var, value in env_example.items():
        if var in defaults and value is not None:
            assert value == _setting_text(defaults[var]), var


def test_no_secret_is_written_in_the_compose_file(tmp_path: Path) -> None:
    """With marker passwords in the env file, every password in the resolved config is a marker."""
    markers = {"POSTGRES_PASSWORD": "pg-marker-1", "S3_SECRET_KEY": "s3-marker-2"}
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.split("=", 1)[0] not in markers]
    env_file = tmp_path / "marked.env"
    env_file.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in markers.items())]) + "\n")
    out = compose("--profile", "gpu", "config", env_file=env_file)
    assert out.returncode == 0, out.stderr
    secrets_seen = 0
    for name, svc in yaml.safe_load(out.stdout)["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET.search(key):
                assert value in markers.values(), f"{name}: {key} is written in the file"
                secrets_seen += 1
            if m := re.search(r"://[^:/@]+:([^@]*)@", value):
                assert m[1] in markers.values(), f"{name}: {key} holds a written password"
                secrets_seen += 1
    assert secrets_seen > 0


# ------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    return [(x.split(None, 1)[0].upper(), x.split(None, 1)[1] if " " in x else "") for x in logical]


def test_dockerfile_builds_one_non_root_image_with_a_cached_dependency_layer() -> None:
    steps = dockerfile_instructions()
    kinds = [k for k, _ in steps]
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [a for k, a in steps if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    index = {k_a: i for i, k_a in enumerate(steps)}
    copy_pyproject = index[("COPY", "pyproject.toml ./")]
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "-r requirements.txt" in a)
    copy_source = index[("COPY", ". .")]
    assert copy_pyproject < install < copy_source, "dependencies must install before the source is copied"
    assert not any(k == "COPY" and a.startswith(("spoton", ".")) for k, a in steps[:install]), (
        "no source before the dependency layer"
    )
    torch = next(a for k, a in steps if k == "RUN" and "TORCH_INDEX_URL" in a)
    assert "-r torch.txt" in torch
    assert args["TORCH_VARIANT"] == "cpu"
    assert args["TORCH_INDEX_URL"].endswith("/whl/${TORCH_VARIANT}")
    cv2_step = next(a for k, a in steps if k == "RUN" and "opencv-python-headless" in a)
    assert "pip uninstall -y opencv-python" in cv2_step and "--force-reinstall --no-deps" in cv2_step
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in {"root", "0"} and kinds.index("USER") < kinds.index("CMD")
    assert any(k == "VOLUME" and "/app/weights" in a for k, a in steps)
    assert not any(k in {"COPY", "ADD"} and "weights" in a for k, a in steps), "weights are mounted, not baked"
    health = next(a for k, a in steps if k == "HEALTHCHECK")
    assert json.loads(health.split("CMD", 1)[1]) == [*ENTRY, "health"]
    cmd = json.loads(next(a for k, a in steps if k == "CMD"))
    assert cmd == [*ENTRY, "api"]
    assert "ENTRYPOINT" not in kinds, "services are chosen by the command alone"


def test_dockerignore_keeps_local_state_and_weights_out() -> None:
    patterns = {p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")}
    for needed in (".git", ".venv", "data", "runs", ".cache", ".stack", ".env", "weights/*"):
        assert needed in patterns, needed
    for kept in ("prefect.yaml", "alembic.ini", "pyproject.toml", "README.md"):
        assert kept not in patterns and (PROJECT_ROOT / kept).exists(), kept


# ------------------------------------------------------- commands exist in the project


def module_of(argv: list[str]) -> str | None:
    return argv[argv.index("-m") + 1] if "-m" in argv else None


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_command_exists(name: str) -> None:
    service = SERVICES[name]
    if service.run is not None:
        assert not service.argv and callable(service.run)
        return
    argv = service.command({"SPOTON_WORK_POOL": "gpu-pool"})
    module = module_of(argv)
    assert module is not None, argv
    assert importlib.util.find_spec(module) is not None, f"{name}: python -m {module} not importable"
    for part in argv:
        if re.fullmatch(r"[a-z_.]+:[a-z_]+", part):  # uvicorn's module:attribute
            mod, attr = part.split(":")
            assert hasattr(importlib.import_module(mod), attr), f"{name}: {part} not found"
    assert not any("{" in part for part in argv), f"unfilled placeholder in {argv}"


def test_service_table_is_runnable_from_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deployments.services", "list"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for name in SERVICES:
        assert re.search(rf"^{re.escape(name)}\s", out.stdout, re.M), name


@pytest.mark.parametrize("target", ["stack", "stack-down"])
def test_make_targets_run_the_stack_module(target: str) -> None:
    out = subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"`make {target}` is not defined: {out.stderr}"
    action = "up" if target == "stack" else "down"
    assert any("deployments.stack" in line and action in shlex.split(line) for line in out.stdout.splitlines()), (
        out.stdout
    )


def test_every_setting_and_variable_is_documented(env_example: dict) -> None:
    """The README's configuration tables name every variable."""
    docs = (PROJECT_ROOT / "README.md").read_text()
    undocumented = sorted(name for name in env_example if name not in docs)
    assert not undocumented, f"not in the README: {undocumented}"
