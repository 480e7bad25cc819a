"""Per-camera engine work in spawned processes, so thread-pool task runners use every core.

Prefect's default task runner is a thread pool; detection is CPU-bound Python,
NumPy and OpenCV work that holds the GIL often enough that threads of one
process barely add up (two cameras in two threads: x1.1-1.3 of one). The
``track_camera`` task therefore hands ``process_camera_chunk`` to a pool of
spawned worker processes (one per core, ``Settings.engine_workers``) and
waits; its thread stays free for Prefect. Progress comes back over a queue
and is reported by the task's own thread (Prefect's run context lives there).

Workers are long-lived (imports are paid once per process). Each job carries
the caller's environment (settings, S3 credentials), so a worker spawned
earlier never acts on stale ones. A worker that dies (out of memory, a crash in native code)
breaks the pool: it is replaced and the job fails with a ConnectionError,
which the task's retry policy treats as transient.
"""

import multiprocessing as mp
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_QUEUE: Any = None  # the worker's end of the progress queue (set by _init)


def _init(progress_queue: Any) -> None:
    global _QUEUE
    _QUEUE = progress_queue
    from spoton.pipeline import _limit_threads

    _limit_threads()


def _run(job: str, environ: dict[str, str], kwargs: dict[str, Any]) -> Any:
    from spoton.config import get_settings
    from spoton.pipeline import process_camera_chunk

    # The caller's environment as it is now (settings, S3 credentials), not as it was at spawn.
    os.environ.clear()
    os.environ.update(environ)
    os.environ["OMP_NUM_THREADS"] = "1"
    get_settings.cache_clear()
    return process_camera_chunk(**kwargs, progress=lambda done, total: _QUEUE.put((job, done, total)))


class EnginePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ctx = mp.get_context("spawn")
        self._queue = self._ctx.Queue()
        self._latest: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool()
        self._pump_thread = threading.Thread(target=self._pump, name="engine-pool-progress", daemon=True)
        self._pump_thread.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init, initargs=(self._queue,))

    def _pump(self) -> None:
        while True:
            try:
                item = self._queue.get()
            except (EOFError, OSError, ValueError):  # interpreter shutting down, queue closed
                return
            if item is None:  # close()
                return
            job, done, total = item
            with self._lock:
                if job in self._latest:
                    self._latest[job] = (done, total)

    def run(self, kwargs: dict[str, Any], progress: Callable[[int, int], None] | None, poll_s: float = 1.0) -> Any:
        """``process_camera_chunk(**kwargs)`` in a worker; ``progress`` is called from this thread."""
        job = uuid.uuid4().hex
        environ = dict(os.environ)
        with self._lock:
            if self._closed:
                raise RuntimeError("engine pool is closed")
            self._latest[job] = (0, 0)
            pool = self._pool
        reported = (0, 0)
        try:
            future = pool.submit(_run, job, environ, kwargs)
            while True:
                try:
                    return future.result(timeout=poll_s)
                except TimeoutError:
                    pass
                finally:
                    with self._lock:
                        latest = self._latest.get(job, reported)
                    if progress is not None and latest != reported and latest[1] > 0:
                        progress(*latest)
                        reported = latest
        except BrokenProcessPool as e:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
            raise ConnectionError(f"an engine worker process died ({e}); the task will be retried") from e
        finally:
            with self._lock:
                self._latest.pop(job, None)

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes; jobs already submitted finish first.

        ``wait=False`` returns at once (the workers exit when their jobs are
        done); ``wait=True`` waits for them and stops the progress thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool = self._pool
        pool.shutdown(wait=wait)
        if wait:
            self._queue.put(None)
            self._pump_thread.join(timeout=5)
            self._queue.close()
            self._queue.join_thread()


_POOL: EnginePool | None = None
_POOL_LOCK = threading.Lock()


def engine_pool(workers: int) -> EnginePool:
    """The process's pool of ``workers`` engine processes (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.workers != workers:
            if _POOL is not None:
                _POOL.close(wait=False)  # its running jobs finish, then its workers exit
            _POOL = EnginePool(workers)
        return _POOL
