"""Prefect setup for SpotOn, idempotent: ``python -m deployments.setup``.

Against the Prefect API in ``PREFECT_API_URL`` it
1. creates the process work pool ``Settings.work_pool`` (kept as is when present),
2. creates or resizes the ``gpu`` global concurrency limit to ``Settings.gpu_slots``
   (per-camera tracking takes one slot per task),
3. runs ``prefect deploy --all`` on the repository's ``prefect.yaml``
   (``process-environment`` on demand, ``reprocess`` nightly).
Run it again after changing any of them; it converges instead of failing.
"""

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from spoton.config import PROJECT_ROOT, Settings, get_settings
from tasks.policy import GPU_LIMIT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def deployment_pools(prefect_yaml: Path = PREFECT_YAML) -> set[str]:
    """Work pools the deployments in prefect.yaml run on."""
    doc = yaml.safe_load(prefect_yaml.read_text())
    return {d["work_pool"]["name"] for d in doc.get("deployments", [])}


async def ensure_work_pool(name: str) -> bool:
    """Create a process work pool; True when created, False when it already existed."""
    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return False
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="SpotOn flow runs (process worker)",
                )
            )
            return True


async def ensure_gpu_limit(slots: int) -> str:
    """The ``gpu`` global concurrency limit at ``slots``: 'created', 'resized' or 'unchanged'."""
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            return "created"
        if limit.limit == slots and limit.active:
            return "unchanged"
        await client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        return "resized"


def deploy_all() -> None:
    """``prefect deploy --all`` from the repository root, where prefect.yaml and the flows are."""
    subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_ROOT,
        check=True,
    )


def setup(settings: Settings, deploy: bool = True) -> None:
    pools = deployment_pools()
    if pools != {settings.work_pool}:
        raise SystemExit(
            f"prefect.yaml deploys to {sorted(pools)} but SPOTON_WORK_POOL is "
            f"{settings.work_pool!r}; "
            "change the gpu_pool anchor in prefect.yaml or the setting so they agree"
        )
    created = asyncio.run(ensure_work_pool(settings.work_pool))
    print(f"work pool {settings.work_pool}: {'created' if created else 'present'}")
    print(
        f"concurrency limit {GPU_LIMIT}: {asyncio.run(ensure_gpu_limit(settings.gpu_slots))}"
        f" ({settings.gpu_slots} slot(s))"
    )
    if deploy:
        deploy_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.setup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-deploy", action="store_true", help="pool and limit only")
    args = parser.parse_args(argv)
    setup(get_settings(), deploy=not args.no_deploy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
