"""Ground-plane geometry: homographies from point pairs or calibration, projection.

Convention: ``H`` maps homogeneous image pixels to ground-plane metres
(``map_xy``). Points that fall behind the camera, beyond the horizon or
outside the ground plane project to NaN, never to garbage coordinates.
"""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GroundPlane:
    """Axis-aligned rectangle [0, width_m] x [0, height_m] on the floor (z = 0)."""

    width_m: float
    height_m: float
    margin_m: float = 0.5  # people standing on the outline still count as inside

    def __post_init__(self) -> None:
        if not (self.width_m > 0 and self.height_m > 0):
            raise ValueError(f"ground plane must have positive size, got {self.width_m}x{self.height_m}")

    def contains(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        m = self.margin_m
        with np.errstate(invalid="ignore"):
            return (
                (xy[:, 0] >= -m)
                & (xy[:, 0] <= self.width_m + m)
                & (xy[:, 1] >= -m)
                & (xy[:, 1] <= self.height_m + m)
            )


@dataclass(frozen=True)
class HomographyFit:
    H: np.ndarray  # (3, 3) image px -> map metres
    inliers: np.ndarray  # (N,) bool
    reprojection_error_m: float  # mean over inliers, in map units
    method: str  # "points" | "calibration" | "given"


def _normalise(H: np.ndarray) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3):
        raise ValueError(f"homography must be 3x3, got {H.shape}")
    if not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-15:
        raise ValueError("homography is singular or not finite")
    # Scale by |H[2,2]|, never its sign: for views that include the horizon the
    # sign tells in-front from behind, and flipping it would NaN every floor point.
    return H / abs(H[2, 2]) if abs(H[2, 2]) > 1e-12 else H


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply homography to (N, 2) points; points mapping to w <= 0 become NaN."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        return np.zeros((0, 2), np.float64)
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1) @ np.asarray(H, np.float64).T
    w = hom[:, 2:3]
    out = np.full((pts.shape[0], 2), np.nan)
    ok = (w[:, 0] > 1e-12) & np.all(np.isfinite(hom), axis=1)
    out[ok] = hom[ok, :2] / w[ok]
    return out


