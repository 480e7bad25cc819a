"""The task runner a flow uses, chosen by ``Settings.task_runner``.

- ``threads`` (default): a thread pool of ``Settings.max_workers``; the heavy
  per-camera work runs in a pool of spawned engine processes
  (``tasks.engine_pool``, one per core), so threads only orchestrate, and the
  ``gpu`` concurrency limit keeps per-camera tracking from oversubscribing an
  accelerator.
- ``dask``: a temporary ``distributed.LocalCluster`` of ``max_workers``
  single-threaded processes, for CPU-bound tracking that threads cannot spread.
- ``dask://host:port``: an existing Dask scheduler (a cluster of GPU nodes).
"""

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from spoton.config import Settings


def task_runner(settings: Settings) -> TaskRunner:
    spec = settings.task_runner.strip()
    if spec == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.max_workers)
    if spec == "dask" or spec.startswith("dask://"):
        # Imported here: distributed is heavy and only these runs need it.
        from prefect_dask import DaskTaskRunner

        if spec == "dask":
            return DaskTaskRunner(
                cluster_class="distributed.LocalCluster",
                cluster_kwargs={"n_workers": settings.max_workers, "threads_per_worker": 1},
            )
        return DaskTaskRunner(address=f"tcp://{spec.removeprefix('dask://')}")
    raise ValueError(
        f"SPOTON_TASK_RUNNER must be 'threads', 'dask' or 'dask://host:port', got {settings.task_runner!r}"
    )
