"""Geometry: homographies from pairs and calibration, projection, horizon, overlap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoton.geometry import (
    CameraGeometry,
    GroundPlane,
    foot_points,
    homography_from_calibration,
    homography_from_points,
    overlap_matrix,
    project,
)


def camera(x: float, y: float, z: float, yaw_deg: float, pitch_deg: float = 35.0, size=(1280, 720)):
    """A pinhole camera at (x, y, z) metres looking along yaw, tilted down by pitch."""
    f = 800.0
    K = np.array([[f, 0, size[0] / 2], [0, f, size[1] / 2], [0, 0, 1]])
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # world -> camera rows
    t = -R @ np.array([x, y, z])
    return CameraGeometry("c", homography_from_calibration(K, R, t), size, K, R, t)


CAM = camera(0.0, 0.0, 4.0, 45.0)
# Pitched 15 degrees with a ~48 degree vertical FOV: the top rows see above the horizon.
CAM_HORIZON = camera(0.0, 0.0, 4.0, 45.0, pitch_deg=15.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(1.0, 15.0), st.floats(1.0, 15.0))
def test_image_round_trip_returns_the_floor_point(x, y):
    px = CAM.to_image(np.array([[x, y]]))
    back = CAM.to_map(px)
    if np.isfinite(px).all():
        np.testing.assert_allclose(back, [[x, y]], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=0, max_size=20))
def test_projection_keeps_row_count_and_never_returns_inf(points):
    pts = np.array(points, dtype=np.float64).reshape(-1, 2)
    out = project(CAM.H, pts)
    assert out.shape == pts.shape
    assert not np.isinf(out).any()


def test_empty_inputs():
    assert project(CAM.H, np.zeros((0, 2))).shape == (0, 2)
    assert foot_points(np.zeros((0, 4))).shape == (0, 2)
    assert CAM.boxes_to_map(np.zeros((0, 4)), GroundPlane(10, 10)).shape == (0, 2)


def test_pixels_above_the_horizon_project_to_nan():
    out = CAM_HORIZON.to_map(np.array([[640.0, 0.0], [640.0, 700.0]]))
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1]).all()


def test_points_outside_the_plane_are_nan():
    plane = GroundPlane(5.0, 5.0, margin_m=0.0)
    far = CAM.to_image(np.array([[12.0, 12.0], [3.0, 3.0]]))
    out = CAM.to_map(far, plane)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_point_pairs_recover_the_calibrated_homography_despite_outliers():
    rng = np.random.default_rng(0)
    floor = rng.uniform([1, 1], [12, 12], size=(40, 2))
    px = CAM.to_image(floor) + rng.normal(0, 0.5, size=(40, 2))
    floor_noisy = floor.copy()
    floor_noisy[:5] += 4.0  # five gross clicking errors
    fit = homography_from_points(px, floor_noisy, ransac_threshold=0.2)
    assert not fit.inliers[:5].any()
    probe = CAM.to_image(np.array([[3.0, 4.0], [8.0, 9.0]]))
    np.testing.assert_allclose(project(fit.H, probe), [[3.0, 4.0], [8.0, 9.0]], atol=0.05)
    assert fit.reprojection_error_m < 0.05


def test_point_pair_homography_is_signed_to_put_the_floor_in_front():
    floor = np.array([[2, 2], [10, 2], [10, 10], [2, 10], [6, 6]], dtype=float)
    fit = homography_from_points(CAM_HORIZON.to_image(floor), floor)
    horizon_pixel = np.array([[640.0, 0.0]])
    assert np.isnan(project(fit.H, horizon_pixel)).all()


@pytest.mark.parametrize(
    ("src", "dst", "match"),
    [
        (np.zeros((3, 2)), np.zeros((3, 2)), "at least 4"),
        (np.zeros((5, 2)), np.zeros((4, 2)), "as many"),
    ],
)
def test_bad_point_pairs_raise_clear_errors(src, dst, match):
    with pytest.raises(ValueError, match=match):
        homography_from_points(src, dst)


def test_bad_rotation_shape_is_rejected():
    with pytest.raises(ValueError, match="rotation"):
        homography_from_calibration(np.eye(3), np.zeros(4), np.zeros(3))


def test_camera_position_is_recovered_from_extrinsics():
    np.testing.assert_allclose(CAM.position_m(), [0.0, 0.0, 4.0], atol=1e-9)


def test_overlap_matrix_is_symmetric_and_detects_disjoint_views():
    plane = GroundPlane(40.0, 20.0)
    a = camera(0.0, 10.0, 4.0, 0.0)
    b = camera(12.0, 0.0, 4.0, 90.0)
    c = camera(40.0, 10.0, 4.0, 180.0, pitch_deg=70.0)  # looks straight down at the far end
    m = overlap_matrix([a, b, c], plane, cell_m=0.5)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 1] > 0.1
    assert m[0, 2] == 0.0
