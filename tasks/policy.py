"""How every task retries, caches and persists its result.

Cache keys are built from what determines a task's output: the content keys of
its inputs (a video's ETag/sha256, upstream results' keys), ``RunConfig.digest()``
and the code version. They never contain the run id, so a crashed or cancelled
run that is started again with the same inputs takes every finished task from
result storage instead of recomputing it.
"""

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import RemoteFileSystem
from prefect.settings import get_current_settings
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction

import spoton
from spoton.config import Environment, RunConfig, Settings
from spoton.sources import CorruptVideoError

GPU_LIMIT = "gpu"  # global concurrency limit that per-camera tracking takes a slot of

# Missing files, bad values and broken videos stay broken however often we ask.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    CorruptVideoError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
# Network and storage hiccups: ConnectionError and TimeoutError are OSErrors too.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying can help: a transient fault in the cause chain and no permanent one."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, PERMANENT_ERRORS) for e in chain):
        return False
    return any(isinstance(e, TRANSIENT_ERRORS) for e in chain)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:  # noqa: ARG001
    """``retry_condition_fn`` of every task: retry only faults that can go away by themselves."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's own exception
        return is_transient(exc)
    return False


RETRY: dict[str, Any] = {
    "retries": 3,
    # 1 s, 2 s, 4 s, each ±50 % so tasks that failed together do not retry together.
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}


# ------------------------------------------------------------------- keys


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """JSON-able form of calibration data; arrays by dtype, shape and a hash of their bytes."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return [str(data.dtype), list(data.shape), hashlib.sha256(data.tobytes()).hexdigest()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def environment_key(env: Environment) -> str:
    """What of an environment changes results: cameras, floor plane, calibration, frame rate.

    Where the videos live and how the site is described do not, so a scene moved
    to another bucket still hits the cache (its videos' content keys decide).
    """
    return digest(
        {
            "environment_id": env.environment_id,
            "cameras": list(env.cameras),
            "plane": _canonical(env.plane),
            "calibration": _canonical(dict(sorted(env.calibration.items()))),
            "fps": env.fps,
        }
    )


def fingerprint(value: Any) -> Any:
    """A task input reduced to the content that determines the task's output."""
    key = getattr(value, "key", None)
    if isinstance(key, str):  # references (VideoRef, CameraTracks, …) carry their content key
        return key
    if isinstance(value, RunConfig):
        return value.digest()
    if isinstance(value, Environment):
        return environment_key(value)
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot derive a cache key from a {type(value).__name__}: pass a reference with a content `key`")


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root.parent).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


@functools.cache
def code_version() -> str:
    """Package version plus a hash of the engine and task sources: code changes re-key caches."""
    spoton_dir = Path(spoton.__file__).resolve().parent
    tasks_dir = Path(__file__).resolve().parent
    return f"{spoton.__version__}+{_source_digest(spoton_dir)}.{_source_digest(tasks_dir)}"


@dataclasses.dataclass
class ContentKey(CachePolicy):
    """Key = task name + code version + input fingerprints.

    ``exclude`` names inputs that say where to write, not what (the run reference);
    ``config_ignores`` names RunConfig fields the task does not read, so changing
    them (association thresholds, for tracking) keeps the task's cache.
    """

    exclude: tuple[str, ...] = ("run",)
    config_ignores: tuple[str, ...] = ()

    def _view(self, value: Any) -> Any:
        if isinstance(value, RunConfig) and self.config_ignores:
            defaults = RunConfig()
            return value.model_copy(update={f: getattr(defaults, f) for f in self.config_ignores})
        return value

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],  # noqa: ARG002
        **kwargs: Any,
    ) -> str | None:
        kept = {name: v for name, v in inputs.items() if name not in self.exclude}
        parts = {name: fingerprint(self._view(v)) for name, v in kept.items()}
        return digest({"task": task_ctx.task.name, "code": code_version(), "inputs": parts})


CONTENT_KEY = ContentKey()
# Tracking reads no association settings: a reprocess with new thresholds re-associates only.
TRACKING_KEY = ContentKey(config_ignores=("association",))


def current_key() -> str:
    """The cache key Prefect computed for the running task: the content key of what it returns.

    Downstream tasks key on it, so keys chain from the videos to the map without a run id.
    """
    txn = get_transaction()
    if txn is None or not txn.key:
        raise RuntimeError("current_key() needs a task run with a cache policy (no transaction key)")
    return txn.key


def result_storage(settings: Settings) -> Path | str | None:
    """Where task results, and so cache entries, are kept.

    A Prefect default storage block (``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``)
    wins: ``None`` lets Prefect use it. Otherwise results sit next to the run
    artefacts under ``<runs_url>/.results``, so every worker that sees the
    artefacts also sees the cache: a local folder, or for a remote ``runs_url``
    (``s3://``) a RemoteFileSystem block saved for that URL, since tasks only
    take saved blocks.
    """
    if get_current_settings().results.default_storage_block:
        return None
    base = f"{settings.runs_url.rstrip('/')}/.results"
    if "://" not in base or base.startswith("file://"):
        return Path(base.removeprefix("file://"))
    options = {"endpoint_url": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}
    block = RemoteFileSystem(basepath=base, settings=options if base.startswith("s3") else {})
    name = f"spoton-results-{digest(base)[:12]}"
    block.save(name, overwrite=True)
    return f"remote-file-system/{name}"
