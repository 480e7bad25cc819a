"""Prefect tasks: thin wrappers that load inputs by reference, call the engine, write artefacts.

Every task retries transient faults with exponential backoff and jitter, has a
timeout, and (where it computes) caches on the content of its inputs, the run
config and the code version: see ``tasks.policy``.
"""

import logging

from tasks.download import download_videos
from tasks.identities import associate_identities, project_to_map
from tasks.policy import code_version
from tasks.publish import publish_frames, publish_status
from tasks.run import copy_artefacts, finalise_run, open_run, report_run
from tasks.track import track_camera


class _ThreadTimeoutNotice(logging.Filter):
    """Drop Prefect's per-task-run warning that a timeout cannot interrupt a worker thread.

    Every task here is a synchronous task in the flow's thread pool by design;
    Prefect enforces their timeouts once the blocking call returns (the README
    says so). One warning per task run says nothing new and drowns the run log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread. Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())

# Hash the sources now that the engine is imported: a file edited later must not
# lend its hash (and so its cache entries) to the code this process already runs.
code_version()

__all__ = [
    "associate_identities",
    "copy_artefacts",
    "download_videos",
    "finalise_run",
    "open_run",
    "project_to_map",
    "publish_frames",
    "publish_status",
    "report_run",
    "track_camera",
]
