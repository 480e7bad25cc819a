"""Environments, calibration loading and run configuration."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from spoton.config import (
    RunConfig,
    Settings,
    UnknownEnvironmentError,
    list_environments,
    load_calibration,
    load_environment,
)

ROOT = Path(__file__).resolve().parents[1]


def test_seed_environments_load_with_their_real_homographies():
    assert {"factory", "campus", "demo"} <= set(list_environments())
    factory = load_environment("factory")
    assert factory.cameras == ("c09", "c12", "c13", "c16")
    assert factory.video_dir == "video_s14"
    assert (factory.plane.width_m, factory.plane.height_m) == (20.0, 15.0)
    for geo in factory.calibration.values():
        assert geo.reprojection_error_m < 0.5


def test_campus_calibration_ids_come_from_frame_paths():
    campus = load_environment("campus")
    assert set(campus.calibration) == {"c01", "c02", "c03", "c05"}


def test_unknown_environment_names_the_configured_ones():
    with pytest.raises(UnknownEnvironmentError, match="factory"):
        load_environment("atlantis")


def test_malformed_calibration_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibration(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_calibration(tmp_path / "missing.json")
    bad.write_text(json.dumps({"ground_plane": {"width": 10}, "cameras": []}))
    with pytest.raises(ValueError, match="ground_plane"):
        load_calibration(bad)


def test_calibration_must_cover_every_camera(tmp_path):
    with pytest.raises(ValueError, match="no calibration for cameras"):
        load_calibration(ROOT / "homography_data" / "factory.json", ("c09", "c99"))


def _self_describing_location(root: Path, env: str, cameras: list[str]) -> Path:
    for cam in cameras:
        d = root / f"video_{env}" / cam
        d.mkdir(parents=True)
        (d / "sub_video_01.mp4").write_bytes(b"")  # discovery only lists names
    (root / "homography_data").mkdir()
    shutil.copy(ROOT / "homography_data" / "demo.json", root / "homography_data" / f"{env}.json")
    return root


def test_unconfigured_environment_is_discovered_from_a_self_describing_location(tmp_path):
    loc = _self_describing_location(tmp_path, "warehouse", ["c01", "c02", "c03", "c04"])
    env = load_environment("warehouse", str(loc))
    assert env.cameras == ("c01", "c02", "c03", "c04")
    assert env.video_dir == "video_warehouse"
    assert env.calibration["c01"].K is not None  # full matrices were used


def test_location_calibration_overrides_the_configured_one(tmp_path):
    loc = _self_describing_location(tmp_path, "demo", ["c01", "c02", "c03", "c04"])
    doc = json.loads((loc / "homography_data" / "demo.json").read_text())
    doc["ground_plane"]["width"] = 4000  # 40 m instead of 20 m
    (loc / "homography_data" / "demo.json").write_text(json.dumps(doc))
    assert load_environment("demo", str(loc)).plane.width_m == 40.0


def test_unconfigured_environment_without_calibration_is_rejected(tmp_path):
    (tmp_path / "video_x" / "c1").mkdir(parents=True)
    (tmp_path / "video_x" / "c1" / "sub_video_01.mp4").write_bytes(b"")
    with pytest.raises(UnknownEnvironmentError, match="homography_data/x.json"):
        load_environment("x", str(tmp_path))


def test_environment_files_are_user_configurable(tmp_path):
    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "lab.json").write_text(
        json.dumps({"environment_id": "lab", "cameras": ["c09"], "calibration": "factory.json", "fps": 30})
    )
    settings = Settings(environments_dir=envs, homography_dir=ROOT / "homography_data")
    env = load_environment("lab", settings=settings)
    assert env.fps == 30 and env.cameras == ("c09",)
    assert np.isfinite(env.calibration["c09"].H).all()


def test_run_config_digest_is_stable_and_sensitive():
    a, b = RunConfig(), RunConfig(detector="bgsub")
    assert a.digest() == b.digest()
    assert RunConfig(tracker="botsort").digest() != a.digest()
    with pytest.raises(ValidationError):
        RunConfig(detektor="typo")
