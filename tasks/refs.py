"""What tasks hand each other: small references, never frames or arrays.

Every result that names artefacts carries the run that wrote them and a content
``key``. A cached result keeps pointing at the run that first computed it;
readers go through that reference, and ``copy_artefacts`` brings the files into
the current run so every run folder is complete.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spoton.config import Environment
from spoton.store import RunStore
from tasks.policy import digest


@dataclass(frozen=True)
class RunRef:
    runs_url: str
    run_id: str

    def store(self) -> RunStore:
        return RunStore(self.runs_url, self.run_id)


@dataclass(frozen=True)
class Artefacts:
    """Files one task wrote (name -> run-relative path) in the run that holds them.

    Equal keys mean equal bytes: the key is the content key of the task that wrote them.
    """

    run: RunRef
    files: dict[str, str]
    key: str

    def read_parquet(self, name: str) -> pd.DataFrame:
        return self.run.store().read_parquet(self.files[name])

    def read_npz(self, name: str) -> dict[str, np.ndarray]:
        return self.run.store().read_npz(self.files[name])


@dataclass(frozen=True)
class VideoRef:
    """One sub-video of one camera, fetched to the local cache."""

    camera_id: str
    chunk: str
    chunk_index: int
    url: str
    path: str  # local copy on the machine that downloaded it
    content_key: str
    frames: int
    frame_offset: int

    @property
    def key(self) -> str:
        # The local path and source URL are where the bytes are, not what they are.
        return digest([self.content_key, self.camera_id, self.chunk, self.chunk_index, self.frame_offset])


@dataclass(frozen=True)
class SceneRef:
    """An environment's sub-videos selected for a run, in processing order."""

    environment: Environment
    videos_url: str
    videos: tuple[VideoRef, ...]
    gt_url: str | None = None  # ground truth next to the videos, when the scene ships one
    context: tuple[VideoRef, ...] = ()  # fetched, not selected: neighbours of selected chunks

    @property
    def chunks(self) -> list[str]:
        return list(dict.fromkeys(v.chunk for v in sorted(self.videos, key=lambda v: v.chunk_index)))

    def chunk_videos(self, chunk: str) -> list[VideoRef]:
        return [v for v in self.videos if v.chunk == chunk]

    def neighbours(self, video: VideoRef) -> list[VideoRef]:
        """The same camera's sub-videos just before and after ``video`` (selected or not)."""
        own = {v.chunk_index: v for v in (*self.videos, *self.context) if v.camera_id == video.camera_id}
        return [own[k] for k in (video.chunk_index - 1, video.chunk_index + 1) if k in own]


@dataclass(frozen=True)
class CameraTracks:
    """tracks.parquet + embeddings.npz of one camera and chunk."""

    camera_id: str
    chunk: str
    frames: int
    tracks: int
    seconds: dict[str, float]  # engine stage -> seconds
    artefacts: Artefacts

    @property
    def key(self) -> str:
        return self.artefacts.key


@dataclass(frozen=True)
class ChunkIdentities:
    """identities.parquet + gallery.npz of one chunk."""

    chunk: str
    tracklets: int
    global_ids: int
    seconds: float
    artefacts: Artefacts
    stats: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.artefacts.key


@dataclass(frozen=True)
class ChunkMap:
    """map.parquet of one chunk: fused per-identity floor positions."""

    chunk: str
    rows: int
    seconds: float
    artefacts: Artefacts

    @property
    def key(self) -> str:
        return self.artefacts.key
