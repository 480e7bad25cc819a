"""MultiviewX: calibration conversion, ground truth, and the figures it allows.

Data: the MultiviewX subset in shared/data (Hou, Zheng, Gould: "Multiview
Detection with Feature Perspective Transformation", ECCV 2020).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from spoton import metrics, multiviewx
from spoton.associate import AssociationConfig, associate
from spoton.config import PROJECT_ROOT, load_environment


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    path = shared_data / "multiviewx"
    if not (path / "annotations_positions").is_dir():
        pytest.fail(f"MultiviewX subset not found at {path}")
    return path


@pytest.fixture(scope="module")
def env():
    return load_environment(multiviewx.ENVIRONMENT_ID)


@pytest.fixture(scope="module")
def annotations(root, env):
    return multiviewx.read_annotations(root, env.cameras)


def test_position_ids_decode_to_metres() -> None:
    xy = multiviewx.position_to_xy(np.array([0, 569316, 639_999]))
    np.testing.assert_allclose(xy, [[0.0, 0.0], [7.9, 14.225], [24.975, 15.975]])
    with pytest.raises(ValueError, match="positionID"):
        multiviewx.position_to_xy(np.array([640_000]))


def test_committed_files_are_the_converters_output(root, tmp_path) -> None:
    env_path, calib_path = multiviewx.write_environment(root, tmp_path / "env", tmp_path / "hom")
    for made, committed in (
        (env_path, PROJECT_ROOT / "environments" / "multiviewx.json"),
        (calib_path, PROJECT_ROOT / "homography_data" / "multiviewx.json"),
    ):
        # Equal up to the last bits of floating point (BLAS and CPU differ between machines).
        assert json.loads(made.read_text()) == _approx(json.loads(committed.read_text())), committed


def _approx(value: object) -> object:
    """``value`` with every float replaced by a pytest.approx of it (relative 1e-12)."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12, abs=1e-12)
    return value


def test_environment_points_at_the_images(env) -> None:
    assert env.cameras == ("C1", "C2", "C3", "C4")
    assert (env.plane.width_m, env.plane.height_m) == (25.0, 16.0)
    frames = sorted(Path(env.camera_url("C1")).glob(env.frames_glob))
    assert len(frames) == 10


def test_calibration_is_a_proper_camera_above_the_floor(root, annotations) -> None:
    boxes, ground = annotations
    rows = boxes.merge(ground, on=["frame_idx", "person_id"])
    for cam in ("C1", "C2", "C3", "C4"):
        c = multiviewx.read_calibration(root, cam)
        assert np.linalg.det(c.R) == pytest.approx(1.0)
        pts = rows.loc[rows["camera_id"] == cam, ["x_m", "y_m"]].to_numpy()
        depth = (c.R @ np.column_stack([pts, np.zeros(len(pts))]).T + c.tvec[:, None])[2]
        assert (depth > 0).all(), cam  # every annotated person is in front of the camera


def test_gt_feet_project_onto_their_position(annotations, env) -> None:
    boxes, ground = annotations
    err = multiviewx.projection_errors(boxes, ground, env)["error_m"].to_numpy()
    assert np.isfinite(err).all()
    assert err.mean() <= 0.3
    agreement = multiviewx.homography_agreement(boxes, ground, env)
    assert set(agreement) == {"C1", "C2", "C3", "C4"}
    for cam, fig in agreement.items():
        assert fig["agreement_m"] <= 0.3, cam  # exact H vs H fitted to the GT feet
        assert fig["fit_error_m"] <= 0.1, cam


def test_cross_view_association_from_calibration_only(annotations, env) -> None:
    boxes, _ = annotations
    tracklets = multiviewx.gt_tracklets(boxes, env)
    assert all(t.embedding is None for t in tracklets)
    result = associate(tracklets, env, AssociationConfig())
    assert multiviewx.cross_view_consistency(boxes, result.global_ids) >= 0.95
    assert multiviewx.identity_consistency(boxes, result.global_ids) >= 0.95
    assert len(set(result.global_ids.values())) == boxes["person_id"].nunique()


def test_consistency_counts_wrong_merges_and_splits(annotations) -> None:
    boxes, _ = annotations
    perfect = {(c, int(p)): int(p) for c, p in zip(boxes["camera_id"], boxes["person_id"], strict=True)}
    assert multiviewx.cross_view_consistency(boxes, perfect) == 1.0
    one_id = dict.fromkeys(perfect, 1)
    assert multiviewx.cross_view_consistency(boxes, one_id) == 0.0
    split = {**perfect, **{("C1", int(p)): 1000 + int(p) for p in boxes["person_id"].unique()}}
    assert multiviewx.cross_view_consistency(boxes, split) < 1.0
    # Two people who never meet sharing one id is consistent frame by frame, not over time.
    first, second = boxes["person_id"].unique()[:2]
    merged = {k: (first if v == second else v) for k, v in perfect.items()}
    assert multiviewx.identity_consistency(boxes, perfect) == 1.0
    assert multiviewx.identity_consistency(boxes, merged) < 1.0


def test_ground_truth_export_reads_back(root, tmp_path, annotations) -> None:
    gt_dir = multiviewx.write_gt(root, tmp_path)
    boxes, ground = annotations
    c2 = metrics.read_mot(gt_dir / "C2" / "gt.txt")
    assert len(c2) == (boxes["camera_id"] == "C2").sum()
    assert c2["frame"].min() == 1 and c2["id"].min() >= 1
    pred = boxes[boxes["camera_id"] == "C2"].rename(columns={"person_id": "track_id"})
    assert metrics.evaluate_camera(pred, c2)["idf1"] == pytest.approx(1.0)
    assert (gt_dir / "ground_plane.csv").read_text().startswith("frame_idx,person_id,x_m,y_m")
