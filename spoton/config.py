"""Settings and environments.

``Settings`` is one pydantic-settings object (env prefix ``SPOTON_``, optional
``.env``), built once per process by ``get_settings()``. An ``Environment``
describes a site: its cameras, where their sub-videos live and their
calibration. Environments come from JSON files in ``environments/`` (users add
sites by dropping a file there) or are discovered from a self-describing
location holding ``video_<env>/<camera_id>/sub_video_NN.mp4`` and
``homography_data/<env>.json``.
"""

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spoton.geometry import (
    CameraGeometry,
    GroundPlane,
    homography_from_calibration,
    homography_from_points,
    rotation_matrix,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob of the platform; each field is documented in the README table."""

    model_config = SettingsConfigDict(env_prefix="SPOTON_", env_file=".env", extra="ignore")

    data_dir: Path = Field(PROJECT_ROOT / "data", description="generated scenes (demo) live here")
    runs_url: str = Field(str(PROJECT_ROOT / "runs"), description="fsspec URL of run artefacts")
    cache_dir: Path = Field(PROJECT_ROOT / ".cache" / "videos", description="local video cache")
    weights_dir: Path = Field(PROJECT_ROOT / "weights", description="model weight files")
    environments_dir: Path = Field(PROJECT_ROOT / "environments", description="environment JSON files")
    homography_dir: Path = Field(PROJECT_ROOT / "homography_data", description="calibration files")
    videos_url: str | None = Field(None, description="override every environment's videos location")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS…)")
    device: str = Field("auto", description="torch device: auto | cpu | cuda | cuda:N")

    database_url: str = Field("postgresql+psycopg://postgres@127.0.0.1:5432/spoton")
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    stream_maxlen: int = Field(200_000, description="max messages kept per task stream in Redis")
    stream_ttl_s: int = Field(7 * 24 * 3600, description="task stream retention after last write")

    api_keys: list[str] = Field(default_factory=list, description="accepted API keys; empty = open")
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    max_body_bytes: int = Field(64 * 1024)

    deployment_name: str = Field("process-environment/process-environment")
    work_pool: str = Field("gpu-pool")
    gpu_slots: int = Field(1, description="size of the 'gpu' global concurrency limit")
    task_runner: str = Field("threads", description="threads | dask | dask://host:port")
    max_workers: int = Field(4, description="thread-pool size for per-camera tasks")
    engine_workers: int = Field(
        0, ge=0, description="processes running per-camera tracking (0: one per core; 1: in the task's thread)"
    )


@functools.cache
def get_settings() -> Settings:
    return Settings()


@dataclass(frozen=True)
class CameraCalibration:
    camera_id: str
    geometry: CameraGeometry


@dataclass(frozen=True)
class Environment:
    environment_id: str
    cameras: tuple[str, ...]
    plane: GroundPlane
    calibration: dict[str, CameraGeometry]
    videos_url: str  # fsspec URL of the folder holding ``video_dir``
    video_dir: str  # e.g. "video_s14"
    description: str = ""
    fps: float = 25.0
    sub_videos: tuple[str, ...] = ()  # empty: discover sub_video_*.mp4
    frames_glob: str | None = None  # image-sequence sources (MultiviewX): glob per camera folder
    extra: dict = field(default_factory=dict)

    def camera_url(self, camera_id: str, videos_url: str | None = None) -> str:
        base = (videos_url or self.videos_url).rstrip("/")
        return f"{base}/{self.video_dir}/{camera_id}"


# ------------------------------------------------------------- calibration I/O


def _camera_id_of(entry: dict, known: set[str]) -> str:
    """Calibration tools label cameras loosely ("Cam 1"); frame_path names the folder."""
    cid = str(entry.get("id", ""))
    if cid in known or not entry.get("frame_path"):
        return cid
    parent = Path(str(entry["frame_path"])).parent.name
    return parent if parent in known or not known else cid


def load_calibration(path: Path | str, cameras: tuple[str, ...] = ()) -> tuple[GroundPlane, dict[str, CameraGeometry]]:
    """Read a calibration JSON (seed point-pair format, optionally with full camera matrices).

    Map pixels are divided by ``pixels_per_meter`` so every H maps image px to metres.
    Full calibration (K, rvec/R, tvec in metres) wins over point pairs when present.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration file {path} is not valid JSON: {e}") from None
    gp = doc.get("ground_plane") or {}
    try:
        ppm = float(gp.get("pixels_per_meter", 1.0))
        plane = GroundPlane(float(gp["width"]) / ppm, float(gp["height"]) / ppm)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: ground_plane needs width, height, pixels_per_meter ({e})") from None
    known = set(cameras)
    out: dict[str, CameraGeometry] = {}
    for entry in doc.get("cameras", []):
        cid = _camera_id_of(entry, known)
        size = tuple(int(v) for v in entry["image_size"]) if entry.get("image_size") else None
        if entry.get("K") is not None and entry.get("tvec") is not None:
            rot = entry.get("R", entry.get("rvec"))
            H = homography_from_calibration(entry["K"], rot, entry["tvec"])
            geo = CameraGeometry(
                cid, H, size, np.asarray(entry["K"], np.float64), rotation_matrix(rot),
                np.asarray(entry["tvec"], np.float64).reshape(3), 0.0,
            )
        elif len(entry.get("source_points", [])) >= 4:
            fit = homography_from_points(
                np.asarray(entry["source_points"]), np.asarray(entry["destination_points"]) / ppm
            )
            geo = CameraGeometry(cid, fit.H, size, reprojection_error_m=fit.reprojection_error_m)
        elif entry.get("homography") is not None:
            Hpx = np.asarray(entry["homography"], np.float64)
            geo = CameraGeometry(cid, np.diag([1 / ppm, 1 / ppm, 1.0]) @ Hpx, size)
        else:
            raise ValueError(f"{path}: camera {cid!r} has neither matrices, 4+ point pairs nor a homography")
        out[cid] = geo
    if cameras:
        missing = [c for c in cameras if c not in out]
        if missing:
            raise ValueError(f"{path}: no calibration for cameras {missing}")
    return plane, out


# ----------------------------------------------------------- environment registry


def _environment_from_file(path: Path, settings: Settings) -> Environment:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"environment file {path} is not valid JSON: {e}") from None
    env_id = doc["environment_id"]
    cameras = tuple(doc["cameras"])
    calib_path = Path(doc.get("calibration", f"{env_id}.json"))
    if not calib_path.is_absolute():
        calib_path = settings.homography_dir / calib_path
    plane, calib = load_calibration(calib_path, cameras)
    videos_url = str(doc.get("videos_url", settings.data_dir / env_id))
    if not ("://" in videos_url or Path(videos_url).is_absolute()):
        videos_url = str(PROJECT_ROOT / videos_url)
    return Environment(
        environment_id=env_id,
        cameras=cameras,
        plane=plane,
        calibration=calib,
        videos_url=settings.videos_url or videos_url,
        video_dir=doc.get("video_dir", f"video_{env_id}"),
        description=doc.get("description", ""),
        fps=float(doc.get("fps", 25.0)),
        sub_videos=tuple(doc.get("sub_videos", ())),
        frames_glob=doc.get("frames_glob"),
        extra={k: v for k, v in doc.items() if k not in Environment.__dataclass_fields__},
    )


