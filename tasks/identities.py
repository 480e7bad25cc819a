"""associate_identities and project_to_map: one chunk's cameras joined into people on the floor."""

import time

import pandas as pd
from prefect import task

from spoton.associate import AssociationConfig, IdentityGallery, associate, fuse_positions
from spoton.config import Environment, RunConfig
from spoton.store import read_tracklets
from tasks.policy import CONTENT_KEY, RETRY, current_key
from tasks.refs import Artefacts, CameraTracks, ChunkIdentities, ChunkMap, RunRef

IDENTITY_COLUMNS = {"camera_id": "str", "track_id": "int64", "global_id": "int64"}


def identities_frame(global_ids: dict[tuple[str, int], int]) -> pd.DataFrame:
    """identities.parquet rows, sorted by (camera_id, track_id): equal results, equal bytes."""
    rows = sorted((camera, track, gid) for (camera, track), gid in global_ids.items())
    return pd.DataFrame(rows, columns=list(IDENTITY_COLUMNS)).astype(IDENTITY_COLUMNS)


@task(
    name="associate_identities",
    task_run_name="associate_identities[{chunk}]",
    timeout_seconds=3600,
    cache_policy=CONTENT_KEY,
    persist_result=True,
    **RETRY,
)
def associate_identities(
    environment: Environment,
    chunk: str,
    tracks: list[CameraTracks],
    previous: ChunkIdentities | None,
    config: RunConfig,
    run: RunRef,
) -> ChunkIdentities:
    """Global ids for the chunk's tracklets, continuing the previous chunk's identity gallery."""
    t0 = time.perf_counter()
    tracklets = [t for cam in tracks for t in read_tracklets(cam.artefacts.run.store(), cam.camera_id, chunk)]
    gallery = IdentityGallery.from_npz(previous.artefacts.read_npz("gallery")) if previous else None
    result = associate(tracklets, environment, AssociationConfig(**config.association), gallery)
    ids = identities_frame(result.global_ids)
    files = {"identities": f"{chunk}/identities.parquet", "gallery": f"{chunk}/gallery.npz"}
    store = run.store()
    store.write_parquet(files["identities"], ids)
    store.write_npz(files["gallery"], **result.gallery.to_npz())
    return ChunkIdentities(
        chunk=chunk,
        tracklets=len(tracklets),
        global_ids=int(ids["global_id"].nunique()),
        seconds=time.perf_counter() - t0,
        artefacts=Artefacts(run, files, current_key()),
        stats=result.stats,
    )


@task(
    name="project_to_map",
    task_run_name="project_to_map[{chunk}]",
    timeout_seconds=3600,
    cache_policy=CONTENT_KEY,
    persist_result=True,
    **RETRY,
)
def project_to_map(
    environment: Environment,
    chunk: str,
    tracks: list[CameraTracks],
    identities: ChunkIdentities,
    config: RunConfig,
    run: RunRef,
) -> ChunkMap:
    """One floor position per identity and frame, fused over the cameras that see it."""
    t0 = time.perf_counter()
    tracks_df = pd.concat(
        [cam.artefacts.read_parquet("tracks").assign(camera_id=cam.camera_id) for cam in tracks],
        ignore_index=True,
    )
    ids = identities.artefacts.read_parquet("identities")
    global_ids = {
        (str(c), int(t)): int(g) for c, t, g in ids[["camera_id", "track_id", "global_id"]].itertuples(index=False)
    }
    positions = fuse_positions(tracks_df, global_ids, environment, AssociationConfig(**config.association))
    files = {"map": f"{chunk}/map.parquet"}
    run.store().write_parquet(files["map"], positions)
    return ChunkMap(
        chunk=chunk,
        rows=len(positions),
        seconds=time.perf_counter() - t0,
        artefacts=Artefacts(run, files, current_key()),
    )
