"""Core data types: struct-of-arrays results and the wire schema.

Arrays are validated once at construction (ValueError naming the bad value);
everything downstream can rely on shapes and dtypes. Every container accepts
N = 0.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
PERSON_CLASS_ID = 1  # COCO "person" in torchvision's label space, as the seed used


def _as_2d(name: str, arr: object, cols: int, dtype: type) -> np.ndarray:
    a = np.asarray(arr, dtype=dtype)
    if a.size == 0:
        return np.zeros((0, cols), dtype=dtype)
    if a.ndim != 2 or a.shape[1] != cols:
        raise ValueError(f"{name} must have shape (N, {cols}), got {a.shape}")
    return a


def _as_1d(name: str, arr: object, n: int, dtype: type) -> np.ndarray:
    a = np.asarray(arr, dtype=dtype).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got {a.shape[0]}")
    return a


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Detections:
    """Detections of one frame: boxes in pixels (x1, y1, x2, y2)."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = _as_2d("xyxy", self.xyxy, 4, np.float32)
        n = xyxy.shape[0]
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", _as_1d("confidence", self.confidence, n, np.float32))
        object.__setattr__(self, "class_id", _as_1d("class_id", self.class_id, n, np.int32))
        if self.embedding is not None:
            emb = np.asarray(self.embedding, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embedding must have shape ({n}, D), got {emb.shape}")
            object.__setattr__(self, "embedding", emb)

    @classmethod
    def empty(cls, dim: int | None = None) -> "Detections":
        emb = None if dim is None else np.zeros((0, dim), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), emb)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def filter(self, mask: np.ndarray) -> "Detections":
        """Subset by boolean mask or index array."""
        emb = None if self.embedding is None else self.embedding[mask]
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask], emb)

    def with_embedding(self, embedding: np.ndarray) -> "Detections":
        return Detections(self.xyxy, self.confidence, self.class_id, embedding)

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def as_boxmot(self) -> np.ndarray:
        """(N, 6) [x1, y1, x2, y2, conf, cls] as boxmot trackers expect."""
        return np.concatenate(
            [self.xyxy, self.confidence[:, None], self.class_id[:, None].astype(np.float32)], axis=1
        ).astype(np.float32)


@dataclass(frozen=True)
class FrameTracks:
    """Confirmed tracks of one camera at one frame."""

    camera_id: str
    frame_idx: int
    track_id: np.ndarray
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    map_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.frame_idx < 0:
            raise ValueError(f"frame_idx must be >= 0, got {self.frame_idx}")
        xyxy = _as_2d("xyxy", self.xyxy, 4, np.float32)
        n = xyxy.shape[0]
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "track_id", _as_1d("track_id", self.track_id, n, np.int64))
        object.__setattr__(self, "confidence", _as_1d("confidence", self.confidence, n, np.float32))
        object.__setattr__(self, "class_id", _as_1d("class_id", self.class_id, n, np.int32))
        map_xy = np.asarray(self.map_xy, dtype=np.float32)
        if map_xy.size == 0 and n > 0:
            map_xy = np.full((n, 2), np.nan, np.float32)
        object.__setattr__(self, "map_xy", _as_2d("map_xy", map_xy, 2, np.float32))
        if self.map_xy.shape[0] != n:
            raise ValueError(f"map_xy must have {n} rows, got {self.map_xy.shape[0]}")
        if self.embedding is not None:
            emb = np.asarray(self.embedding, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embedding must have shape ({n}, D), got {emb.shape}")
            object.__setattr__(self, "embedding", emb)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


@dataclass(frozen=True)
class Tracklet:
    """One per-camera track over its lifetime: the unit of cross-camera association.

    ``map_xy`` rows are NaN where the foot point fell outside the ground plane.
    ``embedding`` is the L2-normalised mean appearance (D,) or None.
    """

    camera_id: str
    track_id: int
    frame_idx: np.ndarray
    xyxy: np.ndarray
    map_xy: np.ndarray
    confidence: np.ndarray
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        frames = np.asarray(self.frame_idx, dtype=np.int64).reshape(-1)
        n = frames.shape[0]
        if n and np.any(np.diff(frames) <= 0):
            raise ValueError(f"tracklet {self.camera_id}/{self.track_id}: frame_idx must increase")
        object.__setattr__(self, "frame_idx", frames)
        object.__setattr__(self, "xyxy", _as_2d("xyxy", self.xyxy, 4, np.float32))
        object.__setattr__(self, "map_xy", _as_2d("map_xy", self.map_xy, 2, np.float32))
        object.__setattr__(self, "confidence", _as_1d("confidence", self.confidence, n, np.float32))
        if self.xyxy.shape[0] != n or self.map_xy.shape[0] != n:
            raise ValueError(f"tracklet {self.camera_id}/{self.track_id}: ragged arrays")
        if self.embedding is not None:
            object.__setattr__(self, "embedding", np.asarray(self.embedding, np.float32).reshape(-1))

    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)

    @property
    def first_frame(self) -> int:
        return int(self.frame_idx[0])

    @property
    def last_frame(self) -> int:
        return int(self.frame_idx[-1])


# ---------------------------------------------------------------- wire schema
# One set of pydantic models shared by the publisher, Redis, REST and WebSocket,
# field for field the seed's contract plus ``schema_version``.

TaskStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]


class TrackWire(BaseModel):
    model_config = ConfigDict(extra="forbid")
    track_id: int
    global_id: str | None = None
    bbox_xyxy: list[float] = Field(min_length=4, max_length=4)
    confidence: float | None = None
    class_id: int | None = PERSON_CLASS_ID
    map_coords: list[float] | None = Field(default=None, description="[x, y] in metres")


class CameraFrameWire(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_source: str
    tracks: list[TrackWire] = Field(default_factory=list)


class TrackingUpdatePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    frame_index: int = Field(ge=0)
    scene_id: str
    timestamp_processed_utc: str
    cameras: dict[str, CameraFrameWire]


class StatusUpdatePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    status: TaskStatus
    progress: float = Field(ge=0, le=100)
    current_step: str = ""
    details: str | None = None


class WsMessage(BaseModel):
    """Envelope of every WebSocket message: ``{"type", "payload"}`` as the seed."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["tracking_update", "status_update"]
    payload: TrackingUpdatePayload | StatusUpdatePayload


def tracking_message(payload: TrackingUpdatePayload) -> WsMessage:
    return WsMessage(type="tracking_update", payload=payload)


def status_message(payload: StatusUpdatePayload) -> WsMessage:
    return WsMessage(type="status_update", payload=payload)