def list_environments(settings: Settings | None = None) -> list[str]:
    settings = settings or get_settings()
    return sorted(p.stem for p in settings.environments_dir.glob("*.json"))


class UnknownEnvironmentError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def load_environment(
    environment_id: str, videos_url: str | None = None, settings: Settings | None = None
) -> Environment:
    """Configured environment, or one discovered from a self-describing ``videos_url``.

    A ``homography_data/<env>.json`` found at ``videos_url`` overrides the configured
    calibration; cameras are discovered from ``video_<env>/*`` folders when the
    environment is in no config.
    """
    from spoton.sources import discover_location  # sources imports config: keep the cycle lazy

    settings = settings or get_settings()
    path = settings.environments_dir / f"{environment_id}.json"
    env = _environment_from_file(path, settings) if path.exists() else None
    if videos_url is None:
        if env is None:
            known = ", ".join(list_environments(settings)) or "none"
            raise UnknownEnvironmentError(
                f"unknown environment {environment_id!r} (configured: {known}); "
                "pass --videos pointing at a folder with video_<env>/<camera>/ and homography_data/<env>.json"
            )
        return env
    found = discover_location(videos_url, environment_id, env.video_dir if env else None)
    if env is None and found.calibration_file is None:
        raise UnknownEnvironmentError(
            f"environment {environment_id!r} is not configured and {videos_url} has no "
            f"homography_data/{environment_id}.json"
        )
    cameras = env.cameras if env is not None and not found.cameras else tuple(found.cameras)
    if found.calibration_file is not None:
        plane, calib = load_calibration(found.calibration_file, cameras)
    else:
        assert env is not None
        plane, calib = env.plane, env.calibration
    base = env or Environment(environment_id, cameras, plane, calib, videos_url, found.video_dir)
    return Environment(
        environment_id=environment_id,
        cameras=cameras,
        plane=plane,
        calibration=calib,
        videos_url=videos_url,
        video_dir=found.video_dir,
        description=base.description,
        fps=found.fps or base.fps,
        sub_videos=base.sub_videos,
        frames_glob=base.frames_glob,
        extra=base.extra,
    )


# ------------------------------------------------------------------ run config


class RunConfig(BaseModel):
    """Everything that changes a run's results; its digest keys caches and manifests.

    Model names select implementations (see ``spoton.detect``, ``spoton.track``,
    ``spoton.embed``); ``*_options`` are passed to their constructors, so users
    tune without code changes. ``association`` is validated by
    ``spoton.associate.AssociationConfig``.
    """

    model_config = ConfigDict(extra="forbid")

    detector: str = "bgsub"
    detector_options: dict[str, Any] = Field(default_factory=dict)
    tracker: str = "bytetrack"
    tracker_options: dict[str, Any] = Field(default_factory=dict)
    embedder: str = "color"
    embedder_options: dict[str, Any] = Field(default_factory=dict)
    association: dict[str, Any] = Field(default_factory=dict)
    device: str = "auto"
    batch_size: int = Field(8, ge=1, le=256)
    prefetch: int = Field(32, ge=1, le=1024)
    max_frames: int | None = Field(None, ge=1, description="process at most this many frames per sub-video")

    def digest(self) -> str:
        """Stable short hash of the config (key order and defaults normalised)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
