"""Environments: their cameras, floor map and calibration quality."""

import math
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam

from api.deps import SettingsDep, unprocessable
from api.models import ENVIRONMENT_ID, CameraCalibrationPublic, EnvironmentPublic, EnvironmentSummary, Message
from spoton.config import Environment, Settings, UnknownEnvironmentError, list_environments, load_environment
from spoton.geometry import overlap_matrix

router = APIRouter(prefix="/environments", tags=["environments"])

def resolve_environment(environment_id: str, videos: str | None, settings: Settings) -> Environment:
    """The environment a request names: 404 if unknown, 422 if it cannot be used as asked."""
    if videos is not None and not ("://" in videos or Path(videos).is_absolute()):
        raise unprocessable(("body", "videos"), "must be an absolute path or a URL (s3://…)", videos)
    try:
        return load_environment(environment_id, videos_url=videos, settings=settings)
    except UnknownEnvironmentError as e:
        raise HTTPException(404, str(e)) from None
    except (ValueError, OSError) as e:
        raise unprocessable(("body", "videos" if videos else "environment_id"),
                            f"environment {environment_id!r} cannot be used: {e}", videos or environment_id) from None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def environment_public(env: Environment) -> EnvironmentPublic:
    geometries = [env.calibration[c] for c in env.cameras]
    calibration = []
    for g in geometries:
        pos = g.position_m()
        calibration.append(
            CameraCalibrationPublic(
                camera_id=g.camera_id,
                image_size=g.image_size,
                has_full_calibration=g.K is not None and g.R is not None and g.t is not None,
                reprojection_error_m=_finite(g.reprojection_error_m),
                position_m=None if pos is None else (float(pos[0]), float(pos[1]), float(pos[2])),
            )
        )
    overlap = None
    if geometries and all(g.image_size is not None for g in geometries):
        overlap = overlap_matrix(geometries, env.plane).round(3).tolist()
    return EnvironmentPublic(
        environment_id=env.environment_id,
        description=env.description,
        cameras=list(env.cameras),
        fps=env.fps,
        map_width_m=env.plane.width_m,
        map_height_m=env.plane.height_m,
        calibration=calibration,
        overlap=overlap,
    )


@router.get("", summary="Configured environments")
def list_all(settings: SettingsDep) -> list[EnvironmentSummary]:
    out = []
    for environment_id in list_environments(settings):
        try:
            env = load_environment(environment_id, settings=settings)
        except (KeyError, ValueError, OSError) as e:
            out.append(EnvironmentSummary(environment_id=environment_id, description="", cameras=[],
                                          fps=0.0, problem=str(e)))
            continue
        out.append(EnvironmentSummary(environment_id=env.environment_id, description=env.description,
                                      cameras=list(env.cameras), fps=env.fps))
    return out


@router.get("/{environment_id}", responses={404: {"model": Message}}, summary="Cameras, map and calibration")
def get_one(
    environment_id: Annotated[str, PathParam(pattern=ENVIRONMENT_ID)], settings: SettingsDep
) -> EnvironmentPublic:
    try:
        env = load_environment(environment_id, settings=settings)
    except UnknownEnvironmentError as e:
        raise HTTPException(404, str(e)) from None
    except (ValueError, OSError) as e:
        raise HTTPException(404, f"environment {environment_id!r} is configured but unusable: {e}") from None
    return environment_public(env)
