"""Tables and API schemas (SQLModel): ``XBase`` shared fields, ``X`` table, ``XPublic`` out.

Results are keyed by ``run_id`` (the Prefect flow-run id, which the API hands out
as ``task_id``). Bulk tables store float32 (``REAL``) because the engine's
artefacts are float32: the database keeps exactly what the pipeline produced, and
every wire payload is built from these rows (see ``api.payloads``).
"""

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import ARRAY, REAL, BigInteger, Column, DateTime, Index, SmallInteger, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from spoton.config import RunConfig
from spoton.types import TaskStatus, TrackingUpdatePayload

ENVIRONMENT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a file stem: no '/', no '..' escapes

# ------------------------------------------------------------------- tables


class TaskBase(SQLModel):
    environment_id: str = Field(max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


class Task(TaskBase, table=True):
    """One processing run; created by the API on start, or by the first publish of a run
    started elsewhere (CLI, Prefect UI) so its results are served all the same."""

    task_id: uuid.UUID = Field(primary_key=True)
    fps: float = Field(description="frame rate of the environment's videos, for times in seconds")
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    # last status_update the flow published: the durable copy of Redis' latest status
    status: str | None = Field(default=None, max_length=16)
    progress: float = 0.0
    current_step: str = ""
    details: str | None = None
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    __table_args__ = (Index("ix_task_created_at", "created_at"),)


class Frame(SQLModel, table=True):
    """Every published frame, with or without people: frames stay contiguous for players,
    per-frame people counts include zeros, and a replayed message keeps its timestamp."""

    run_id: uuid.UUID = Field(primary_key=True)
    frame_idx: int = Field(primary_key=True)
    processed_at: datetime = Field(sa_type=DateTime(timezone=True))
    cameras: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))


class Track(SQLModel, table=True):
    """One tracked box of one camera at one frame. The key leads with (run_id, frame_idx)
    so a frame range of a run is one index range scan."""

    run_id: uuid.UUID = Field(primary_key=True)
    frame_idx: int = Field(primary_key=True)
    camera_id: str = Field(primary_key=True, max_length=32)
    track_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    global_id: int | None = Field(default=None, sa_type=BigInteger)
    x1: float = Field(sa_type=REAL)
    y1: float = Field(sa_type=REAL)
    x2: float = Field(sa_type=REAL)
    y2: float = Field(sa_type=REAL)
    confidence: float | None = Field(default=None, sa_type=REAL)
    class_id: int | None = Field(default=None, sa_type=SmallInteger)
    map_x: float | None = Field(default=None, sa_type=REAL)
    map_y: float | None = Field(default=None, sa_type=REAL)

    __table_args__ = (
        # identity summaries and per-camera appearances: grouped by global id
        Index("ix_track_run_global", "run_id", "global_id", "camera_id", "frame_idx",
              postgresql_include=["track_id"]),
    )


class IdentityPosition(SQLModel, table=True):
    """Fused floor position of one identity at one frame (metres)."""

    __tablename__ = "identity_position"

    run_id: uuid.UUID = Field(primary_key=True)
    global_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    frame_idx: int = Field(primary_key=True)
    map_x: float = Field(sa_type=REAL)
    map_y: float = Field(sa_type=REAL)
    n_cameras: int = Field(sa_type=SmallInteger)

    __table_args__ = (
        # people per frame: counted from the index alone
        Index("ix_identity_position_run_frame", "run_id", "frame_idx", postgresql_include=["global_id"]),
    )


# ---------------------------------------------------------------- API schemas
# Task schemas share their fields with the table (SQLModel, as the template does);
# result schemas are plain pydantic: validating an hour of frames or a 90,000-point
# trajectory is twice as fast without SQLModel's layer.


class Message(SQLModel):
    detail: str