def homography_from_points(
    image_px: np.ndarray, map_xy: np.ndarray, ransac_threshold: float = 0.25
) -> HomographyFit:
    """Fit image px -> map with RANSAC; threshold is in map units (metres here)."""
    src = np.asarray(image_px, np.float64).reshape(-1, 2)
    dst = np.asarray(map_xy, np.float64).reshape(-1, 2)
    if src.shape[0] != dst.shape[0]:
        raise ValueError(f"need as many image points as map points, got {src.shape[0]} and {dst.shape[0]}")
    if src.shape[0] < 4:
        raise ValueError(f"a homography needs at least 4 point pairs, got {src.shape[0]}")
    H, mask = cv2.findHomography(src, dst, cv2.RANSAC if src.shape[0] > 4 else 0, ransac_threshold)
    inliers = mask.reshape(-1).astype(bool) if mask is not None else np.zeros(src.shape[0], bool)
    if H is None or inliers.sum() < max(4, src.shape[0] // 2):
        # Hand-clicked pairs are often noisier than the threshold: fall back to a
        # least-median fit, which tolerates up to half outliers without a threshold.
        H, mask = cv2.findHomography(src, dst, cv2.LMEDS if src.shape[0] > 4 else 0)
        if H is None:
            raise ValueError("point pairs are degenerate (collinear or repeated): no homography")
        inliers = mask.reshape(-1).astype(bool) if mask is not None else np.ones(src.shape[0], bool)
    H = _normalise(H)
    # findHomography fixes H[2,2] = 1; choose the sign that puts the measured
    # floor points in front of the camera (positive homogeneous w).
    w = np.concatenate([src, np.ones((src.shape[0], 1))], axis=1) @ H[2]
    if np.median(w) < 0:
        H = -H
    err = np.linalg.norm(project(H, src[inliers]) - dst[inliers], axis=1)
    return HomographyFit(H, inliers, float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"), "points")


def rotation_matrix(rvec_or_R: np.ndarray) -> np.ndarray:
    r = np.asarray(rvec_or_R, np.float64)
    if r.shape == (3, 3):
        return r
    if r.size == 3:
        return cv2.Rodrigues(r.reshape(3, 1))[0]
    raise ValueError(f"rotation must be a 3-vector or 3x3 matrix, got shape {r.shape}")


def homography_from_calibration(K: np.ndarray, rvec_or_R: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Exact image -> ground (z = 0) homography of a pinhole camera: inv(K [r1 r2 t])."""
    K = np.asarray(K, np.float64).reshape(3, 3)
    R = rotation_matrix(rvec_or_R)
    t = np.asarray(tvec, np.float64).reshape(3)
    ground_to_image = K @ np.column_stack([R[:, 0], R[:, 1], t])
    return _normalise(np.linalg.inv(ground_to_image))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of xyxy boxes (0 where both are empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def vertical_vanishing_point(K: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Homogeneous image point (3,) where the images of the world's vertical lines meet."""
    return np.asarray(K, np.float64) @ np.asarray(R, np.float64)[:, 2]


def foot_points(xyxy: np.ndarray) -> np.ndarray:
    """Bottom-centre of boxes: where a standing person touches the floor."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2.0, xyxy[:, 3]], axis=1)


@dataclass(frozen=True)
class CameraGeometry:
    """One camera's view of the ground plane."""

    camera_id: str
    H: np.ndarray  # image px -> map metres
    image_size: tuple[int, int] | None = None  # (width, height) px
    K: np.ndarray | None = None
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    reprojection_error_m: float | None = None

    @property
    def H_inv(self) -> np.ndarray:
        return np.linalg.inv(self.H)

    @property
    def vertical_vp(self) -> np.ndarray | None:
        """The vertical vanishing point (homogeneous) when K and R are known, else None."""
        if self.K is None or self.R is None:
            return None
        return vertical_vanishing_point(self.K, self.R)

    def to_map(self, pts_px: np.ndarray, plane: GroundPlane | None = None) -> np.ndarray:
        """Image points -> metres; NaN outside the plane (when given) or beyond the horizon."""
        xy = project(self.H, pts_px)
        if plane is not None and xy.shape[0]:
            xy[~plane.contains(xy)] = np.nan
        return xy

    def boxes_to_map(self, xyxy: np.ndarray, plane: GroundPlane | None = None) -> np.ndarray:
        return self.to_map(foot_points(xyxy), plane)

    def to_image(self, map_xy: np.ndarray) -> np.ndarray:
        return project(self.H_inv, map_xy)

    def position_m(self) -> np.ndarray | None:
        """Camera centre on the floor (x, y, height) when full calibration is known."""
        if self.R is None or self.t is None:
            return None
        centre = -self.R.T @ np.asarray(self.t, np.float64).reshape(3)
        # A camera that sees the floor is above it; left-handed datasets (MultiviewX)
        # put it at negative z, so report the height as a distance.
        centre[2] = abs(centre[2])
        return centre

    def sees(self, map_xy: np.ndarray) -> np.ndarray:
        """Which ground points lie inside this camera's image (requires image_size)."""
        map_xy = np.asarray(map_xy, np.float64).reshape(-1, 2)
        if self.image_size is None:
            raise ValueError(f"camera {self.camera_id}: image_size unknown, cannot test visibility")
        w, h = self.image_size
        px = self.to_image(map_xy)
        with np.errstate(invalid="ignore"):
            return (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)


def ground_grid(plane: GroundPlane, cell_m: float = 0.25) -> np.ndarray:
    """Centres of a regular grid of cells covering the plane, (M, 2)."""
    xs = np.arange(cell_m / 2, plane.width_m, cell_m)
    ys = np.arange(cell_m / 2, plane.height_m, cell_m)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def overlap_matrix(
    cameras: list[CameraGeometry], plane: GroundPlane, cell_m: float = 0.25
) -> np.ndarray:
    """Fraction of the smaller view's floor area that two cameras both see, (C, C)."""
    grid = ground_grid(plane, cell_m)
    vis = np.stack([c.sees(grid) for c in cameras]) if cameras else np.zeros((0, len(grid)), bool)
    inter = vis.astype(np.float64) @ vis.T.astype(np.float64)
    area = vis.sum(axis=1).astype(np.float64)
    denom = np.minimum(area[:, None], area[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, inter / denom, 0.0)