class TaskStart(BaseModel):
    """Body of ``POST /processing-tasks/start``; every field but the environment is optional.

    A plain pydantic model (not SQLModel) because unknown fields must be refused.
    """

    model_config = ConfigDict(extra="forbid")

    environment_id: Annotated[str, StringConstraints(pattern=ENVIRONMENT_ID)] = PydanticField(
        examples=["factory"]
    )
    videos: str | None = PydanticField(
        None, max_length=2048, description="fsspec URL of the videos, overrides the environment's"
    )
    chunks: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] | None = PydanticField(
        None, max_length=10_000, description="sub-video names to process (default: all)"
    )
    run_config: RunConfig | None = PydanticField(None, description="detector, tracker, embedder and their options")
    max_frames: int | None = PydanticField(
        None, ge=1, description="process at most this many frames per sub-video"
    )


class TaskStarted(SQLModel):
    task_id: uuid.UUID
    message: str
    status_url: str
    websocket_url: str


class TaskPublic(TaskBase):
    task_id: uuid.UUID
    fps: float
    created_at: datetime
    status: TaskStatus | None
    progress: float
    current_step: str
    details: str | None
    updated_at: datetime | None


class TasksPublic(SQLModel):
    data: list[TaskPublic]
    count: int


class TaskStatusPublic(SQLModel):
    task_id: uuid.UUID
    status: TaskStatus
    progress: float = Field(ge=0, le=100)
    current_step: str
    details: str | None = None


class CameraCalibrationPublic(BaseModel):
    camera_id: str
    image_size: tuple[int, int] | None
    has_full_calibration: bool = PydanticField(description="K, R and t known (not only a homography)")
    reprojection_error_m: float | None
    position_m: tuple[float, float, float] | None = PydanticField(description="camera centre (x, y, height)")


class EnvironmentSummary(BaseModel):
    environment_id: str
    description: str
    cameras: list[str]
    fps: float
    problem: str | None = PydanticField(default=None, description="why a configured environment cannot be loaded")


class EnvironmentPublic(EnvironmentSummary):
    map_width_m: float
    map_height_m: float
    calibration: list[CameraCalibrationPublic]
    overlap: list[list[float]] | None = PydanticField(
        description="fraction of the smaller view both cameras see, in `cameras` order; "
        "null unless every camera's image size is known"
    )


class FramesPage(BaseModel):
    items: list[TrackingUpdatePayload]
    next_cursor: str | None = PydanticField(description="pass as `cursor` for the next page; null at the end")


class IdentitySummary(BaseModel):
    global_id: str
    first_frame: int
    last_frame: int
    cameras: list[str]
    n_detections: int


class IdentitiesPage(BaseModel):
    data: list[IdentitySummary]
    count: int


class TrajectoryPoint(BaseModel):
    frame_idx: int
    map_x: float
    map_y: float
    n_cameras: int


class CameraAppearance(BaseModel):
    camera_id: str
    first_frame: int
    last_frame: int
    n_detections: int
    track_ids: list[int]


class IdentityDetail(IdentitySummary):
    trajectory: list[TrajectoryPoint] = PydanticField(description="fused floor positions, metres")
    appearances: list[CameraAppearance]


class Heatmap(BaseModel):
    cell_m: float
    width_m: float
    height_m: float
    counts: list[list[int]] = PydanticField(description="rows along y, columns along x: identity-frames per cell")
    max: int
    total: int


class PeopleCountBin(BaseModel):
    start_frame: int
    end_frame: int
    time_s: float = PydanticField(description="start of the bin in seconds from the first frame")
    mean: float
    max: int
    unique: int = PydanticField(description="distinct identities on the floor in the bin")


class PeopleCount(BaseModel):
    """People on the floor (fused positions), per frame or per second."""

    fps: float
    bucket: str
    bins: list[PeopleCountBin]


class Dwell(BaseModel):
    global_id: str
    first_frame: int
    last_frame: int
    dwell_s: float = PydanticField(description="first to last frame on the floor")
    visible_s: float = PydanticField(description="time actually placed on the floor")


class DwellTimes(BaseModel):
    fps: float
    data: list[Dwell]


class HealthReport(BaseModel):
    status: str
    checks: dict[str, str]
