"""Synthetic multi-camera scenes with exact ground truth.

A hall whose floor is the metric ground plane (default 20 m x 15 m) is watched
by N wall-mounted pinhole cameras looking down into it. People with simple
articulated bodies (legs, torso, arms, head, hair, optional backpack) walk
between random waypoints with social-force steering, enter and leave through
doors in the walls and, with ``reentry``, come back later under the same id.
Static props (pillars, crates, cabinets) occlude them.

Every camera frame is rasterised with OpenCV: the static background (textured
floor, walls, ceiling, props) is rendered once per camera at twice the size and
downsampled; people are drawn far to near as shaded convex polygons, and props
standing between a camera and a person are restored over that person. A label
image drawn alongside gives each person's visible pixels, so ground-truth
boxes and visibility are exact. Cameras differ in exposure, white balance and
vignetting and add sensor noise; the frames are encoded to H.264.

Output layout (mirrors the production bucket)::

    OUT/video_<env>/<camera_id>/sub_video_NN.mp4
    OUT/gt/<camera_id>/gt.txt        frame,id,x,y,w,h,conf,class,visibility
    OUT/gt/ground_plane.csv          frame_idx,person_id,x_m,y_m
    OUT/homography_data/<env>.json   calibration (K, rvec, tvec + point pairs)
    OUT/scene.json                   the spec and what was generated

GT boxes are 0-based pixel-edge coordinates like tracker output: ``x`` is the
first column the person covers and ``x + w`` one past the last. GT frames are
1-based over the whole timeline (MOTChallenge); ``frame_idx`` is 0-based.
"""

import json
import math
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spoton.render import H264Writer

PIXELS_PER_METER = 100  # map px per metre in the calibration file, as the seed tools use
CEILING_M = 7.0
CAMERA_INSET_M = 0.3  # cameras hang this far in from the walls
MIN_BOX_AREA_PX = 20
MIN_CALIBRATION_POINTS = 8
RIG_CANDIDATES = 8
SUPERSAMPLE = 2  # static background is rendered at this scale and area-downsampled

# --------------------------------------------------------------------- spec


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if m is None:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 1280x720), got {text!r}")
    return int(m[1]), int(m[2])


class SceneSpec(BaseModel):
    """What to generate; pydantic validation errors are ValueErrors naming the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str = Field("demo", pattern=r"^[A-Za-z0-9_-]+$", description="environment id")
    cameras: int = Field(4, ge=1, le=8)
    people: int = Field(10, ge=1, le=200)
    seconds: float = Field(20.0, gt=0, le=3600)
    sub_videos: int = Field(2, ge=1, le=1000)
    fps: int = Field(25, ge=1, le=120)
    size: tuple[int, int] = Field((1280, 720), description="(width, height) px, even")
    seed: int = Field(0, ge=0)
    plane: tuple[float, float] = Field((20.0, 15.0), description="(width, height) metres")
    reentry: bool = Field(False, description="some people leave and later come back")

    @field_validator("size", mode="before")
    @classmethod
    def _size_from_text(cls, v: object) -> object:
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("size")
    @classmethod
    def _check_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        w, h = v
        if not (64 <= w <= 4096 and 64 <= h <= 4096) or w % 2 or h % 2:
            raise ValueError(f"size must be even and within 64..4096 px per side, got {w}x{h}")
        return v

    @field_validator("plane")
    @classmethod
    def _check_plane(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(s) and 6.0 <= s <= 200.0 for s in v):
            raise ValueError(f"plane sides must be within 6..200 metres, got {v[0]}x{v[1]}")
        return v

    @model_validator(mode="after")
    def _check_timeline(self) -> "SceneSpec":
        if self.total_frames < self.sub_videos:
            raise ValueError(
                f"{self.seconds} s at {self.fps} fps gives {self.total_frames} frames, "
                f"fewer than sub_videos={self.sub_videos}"
            )
        return self

    @property
    def total_frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def camera_ids(self) -> tuple[str, ...]:
        return tuple(f"c{i + 1:02d}" for i in range(self.cameras))

    def chunk_bounds(self) -> list[int]:
        """Global frame index where each sub-video starts, plus the end."""
        n, s = self.total_frames, self.sub_videos
        return [round(j * n / s) for j in range(s + 1)]


@dataclass(frozen=True)
class SceneInfo:
    """What ``generate_scene`` wrote, with final paths."""

    out: Path
    env: str
    cameras: tuple[str, ...]
    videos: dict[str, list[Path]]  # camera_id -> sub-videos in timeline order
    gt: dict[str, Path]  # camera_id -> gt.txt
    ground_plane_csv: Path
    calibration: Path
    scene_json: Path
    frames_per_sub_video: tuple[int, ...]
    total_frames: int
    fps: int
    coverage: float  # fraction of the floor seen by >= min(2, cameras) cameras


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One stream per concern, so e.g. more people never moves the cameras.
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


# ------------------------------------------------------------------ cameras


@dataclass(frozen=True)
class SynthCamera:
    """Pinhole camera, OpenCV conventions: ``x_cam = R @ x_world + t``, metres, z up."""

    camera_id: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]

    @property
    def centre(self) -> np.ndarray:
        return -self.R.T @ self.t

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.R.T + self.t

    def project(self, pts_cam: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
        uvw = pts_cam @ (self.K if K is None else K).T
        return uvw[:, :2] / uvw[:, 2:3]

    def floor_to_image(self) -> np.ndarray:
        """World floor (x, y, 1) -> image px homography."""
        return self.K @ np.column_stack([self.R[:, 0], self.R[:, 1], self.t])


def _look_at(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World -> camera rotation (OpenCV axes: x right, y down, z forward)."""
    fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r = math.cos(roll) * right + math.sin(roll) * down
    d = -math.sin(roll) * right + math.cos(roll) * down
    return np.stack([r, d, fwd])


def _camera_slots(n: int, w: float, h: float) -> list[tuple[float, float]]:
    """Mounting points on the walls: corners first (diagonal for two), then mid-walls."""
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    mids = [(w / 2, 0.0), (w, h / 2), (w / 2, h), (0.0, h / 2)]
    long_first = [mids[0], mids[2], mids[1], mids[3]] if w >= h else [mids[1], mids[3], mids[0], mids[2]]
    picks = {1: [0], 2: [0, 2], 3: [0, 1, 2]}.get(n, [0, 1, 2, 3])
    chosen = [corners[i] for i in picks] + long_first[: max(0, n - 4)]

    def perimeter_pos(p: tuple[float, float]) -> float:
        x, y = p
        if y == 0.0:
            return x
        if x == w:
            return w + y
        if y == h:
            return w + h + (w - x)
        return 2 * w + h + (h - y)

    return sorted(chosen, key=perimeter_pos)


def _candidate_rig(spec: SceneSpec, rng: np.random.Generator) -> list[SynthCamera]:
    pw, ph = spec.plane
    iw, ih = spec.size
    cams = []
    for cid, (sx, sy) in zip(spec.camera_ids, _camera_slots(spec.cameras, pw, ph), strict=True):
        # Slide along the wall a little, then hang just inside the room.
        if sx in (0.0, pw) and sy in (0.0, ph):
            if rng.random() < 0.5:
                sx += (1 if sx == 0 else -1) * rng.uniform(0, 0.08 * pw)
            else:
                sy += (1 if sy == 0 else -1) * rng.uniform(0, 0.08 * ph)
        elif sy in (0.0, ph):
            sx += rng.uniform(-0.1, 0.1) * pw
        else:
            sy += rng.uniform(-0.1, 0.1) * ph
        x = float(np.clip(sx, CAMERA_INSET_M, pw - CAMERA_INSET_M))
        y = float(np.clip(sy, CAMERA_INSET_M, ph - CAMERA_INSET_M))
        z = float(rng.uniform(3.2, 5.8))
        tx = pw / 2 + rng.uniform(-0.12, 0.12) * pw
        ty = ph / 2 + rng.uniform(-0.12, 0.12) * ph
        yaw = math.atan2(ty - y, tx - x)
        natural = math.atan2(z, math.hypot(tx - x, ty - y))
        pitch = float(np.clip(natural + math.radians(rng.uniform(-2, 6)), math.radians(20), math.radians(45)))
        R = _look_at(yaw, pitch, math.radians(rng.uniform(-2, 2)))
        hfov = math.radians(rng.uniform(62, 88))
        f = (iw / 2) / math.tan(hfov / 2)
        cx = iw / 2 + rng.uniform(-0.01, 0.01) * iw
        cy = ih / 2 + rng.uniform(-0.01, 0.01) * ih
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
        t = -R @ np.array([x, y, z])
        cams.append(SynthCamera(cid, K, R, t, (iw, ih)))
    return cams


def _floor_visibility(cams: list[SynthCamera], pts: np.ndarray) -> np.ndarray:
    """(C, M) whether each floor point is inside each camera's image."""
    pts3 = np.column_stack([pts, np.zeros(len(pts))])
    out = []
    for cam in cams:
        pc = cam.to_camera(pts3)
        with np.errstate(divide="ignore", invalid="ignore"):
            px = cam.project(pc)
        w, h = cam.size
        out.append((pc[:, 2] > 0.1) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h))
    return np.stack(out)


def _plane_grid(plane: tuple[float, float], step: float) -> np.ndarray:
    xs = np.arange(step / 2, plane[0], step)
    ys = np.arange(step / 2, plane[1], step)
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()])


def _coverage(cams: list[SynthCamera], plane: tuple[float, float]) -> float:
    counts = _floor_visibility(cams, _plane_grid(plane, 0.5)).sum(axis=0)
    return float(np.mean(counts >= min(2, len(cams))))


def make_cameras(spec: SceneSpec) -> tuple[list[SynthCamera], float]:
    """Best of a few random rigs by the floor share seen by two or more cameras."""
    rng = _rng(spec.seed, 1)
    rigs = [_candidate_rig(spec, rng) for _ in range(RIG_CANDIDATES)]
    scores = [_coverage(rig, spec.plane) for rig in rigs]
    best = int(np.argmax(scores))  # first of equals: stable for a seed
    return rigs[best], scores[best]


# ------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Door:
    x: float
    y: float  # centre of the doorway on the wall line
    nx: float
    ny: float  # inward normal
    wall: int  # 0: y=0, 1: x=W, 2: y=H, 3: x=0
    along: float  # position along its wall's texture axis (m)


@dataclass(frozen=True)
class Prop:
    kind: str  # pillar | crate | cabinet
    x0: float
    y0: float
    x1: float
    y1: float
    height: float
    rgb: tuple[int, int, int]

    def inflated(self, m: float) -> tuple[float, float, float, float]:
        return self.x0 - m, self.y0 - m, self.x1 + m, self.y1 + m


@dataclass(frozen=True)
class Layout:
    """The hall: floor size, doors, props and lighting."""

    plane: tuple[float, float]
    doors: list[Door]
    props: list[Prop]
    light_dir: np.ndarray  # unit vector towards the (diffuse, overhead) light
    lamps: np.ndarray  # (L, 2) ceiling lamp positions: floor light pools


def _wall_geometry(wall: int, pw: float, ph: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin, unit axis along the wall, inward normal, wall length."""
    if wall == 0:
        return np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), pw
    if wall == 1:
        return np.array([pw, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), ph
    if wall == 2:
        return np.array([pw, ph]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), pw
    return np.array([0.0, ph]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), ph


def make_layout(spec: SceneSpec) -> Layout:
    """Doors in every wall, props on the floor clear of each other and of the doors, lamps."""
    rng = _rng(spec.seed, 2)
    pw, ph = spec.plane
    doors = []
    for wall in range(4):
        origin, axis, normal, length = _wall_geometry(wall, pw, ph)
        n_doors = 1 if length < 14 else 2
        slots = np.linspace(0, length, n_doors + 2)[1:-1]
        for s in slots:
            along = float(np.clip(s + rng.uniform(-0.2, 0.2) * length / (n_doors + 1), 2.0, length - 2.0))
            p = origin + along * axis
            doors.append(Door(float(p[0]), float(p[1]), float(normal[0]), float(normal[1]), wall, along))

    props: list[Prop] = []
    area = pw * ph
    kinds = (
        ["pillar"] * max(1, round(area / 100))
        + ["cabinet"] * max(1, round(area / 150))
        + ["crate"] * max(1, round(area / 90))
    )
    for kind in kinds:
        for _ in range(200):
            if kind == "pillar":
                sx = sy = rng.uniform(0.4, 0.6)
                grey = int(rng.integers(150, 190))
                height, rgb = CEILING_M, (grey, grey, grey - 6)
            elif kind == "cabinet":
                sx, sy = rng.uniform(1.4, 2.4), rng.uniform(0.45, 0.7)
                if rng.random() < 0.5:
                    sx, sy = sy, sx
                height = rng.uniform(1.2, 2.0)
                rgb = [(60, 90, 150), (70, 120, 80), (160, 160, 165), (200, 110, 40)][rng.integers(4)]
            else:
                sx, sy = rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.2)
                height = rng.uniform(0.5, 1.3)
                rgb = [(170, 130, 85), (150, 115, 75), (185, 150, 105)][rng.integers(3)]
            cx, cy = (
                rng.uniform(2.5 + sx / 2, pw - 2.5 - sx / 2),
                rng.uniform(2.5 + sy / 2, ph - 2.5 - sy / 2),
            )
            colour = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
            cand = Prop(kind, cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2, float(height), colour)
            clear = all(_rects_apart(cand, other, 1.8) for other in props)
            near_door = any(math.hypot(cx - d.x, cy - d.y) < 3.5 for d in doors)
            if clear and not near_door:
                props.append(cand)
                break
    az = rng.uniform(0, 2 * math.pi)
    light = np.array([math.cos(az), math.sin(az), 1.6])
    lamps = _plane_grid((pw, ph), 5.0) + rng.uniform(-0.3, 0.3, size=(1, 2))
    return Layout((pw, ph), doors, props, light / np.linalg.norm(light), lamps)


def _rects_apart(a: Prop, b: Prop, gap: float) -> bool:
    return a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0


def illumination(layout: Layout, xy: np.ndarray) -> np.ndarray:
    """Relative brightness of the light pools under the ceiling lamps at floor points."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    d2 = ((xy[:, None, :] - layout.lamps[None, :, :]) ** 2).sum(-1)
    pools = np.exp(-d2 / (2 * 2.2**2)).sum(axis=1)
    return 0.8 + 0.28 * np.clip(pools, 0, 1.2)


# ----------------------------------------------------------------- textures


def _noise_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    small = rng.normal(0, 1, (shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _floor_texture(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The floor seen from above: tiles, noise, stains, painted lines, light pools."""
    pw, ph = layout.plane
    ppm = min(100.0, 4000.0 / max(pw, ph))
    h, w = int(round(ph * ppm)), int(round(pw * ppm))
    base = np.array([(148, 150, 150), (120, 138, 122), (150, 160, 168), (128, 124, 118)][rng.integers(4)])
    tex = np.ones((h, w, 3), np.float32) * base.astype(np.float32)
    tile = float(rng.choice([0.5, 0.6, 1.0]))
    n_ty, n_tx = int(ph / tile) + 1, int(pw / tile) + 1
    tile_gain = cv2.resize(
        rng.normal(1, 0.025, (n_ty, n_tx)).astype(np.float32),
        (int(n_tx * tile * ppm), int(n_ty * tile * ppm)),
        interpolation=cv2.INTER_NEAREST,
    )
    tex *= tile_gain[:h, :w, None]
    tex += (_noise_field(rng, (h, w), 64) * 7 + _noise_field(rng, (h, w), 8) * 3)[..., None]
    tex += rng.normal(0, 3.0, (h, w, 1)).astype(np.float32)
    grout = (base * 0.8).tolist()
    for x in np.arange(tile, pw, tile):
        cv2.line(tex, (int(x * ppm), 0), (int(x * ppm), h), grout, 1)
    for y in np.arange(tile, ph, tile):
        cv2.line(tex, (0, int(y * ppm)), (w, int(y * ppm)), grout, 1)
    for _ in range(int(pw * ph / 25)):  # stains and scuffs
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.1, 0.8) * ppm), int(rng.uniform(0.05, 0.4) * ppm))
        cv2.ellipse(
            tex,
            c,
            axes,
            float(rng.uniform(0, 180)),
            0,
            360,
            (base * rng.uniform(0.88, 0.96)).tolist(),
            -1,
        )
    cv2.GaussianBlur(tex, (0, 0), 1.2, dst=tex)
    yellow, white = (40, 190, 225), (225, 228, 230)  # BGR
    lw = max(2, int(0.08 * ppm))
    inset = rng.uniform(1.2, 1.8)
    for y in (inset, ph - inset):  # aisle lines along the long walls, broken at the doors
        xs = np.arange(inset, pw - inset, 0.05)
        gap = np.zeros(len(xs), bool)
        for d in layout.doors:
            gap |= (np.abs(xs - d.x) < 1.0) & (abs(y - d.y) < 3)
        for run in np.split(xs, np.flatnonzero(np.diff(gap.astype(int)) != 0) + 1):
            if len(run) > 1 and not gap[np.searchsorted(xs, run[0])]:
                cv2.line(
                    tex,
                    (int(run[0] * ppm), int(y * ppm)),
                    (int(run[-1] * ppm), int(y * ppm)),
                    yellow,
                    lw,
                    cv2.LINE_AA,
                )
    for _ in range(2):  # hatched keep-clear boxes
        x0, y0 = rng.uniform(1, pw - 4), rng.uniform(1, ph - 3)
        bw, bh = rng.uniform(1.5, 3), rng.uniform(1, 2)
        p0, p1 = (int(x0 * ppm), int(y0 * ppm)), (int((x0 + bw) * ppm), int((y0 + bh) * ppm))
        cv2.rectangle(tex, p0, p1, white, lw, cv2.LINE_AA)
        for k in np.arange(0, bw + bh, 0.4):
            a = (int((x0 + min(k, bw)) * ppm), int((y0 + max(0, k - bw)) * ppm))
            b = (int((x0 + max(0, k - bh)) * ppm), int((y0 + min(k, bh)) * ppm))
            cv2.line(tex, a, b, white, max(1, lw // 2), cv2.LINE_AA)
    # The light pools are smooth: evaluate them every 10 cm and interpolate.
    coarse = _plane_grid(layout.plane, 0.1)
    nx, ny = len(np.arange(0.05, pw, 0.1)), len(np.arange(0.05, ph, 0.1))
    light = illumination(layout, coarse).reshape(ny, nx).astype(np.float32)
    tex *= cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.clip(tex, 0, 255).astype(np.uint8), ppm


def _wall_texture(layout: Layout, wall: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One wall seen from inside: paint, skirting, windows, signs and its doors."""
    _, _, _, length = _wall_geometry(wall, *layout.plane)
    ppm = min(40.0, 4000.0 / length)
    h, w = int(round(CEILING_M * ppm)), int(round(length * ppm))
    base = np.array([(222, 224, 226), (205, 214, 220), (196, 205, 200), (215, 210, 200)][rng.integers(4)])
    tex = np.ones((h, w, 3), np.float32) * base.astype(np.float32)
    tex *= np.linspace(0.9, 1.03, h, dtype=np.float32)[:, None, None]  # darker towards the ceiling
    tex += (_noise_field(rng, (h, w), 32) * 5)[..., None] + rng.normal(0, 2, (h, w, 1)).astype(np.float32)

    def z_row(z: float) -> int:
        return int(round((CEILING_M - z) * ppm))

    def rect(a0: float, z0: float, a1: float, z1: float, colour: Sequence[float], thick: int = -1) -> None:
        cv2.rectangle(tex, (int(a0 * ppm), z_row(z1)), (int(a1 * ppm), z_row(z0)), colour, thick)

    rect(0, 0, length, 0.12, (70, 72, 75))  # skirting
    if rng.random() < 0.6:
        stripe = [(60, 140, 60), (160, 90, 40), (50, 50, 170), (90, 90, 90)][rng.integers(4)]
        rect(0, 1.0, length, 1.15, stripe)
    n_win = int(length // 4)
    for a in np.linspace(2, length - 2, max(n_win, 1)) if n_win else []:
        rect(a - 0.9, 3.3, a + 0.9, 5.2, (235, 225, 205))
        rect(a - 0.9, 3.3, a + 0.9, 5.2, (120, 120, 120), 2)
        cv2.line(tex, (int(a * ppm), z_row(5.2)), (int(a * ppm), z_row(3.3)), (120, 120, 120), 2)
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform(1, length - 1.5)
        colour = rng.integers(40, 230, 3).tolist()
        rect(a, 1.4, a + rng.uniform(0.4, 1.0), 1.4 + rng.uniform(0.3, 0.8), colour)
    for d in layout.doors:
        if d.wall == wall:
            rect(d.along - 0.65, 0, d.along + 0.65, 2.3, (95, 100, 105))
            rect(d.along - 0.6, 0, d.along + 0.6, 2.2, (42, 45, 50))
    return np.clip(tex, 0, 255).astype(np.uint8), ppm


# -------------------------------------------------------------- rasterising


def _clip_near(poly_cam: np.ndarray, z_near: float = 0.05) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon to z >= z_near."""
    out = []
    n = len(poly_cam)
    for i in range(n):
        a, b = poly_cam[i], poly_cam[(i + 1) % n]
        a_in, b_in = a[2] >= z_near, b[2] >= z_near
        if a_in:
            out.append(a)
        if a_in != b_in:
            s = (z_near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Float px -> int32 with 4 fractional bits for sub-pixel cv2 drawing (shift=4)."""
    return np.round(np.asarray(pts, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)


def _draw_surface(
    canvas: np.ndarray,
    cam: SynthCamera,
    K: np.ndarray,
    tex: np.ndarray,
    ppm: float,
    origin: np.ndarray,
    u_axis: np.ndarray,
    v_axis: np.ndarray,
    corners: np.ndarray,
) -> None:
    """Warp a planar texture into the canvas inside the surface's near-clipped outline."""
    poly = _clip_near(cam.to_camera(corners))
    if len(poly) < 3:
        return
    px = cam.project(poly, K)
    R, t = cam.R, cam.t
    tex_to_img = K @ np.column_stack(
        [R @ u_axis / ppm, R @ v_axis / ppm, R @ (origin + 0.5 * (u_axis + v_axis) / ppm) + t]
    )
    h, w = canvas.shape[:2]
    warped = cv2.warpPerspective(tex, tex_to_img, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [_fixed(px)], 255, cv2.LINE_8, 4)
    np.copyto(canvas, warped, where=mask[..., None] > 0)


def _prop_faces(p: Prop) -> list[tuple[np.ndarray, np.ndarray]]:
    """(corners (4, 3), outward normal) of a cuboid's five visible-able faces."""
    x0, y0, x1, y1, z = p.x0, p.y0, p.x1, p.y1, p.height
    return [
        (np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]), np.array([0, 0, 1.0])),
        (np.array([[x0, y0, 0], [x1, y0, 0], [x1, y0, z], [x0, y0, z]]), np.array([0, -1, 0.0])),
        (np.array([[x1, y0, 0], [x1, y1, 0], [x1, y1, z], [x1, y0, z]]), np.array([1, 0, 0.0])),
        (np.array([[x1, y1, 0], [x0, y1, 0], [x0, y1, z], [x1, y1, z]]), np.array([0, 1, 0.0])),
        (np.array([[x0, y1, 0], [x0, y0, 0], [x0, y0, z], [x0, y1, z]]), np.array([-1, 0, 0.0])),
    ]


def _prop_polygons(p: Prop, cam: SynthCamera, K: np.ndarray, light: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
    """Image polygons and BGR colours of the faces of a prop that face the camera."""
    out = []
    c = cam.centre
    for corners, normal in _prop_faces(p):
        if np.dot(normal, c - corners.mean(axis=0)) <= 0:
            continue
        poly = _clip_near(cam.to_camera(corners))
        if len(poly) < 3:
            continue
        shade = 0.62 + 0.45 * max(0.0, float(np.dot(normal, light)))
        r, g, b = p.rgb
        out.append((cam.project(poly, K), (b * shade, g * shade, r * shade)))
    return out


@dataclass
class CameraLook:
    """Per-camera photometry: exposure/white balance gains (BGR), vignetting, noise."""

    gain: np.ndarray  # (3,) BGR
    vignette: np.ndarray  # (H, W) float32 multiplier
    noise_pos: np.ndarray  # (B, H, W, 3) uint8: added
    noise_neg: np.ndarray  # (B, H, W, 3) uint8: subtracted


def _camera_look(cam: SynthCamera, rng: np.random.Generator, bank: int = 6) -> CameraLook:
    w, h = cam.size
    gain = rng.uniform(0.85, 1.12) * rng.uniform(0.95, 1.05, 3)  # exposure x white balance
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    vignette = 1.0 - rng.uniform(0.12, 0.28) * r2
    sigma = rng.uniform(1.5, 3.0)
    noise = rng.normal(0, sigma, (bank, h, w, 3)).astype(np.float32)
    pos = np.clip(noise, 0, 255).astype(np.uint8)
    neg = np.clip(-noise, 0, 255).astype(np.uint8)
    return CameraLook(gain.astype(np.float32), vignette.astype(np.float32), pos, neg)


@dataclass
class CameraStage:
    """Everything static one camera needs per frame."""

    cam: SynthCamera
    look: CameraLook
    background: np.ndarray  # (H, W, 3) uint8 with props, photometry applied
    prop_masks: list[tuple[int, int, np.ndarray] | None]  # per prop: x0, y0, mask ROI


def _build_stage(cam: SynthCamera, layout: Layout, textures: dict, rng: np.random.Generator) -> CameraStage:
    """Render a camera's static background once (2x supersampled) and its prop masks."""
    w, h = cam.size
    s = SUPERSAMPLE
    K2 = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1.0]]) @ cam.K
    canvas = np.zeros((h * s, w * s, 3), np.uint8)
    pw, ph = layout.plane
    ceiling, ceil_ppm = textures["ceiling"]
    _draw_surface(
        canvas,
        cam,
        K2,
        ceiling,
        ceil_ppm,
        np.array([0, 0, CEILING_M]),
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        np.array([[0, 0, CEILING_M], [pw, 0, CEILING_M], [pw, ph, CEILING_M], [0, ph, CEILING_M]]),
    )
    for wall in range(4):
        origin, axis, _, length = _wall_geometry(wall, pw, ph)
        tex, ppm = textures["walls"][wall]
        o3 = np.array([origin[0], origin[1], CEILING_M])
        a3 = np.array([axis[0], axis[1], 0.0])
        end = o3 + length * a3
        corners = np.array([o3, end, end - [0, 0, CEILING_M], o3 - [0, 0, CEILING_M]])
        _draw_surface(canvas, cam, K2, tex, ppm, o3, a3, np.array([0, 0, -1.0]), corners)
    floor, floor_ppm = textures["floor"]
    _draw_surface(
        canvas,
        cam,
        K2,
        floor,
        floor_ppm,
        np.zeros(3),
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        np.array([[0, 0, 0], [pw, 0, 0], [pw, ph, 0], [0, ph, 0.0]]),
    )
    order = sorted(range(len(layout.props)), key=lambda i: -_prop_distance(layout.props[i], cam))
    for i in order:
        for poly, colour in _prop_polygons(layout.props[i], cam, K2, layout.light_dir):
            cv2.fillPoly(canvas, [_fixed(poly)], colour, cv2.LINE_AA, 4)
            cv2.polylines(canvas, [_fixed(poly)], True, tuple(0.6 * c for c in colour), s, cv2.LINE_AA, 4)
    bg = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    look = _camera_look(cam, rng)
    bg = np.clip(bg * look.gain * look.vignette[..., None], 0, 255).astype(np.uint8)
    masks: list[tuple[int, int, np.ndarray] | None] = []
    for p in layout.props:
        full = np.zeros((h, w), np.uint8)
        for poly, _ in _prop_polygons(p, cam, cam.K, layout.light_dir):
            cv2.fillPoly(full, [_fixed(poly)], 255, cv2.LINE_8, 4)
        x, y, bw, bh = cv2.boundingRect(full)
        masks.append((x, y, full[y : y + bh, x : x + bw] > 0) if bw and bh else None)
    return CameraStage(cam, look, bg, masks)


def _prop_distance(p: Prop, cam: SynthCamera) -> float:
    c = cam.centre
    return float(np.linalg.norm([(p.x0 + p.x1) / 2 - c[0], (p.y0 + p.y1) / 2 - c[1], p.height / 2 - c[2]]))


def _segment_hits_rect(a: np.ndarray, b: np.ndarray, rect: tuple[float, float, float, float]) -> bool:
    """Liang-Barsky: does the 2D segment a->b pass through the axis-aligned rectangle?"""
    x0, y0, x1, y1 = rect
    d = b - a
    lo, hi = 0.0, 1.0
    for p, q in ((-d[0], a[0] - x0), (d[0], x1 - a[0]), (-d[1], a[1] - y0), (d[1], y1 - a[1])):
        if abs(p) < 1e-12:
            if q < 0:
                return False
            continue
        r = q / p
        if p < 0:
            lo = max(lo, r)
        else:
            hi = min(hi, r)
        if lo > hi:
            return False
    return True


# ------------------------------------------------------------------- people

SHIRTS = [
    (25, 25, 28),
    (238, 238, 232),
    (128, 128, 130),
    (30, 45, 90),
    (180, 30, 35),
    (40, 110, 60),
    (60, 110, 190),
    (225, 190, 60),
    (120, 40, 110),
    (230, 120, 40),
    (90, 160, 175),
    (200, 160, 130),
    (100, 70, 50),
    (230, 150, 170),
    (150, 190, 90),
    (70, 70, 75),
    (170, 200, 230),
    (130, 30, 40),
    (250, 235, 120),
    (60, 90, 60),
]
TROUSERS = [
    (40, 55, 90),
    (80, 110, 160),
    (25, 25, 28),
    (90, 90, 95),
    (180, 160, 120),
    (70, 55, 45),
    (30, 40, 60),
    (150, 150, 150),
    (60, 70, 50),
]
SKIN = [
    (255, 220, 190),
    (240, 200, 160),
    (210, 160, 120),
    (170, 120, 80),
    (120, 80, 50),
    (90, 60, 40),
]
HAIR = [(20, 15, 10), (60, 40, 25), (120, 80, 40), (200, 170, 110), (160, 160, 160), (140, 60, 30)]
SHOES = [(20, 20, 20), (240, 240, 240), (90, 60, 40), (60, 60, 70)]


@dataclass(frozen=True)
class Person:
    """One person's looks and walking speed; colours are RGB."""

    person_id: int  # 1-based global id
    height: float
    build: float  # width factor
    speed: float  # preferred walking speed, m/s
    shirt: tuple[float, float, float]  # RGB
    trousers: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shoes: tuple[float, float, float]
    long_sleeves: bool
    stripe: tuple[float, float, float] | None
    backpack: tuple[float, float, float] | None

    def describe(self) -> dict:
        def rgb(c: tuple[float, float, float] | None) -> list[int] | None:
            return None if c is None else [int(round(v)) for v in c]

        return {
            "person_id": self.person_id,
            "height_m": round(self.height, 3),
            "shirt_rgb": rgb(self.shirt),
            "trousers_rgb": rgb(self.trousers),
            "stripe_rgb": rgb(self.stripe),
            "backpack_rgb": rgb(self.backpack),
            "long_sleeves": self.long_sleeves,
        }


def make_people(spec: SceneSpec) -> list[Person]:
    """Everyone's build and clothes; shirts are drawn from the palette without repeats first."""
    rng = _rng(spec.seed, 3)
    shirt_order = np.concatenate([rng.permutation(len(SHIRTS)) for _ in range(spec.people // len(SHIRTS) + 1)])

    def jitter(c: tuple[int, int, int], amount: float = 0.08) -> tuple[float, float, float]:
        v = np.clip(
            np.asarray(c, float) * rng.uniform(1 - amount, 1 + amount, 3) + rng.normal(0, 4, 3),
            5,
            250,
        )
        return (float(v[0]), float(v[1]), float(v[2]))

    people = []
    for i in range(spec.people):
        shirt = jitter(SHIRTS[shirt_order[i]])
        stripe = jitter(SHIRTS[rng.integers(len(SHIRTS))]) if rng.random() < 0.25 else None
        people.append(
            Person(
                person_id=i + 1,
                height=float(np.clip(rng.normal(1.73, 0.09), 1.55, 1.95)),
                build=float(rng.uniform(0.88, 1.18)),
                speed=float(np.clip(rng.normal(1.25, 0.2), 0.8, 1.6)),
                shirt=shirt,
                trousers=jitter(TROUSERS[rng.integers(len(TROUSERS))]),
                skin=jitter(SKIN[rng.integers(len(SKIN))], 0.04),
                hair=jitter(HAIR[rng.integers(len(HAIR))], 0.05),
                shoes=jitter(SHOES[rng.integers(len(SHOES))], 0.05),
                long_sleeves=bool(rng.random() < 0.5),
                stripe=stripe,
                backpack=jitter(SHIRTS[rng.integers(len(SHIRTS))]) if rng.random() < 0.3 else None,
            )
        )
    return people


@dataclass(frozen=True)
class Motion:
    """Per-frame state of everyone: NaN position where a person is off the scene."""

    pos: np.ndarray  # (T, P, 2) metres
    heading: np.ndarray  # (T, P) radians
    phase: np.ndarray  # (T, P) gait phase, radians
    swing: np.ndarray  # (T, P) leg swing amplitude, radians

    def present(self, frame: int) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.pos[frame, :, 0]))


@dataclass
class _Walker:
    mode: str  # absent | enter | walk | pause | exit
    target: np.ndarray
    queue: list[np.ndarray] = field(default_factory=list)
    enter_at: float | None = None
    enter_door: int = 0
    leave_at: float | None = None
    gap: float | None = None  # seconds off-scene before coming back (re-entry)
    exit_door: int = -1
    pause_until: float = 0.0
    best_dist: float = math.inf
    best_at: float = 0.0


class _Simulator:
    """Social-force walking: goal attraction, repulsion from people, props and walls."""

    def __init__(self, spec: SceneSpec, layout: Layout, people: list[Person]) -> None:
        self.spec, self.layout, self.people = spec, layout, people
        self.rng = _rng(spec.seed, 4)
        self.dt = 1.0 / spec.fps
        self.pw, self.ph = layout.plane
        self.rects = np.array([p.inflated(0.0) for p in layout.props]).reshape(-1, 4)

    def free(self, xy: np.ndarray, margin: float) -> bool:
        x, y = xy
        if not (1.0 <= x <= self.pw - 1.0 and 1.0 <= y <= self.ph - 1.0):
            return False
        return not any(
            p.x0 - margin < x < p.x1 + margin and p.y0 - margin < y < p.y1 + margin for p in self.layout.props
        )

    def waypoint(self, near: np.ndarray | None, min_dist: float = 3.0) -> np.ndarray:
        best = None
        for _ in range(50):
            cand = np.array([self.rng.uniform(1, self.pw - 1), self.rng.uniform(1, self.ph - 1)])
            if not self.free(cand, 0.8):
                continue
            best = cand
            if near is None or np.linalg.norm(cand - near) >= min_dist:
                break
        return best if best is not None else np.array([self.pw / 2, self.ph / 2])

    def door_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.layout.doors[i]
        door = np.array([d.x, d.y])
        return door, door + 1.5 * np.array([d.nx, d.ny])

    def nearest_door(self, xy: np.ndarray) -> int:
        return int(np.argmin([math.hypot(d.x - xy[0], d.y - xy[1]) for d in self.layout.doors]))

    def plan(self) -> tuple[list[_Walker], np.ndarray]:
        """Initial walkers and positions (NaN for those who enter later)."""
        T = self.spec.seconds
        n = len(self.people)
        order = self.rng.permutation(n)
        returning = set(order[: max(1, round(0.4 * n))].tolist()) if self.spec.reentry else set()
        pos = np.full((n, 2), np.nan)
        walkers = []
        for i in range(n):
            r = self.rng.random()
            w = _Walker(mode="absent", target=np.zeros(2))
            if i in returning:
                door = int(self.rng.integers(len(self.layout.doors)))
                d = self.layout.doors[door]
                start = np.array([d.x, d.y]) + self.rng.uniform(2.5, 5) * np.array([d.nx, d.ny])
                start += self.rng.uniform(-2, 2) * np.array([-d.ny, d.nx])
                pos[i] = self._place(start, pos)
                w.mode, w.target = "walk", self.waypoint(pos[i])
                w.leave_at = self.rng.uniform(0.05, 0.2) * T
                w.gap = min(self.rng.uniform(2, 5), 0.25 * T)
            elif r < 0.5:
                pos[i] = self._place(self.waypoint(None), pos)
                w.mode, w.target = "walk", self.waypoint(pos[i])
            else:
                w.enter_at = self.rng.uniform(0, 0.3) * T
                w.enter_door = int(self.rng.integers(len(self.layout.doors)))
            if i not in returning and self.rng.random() < 0.4:
                w.leave_at = self.rng.uniform(0.45, 0.75) * T
            walkers.append(w)
        return walkers, pos

    def _place(self, want: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """A free floor point near ``want`` at least 0.9 m from everyone placed so far."""
        cand = want
        for k in range(60):
            ok = self.free(cand, 0.5)
            others = taken[np.isfinite(taken[:, 0])]
            if ok and (len(others) == 0 or np.min(np.linalg.norm(others - cand, axis=1)) >= 0.9):
                return cand
            cand = want + self.rng.normal(0, 0.5 + 0.1 * k, 2) if k < 30 else self.waypoint(None)
        return cand

    def run(self) -> Motion:
        n_frames, n = self.spec.total_frames, len(self.people)
        walkers, pos = self.plan()
        vel = np.zeros((n, 2))
        speed0 = np.array([p.speed for p in self.people])
        heading = self.rng.uniform(-math.pi, math.pi, n)
        for i, w in enumerate(walkers):
            if w.mode == "walk":
                d = w.target - pos[i]
                heading[i] = math.atan2(d[1], d[0])
                vel[i] = speed0[i] * d / max(np.linalg.norm(d), 1e-6) * (self.rng.random() < 0.8)
        phase = self.rng.uniform(0, 2 * math.pi, n)
        stride = np.array([1.45 * p.height / 1.75 for p in self.people])
        out_pos = np.full((n_frames, n, 2), np.nan)
        out_heading = np.zeros((n_frames, n))
        out_phase = np.zeros((n_frames, n))
        out_swing = np.zeros((n_frames, n))
        turn = 1 - math.exp(-self.dt / 0.25)
        for k in range(n_frames):
            now = k * self.dt
            self._update_modes(walkers, pos, vel, speed0, heading, now)
            here = np.isfinite(pos[:, 0])
            if k:  # frame 0 shows the initial state
                self._step(walkers, pos, vel, speed0, here)
            speed = np.linalg.norm(vel, axis=1)
            moving = here & (speed > 0.15)
            want = np.arctan2(vel[:, 1], vel[:, 0])
            diff = (want - heading + math.pi) % (2 * math.pi) - math.pi
            heading = np.where(moving, heading + turn * diff, heading)
            phase = phase + 2 * math.pi * speed * self.dt / stride
            out_pos[k] = pos
            out_heading[k] = heading
            out_phase[k] = phase
            out_swing[k] = 0.42 * np.clip(speed / 1.3, 0, 1.1)
        return Motion(out_pos, out_heading, out_phase, out_swing)

    def _update_modes(
        self,
        walkers: list[_Walker],
        pos: np.ndarray,
        vel: np.ndarray,
        speed0: np.ndarray,
        heading: np.ndarray,
        now: float,
    ) -> None:
        for i, w in enumerate(walkers):
            if w.mode == "absent":
                if w.enter_at is not None and now >= w.enter_at:
                    door, inside = self.door_points(w.enter_door)
                    d = self.layout.doors[w.enter_door]
                    pos[i] = door + 0.3 * np.array([d.nx, d.ny])
                    vel[i] = 0.8 * speed0[i] * np.array([d.nx, d.ny])
                    heading[i] = math.atan2(d.ny, d.nx)
                    w.mode, w.target, w.enter_at = "enter", inside, None
                    w.best_dist, w.best_at = math.inf, now
                continue
            if w.leave_at is not None and now >= w.leave_at and w.mode != "exit":
                w.exit_door = self.nearest_door(pos[i])
                door, inside = self.door_points(w.exit_door)
                w.mode, w.target, w.queue, w.leave_at = "exit", inside, [door], None
                w.best_dist, w.best_at = math.inf, now
            dist = float(np.linalg.norm(w.target - pos[i]))
            if dist < w.best_dist - 0.3:
                w.best_dist, w.best_at = dist, now
            if w.mode == "pause":
                if now >= w.pause_until:
                    w.mode, w.target = "walk", self.waypoint(pos[i])
                    w.best_dist, w.best_at = math.inf, now
                continue
            arrive = 0.35 if (w.mode == "exit" and not w.queue) else 0.5
            if dist < arrive:
                if w.queue:
                    w.target = w.queue.pop(0)
                elif w.mode == "exit":
                    pos[i] = np.nan
                    vel[i] = 0.0
                    w.mode = "absent"
                    if w.gap is not None:
                        # Come back through any door, but no sooner than walking there
                        # outside the hall allows: re-entries must be physically possible.
                        back = int(self.rng.integers(len(self.layout.doors)))
                        d0, d1 = self.layout.doors[w.exit_door], self.layout.doors[back]
                        walk_s = math.hypot(d1.x - d0.x, d1.y - d0.y) / speed0[i]
                        w.enter_at, w.enter_door, w.gap = now + w.gap + walk_s, back, None
                    continue
                elif w.mode == "walk" and self.rng.random() < 0.3:
                    w.mode, w.pause_until = "pause", now + self.rng.uniform(1, 4)
                else:
                    w.mode, w.target = "walk", self.waypoint(pos[i])
                w.best_dist, w.best_at = math.inf, now
            elif now - w.best_at > 3.0 and w.mode in ("walk", "enter"):
                w.mode, w.target = (
                    "walk",
                    self.waypoint(pos[i]),
                )  # stuck behind something: go elsewhere
                w.best_dist, w.best_at = math.inf, now

    def _step(
        self,
        walkers: list[_Walker],
        pos: np.ndarray,
        vel: np.ndarray,
        speed0: np.ndarray,
        here: np.ndarray,
    ) -> None:
        idx = np.flatnonzero(here)
        if len(idx) == 0:
            return
        p, v = pos[idx], vel[idx]
        targets = np.array([walkers[i].target for i in idx])
        paused = np.array([walkers[i].mode == "pause" for i in idx])
        to_goal = targets - p
        dist = np.linalg.norm(to_goal, axis=1, keepdims=True)
        slow = np.clip(dist / 1.0, 0.4, 1.0)  # ease in on the final metre
        desired = np.where(paused[:, None], 0.0, speed0[idx, None] * slow * to_goal / np.maximum(dist, 1e-6))
        force = (desired - v) / 0.5
        # People: exponential repulsion, weaker from those behind (anisotropic social force).
        diff = p[:, None, :] - p[None, :, :]
        d = np.linalg.norm(diff, axis=2)
        np.fill_diagonal(d, np.inf)
        nrm = diff / np.maximum(d, 1e-6)[..., None]
        vdir = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
        cos = -(nrm * vdir[:, None, :]).sum(-1)
        weight = 0.35 + 0.65 * (1 + cos) / 2
        mag = 2.0 * np.exp((0.5 - d) / 0.3) * weight
        force += (mag[..., None] * nrm).sum(axis=1)
        # Props: repulsion from the nearest point of each footprint.
        if len(self.rects):
            nearest = np.stack(
                [
                    np.clip(p[:, None, 0], self.rects[None, :, 0], self.rects[None, :, 2]),
                    np.clip(p[:, None, 1], self.rects[None, :, 1], self.rects[None, :, 3]),
                ],
                axis=-1,
            )
            away = p[:, None, :] - nearest
            dd = np.linalg.norm(away, axis=2)
            force += ((4.0 * np.exp((0.35 - dd) / 0.2) / np.maximum(dd, 1e-6))[..., None] * away).sum(axis=1)
        # Walls, except for people walking through a doorway.
        doorway = np.array([walkers[i].mode in ("enter", "exit") for i in idx])
        wall_d = np.stack([p[:, 0], self.pw - p[:, 0], p[:, 1], self.ph - p[:, 1]], axis=1)
        wall_n = np.array([[1.0, 0], [-1.0, 0], [0, 1.0], [0, -1.0]])
        wall_f = 3.0 * np.exp((0.35 - wall_d) / 0.2)
        force += np.where(doorway[:, None], 0.0, wall_f @ wall_n)
        v = v + force * self.dt
        vmax = 1.3 * speed0[idx, None]
        sp = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(sp > vmax, v * vmax / np.maximum(sp, 1e-6), v)
        p = p + v * self.dt
        p[:, 0] = np.clip(p[:, 0], 0.3, self.pw - 0.3)
        p[:, 1] = np.clip(p[:, 1], 0.3, self.ph - 0.3)
        for r in self.rects:  # never inside a prop: push out through the nearest side
            x0, y0, x1, y1 = r[0] - 0.3, r[1] - 0.3, r[2] + 0.3, r[3] + 0.3
            inside = (p[:, 0] > x0) & (p[:, 0] < x1) & (p[:, 1] > y0) & (p[:, 1] < y1)
            for j in np.flatnonzero(inside):
                gaps = [p[j, 0] - x0, x1 - p[j, 0], p[j, 1] - y0, y1 - p[j, 1]]
                side = int(np.argmin(gaps))
                p[j, side // 2] = (x0, x1, y0, y1)[side]
        pos[idx], vel[idx] = p, v


def simulate(spec: SceneSpec, layout: Layout, people: list[Person]) -> Motion:
    """Where everyone is, faces and how far into their stride they are, frame by frame."""
    return _Simulator(spec, layout, people).run()


# ------------------------------------------------------------------- bodies

_RING = np.linspace(0, 2 * math.pi, 9)[:-1]
_COS, _SIN = np.cos(_RING), np.sin(_RING)
_LATS = np.radians([-60.0, -20.0, 20.0, 60.0])
_SPHERE = np.concatenate(
    [np.stack([np.cos(lat) * _COS, np.cos(lat) * _SIN, np.full(8, np.sin(lat))], axis=1) for lat in _LATS]
    + [np.array([[0, 0, 1.0], [0, 0, -1.0]])]
)  # (34, 3) unit sphere points
SHADE_DARK, SHADE_LIT = 0.68, 1.0


@dataclass(frozen=True)
class Part:
    dark: np.ndarray  # (n, 3) silhouette points
    lit: np.ndarray  # (m, 3) lit-side points, inside the silhouette
    centre: np.ndarray  # (3,)
    rgb: tuple[float, float, float]
    pinned: bool = False  # drawn right after the previous part whatever the depth order


def _frustum(a: np.ndarray, b: np.ndarray, ra: float, rb: float, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = b - a
    w = axis / max(np.linalg.norm(axis), 1e-9)
    ref = np.array([0, 0, 1.0]) if abs(w[2]) < 0.9 else np.array([1.0, 0, 0])
    u = np.cross(w, ref)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    ring = _COS[:, None] * u + _SIN[:, None] * v
    dark = np.concatenate([a + ra * ring, b + rb * ring])
    side = light - np.dot(light, w) * w
    side = side / max(np.linalg.norm(side), 1e-9)
    shift = 0.3 * side
    lit = np.concatenate([a + ra * (0.68 * ring + shift), b + rb * (0.68 * ring + shift)])
    return dark, lit


def _ellipsoid(c: np.ndarray, frame: np.ndarray, axes: np.ndarray, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of an ellipsoid with semi-axes ``axes`` along the columns of ``frame``."""
    dark = c + (_SPHERE * axes) @ frame.T
    local_light = frame.T @ light
    shift = 0.3 * axes * local_light / max(np.linalg.norm(local_light), 1e-9)
    lit = c + (_SPHERE * axes * 0.68 + shift) @ frame.T
    return dark, lit


def body_parts(
    person: Person,
    x: float,
    y: float,
    heading: float,
    phase: float,
    swing: float,
    light: np.ndarray,
) -> list[Part]:
    """The articulated body at one instant, in world coordinates (metres, z up)."""
    h, b = person.height, person.build
    fwd = np.array([math.cos(heading), math.sin(heading), 0.0])
    left = np.array([-math.sin(heading), math.cos(heading), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    frame = np.column_stack([fwd, left, up])
    ground = np.array([x, y, 0.0])
    leg, ankle_z = 0.45 * h, 0.08 * h / 1.75
    alpha = swing * math.sin(phase)
    drop = leg * (1 - math.cos(alpha))  # the hips sink so that both feet stay on the floor
    hip_z, shoulder_z = leg + ankle_z - drop, 0.8 * h - drop
    parts: list[Part] = []

    def add(pts: tuple[np.ndarray, np.ndarray], rgb: tuple[float, float, float], pinned: bool = False) -> None:
        parts.append(Part(pts[0], pts[1], pts[0].mean(axis=0), rgb, pinned))

    for side, sign in ((1.0, 1.0), (-1.0, -1.0)):
        a = sign * alpha
        hip = ground + side * 0.085 * b * left + hip_z * up
        ankle = hip + leg * (math.sin(a) * fwd - math.cos(a) * up)
        add(_frustum(hip, ankle, 0.075 * b, 0.05 * b, light), person.trousers)
        shoe = np.array([ankle[0], ankle[1], 0.045]) + 0.045 * fwd
        add(_ellipsoid(shoe, frame, np.array([0.13, 0.05, 0.045]), light), person.shoes)
        # Arms swing against the leg on the same side.
        shoulder = ground + side * (0.2 * b + 0.035) * left + (shoulder_z - 0.03) * up
        beta = -0.8 * a
        elbow = shoulder + 0.18 * h * (math.sin(beta) * fwd - math.cos(beta) * up)
        gamma = beta + 0.25
        hand = elbow + 0.17 * h * (math.sin(gamma) * fwd - math.cos(gamma) * up)
        add(_frustum(shoulder, elbow, 0.05 * b, 0.042 * b, light), person.shirt)
        add(
            _frustum(elbow, hand, 0.04 * b, 0.035 * b, light),
            person.shirt if person.long_sleeves else person.skin,
        )
        if person.long_sleeves:
            add(_ellipsoid(hand, frame, np.array([0.04, 0.035, 0.05]), light), person.skin)
    light_local = frame.T @ light
    shift = frame @ (0.3 * np.array([light_local[0] * 0.11 * b, light_local[1] * 0.18 * b, 0.0]))

    def torso_ring(z: float, lat: float, dep: float, scale: float = 1.0) -> np.ndarray:
        centre = ground + z * up
        ring = (b * lat) * _COS[:, None] * left + (b * dep) * _SIN[:, None] * fwd
        return centre + scale * ring + (shift if scale < 1 else 0.0)

    levels = (
        (hip_z - 0.02, 0.165, 0.11),
        (0.66 * h - drop, 0.19, 0.12),
        (shoulder_z, 0.2, 0.11),
        (shoulder_z + 0.045 * h, 0.07, 0.06),
    )
    torso = np.concatenate([torso_ring(*lv) for lv in levels])
    torso_lit = np.concatenate([torso_ring(*lv, scale=0.68) for lv in levels])
    parts.append(Part(torso, torso_lit, torso.mean(axis=0), person.shirt))
    if person.stripe is not None:
        band_levels = ((0.6 * h - drop, 0.185, 0.122), (0.67 * h - drop, 0.194, 0.122))
        band = np.concatenate([torso_ring(*lv) for lv in band_levels])
        band_lit = np.concatenate([torso_ring(*lv, scale=0.68) for lv in band_levels])
        parts.append(Part(band, band_lit, band.mean(axis=0), person.stripe, pinned=True))
    if person.backpack is not None:
        pack = ground + (0.64 * h - drop) * up - (0.11 * b + 0.08) * fwd
        add(_ellipsoid(pack, frame, np.array([0.08, 0.15, 0.2]), light), person.backpack)
    head_axes = np.array([0.1, 0.085, 0.118]) * h / 1.75
    head = ground + (0.935 * h - drop) * up
    add(_ellipsoid(head, frame, head_axes, light), person.skin)
    hair_dir = up - 0.6 * fwd
    hair_dir /= np.linalg.norm(hair_dir)
    hair_pts = head + (_SPHERE * head_axes * 1.06) @ frame.T
    cap = hair_pts[((hair_pts - head) @ hair_dir) >= -0.1 * head_axes[2]]
    hair_lit = head + (cap - head) * 0.8 + 0.15 * head_axes[2] * light
    parts.append(Part(cap, hair_lit, cap.mean(axis=0), person.hair, pinned=True))
    return parts


@dataclass(frozen=True)
class Figure:
    """One person's body at one frame, flattened for projection."""

    person_id: int
    xy: np.ndarray  # (2,) floor position, metres
    points: np.ndarray  # (N, 3) every part's dark then lit points
    dark: list[slice]
    lit: list[slice]
    rgb: list[tuple[float, float, float]]
    groups: list[list[int]]  # parts drawn together (a part and its pinned followers)
    centres: np.ndarray  # (G, 3) depth reference of each group
    shadow: np.ndarray  # (16, 3) floor outline of the contact shadow
    brightness: float  # light pool at the person's position


_SHADOW_RING = np.linspace(0, 2 * math.pi, 17)[:-1]


def _figure(person: Person, motion: Motion, frame: int, idx: int, layout: Layout) -> Figure:
    x, y = motion.pos[frame, idx]
    heading = float(motion.heading[frame, idx])
    parts = body_parts(
        person,
        float(x),
        float(y),
        heading,
        float(motion.phase[frame, idx]),
        float(motion.swing[frame, idx]),
        layout.light_dir,
    )
    chunks: list[np.ndarray] = []
    dark: list[slice] = []
    lit: list[slice] = []
    groups: list[list[int]] = []
    n = 0
    for i, part in enumerate(parts):
        chunks += [part.dark, part.lit]
        dark.append(slice(n, n + len(part.dark)))
        n += len(part.dark)
        lit.append(slice(n, n + len(part.lit)))
        n += len(part.lit)
        if part.pinned and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    fwd = np.array([math.cos(heading), math.sin(heading)])
    left = np.array([-fwd[1], fwd[0]])
    ring = (0.34 * np.cos(_SHADOW_RING)[:, None] * fwd + 0.27 * np.sin(_SHADOW_RING)[:, None] * left) * person.build
    shadow = np.column_stack([ring + [x, y], np.full(16, 0.002)])
    return Figure(
        person.person_id,
        np.array([x, y]),
        np.concatenate(chunks),
        dark,
        lit,
        [p.rgb for p in parts],
        groups,
        np.array([parts[g[0]].centre for g in groups]),
        shadow,
        float(illumination(layout, np.array([x, y]))[0]),
    )


def _hull(px: np.ndarray) -> np.ndarray:
    return cv2.convexHull(px.astype(np.float32)).reshape(-1, 2)


def _darken(img: np.ndarray, poly: np.ndarray, strength: float) -> None:
    """Soft contact shadow: blurred polygon mask multiplies the image down."""
    h, w = img.shape[:2]
    pad = 4
    x0, y0 = np.floor(poly.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillConvexPoly(mask, _fixed(poly - [x0, y0]), 1.0, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi * (1 - strength * mask)[..., None]).astype(np.uint8)


def render_view(
    stage: CameraStage, layout: Layout, figures: list[Figure], noise_index: int
) -> tuple[np.ndarray, list[tuple[int, int, int, int, int, float]]]:
    """One camera frame and its GT rows ``(person_id, x, y, w, h, visibility)``."""
    cam, look = stage.cam, stage.look
    w, h = cam.size
    img = stage.background.copy()
    labels = np.zeros((h, w), np.uint8)
    cam_xy = cam.centre[:2]
    projected = []
    for fig in figures:
        pc = cam.to_camera(fig.points)
        if pc[:, 2].min() < 0.1:  # under or behind the camera: never in view
            continue
        px = cam.project(pc)
        lo, hi = px.min(axis=0), px.max(axis=0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] >= w or lo[1] >= h:
            continue
        projected.append((float(np.linalg.norm(fig.xy - cam_xy)), fig, px, lo, hi))
    projected.sort(key=lambda item: -item[0])
    for _, fig, _, _, _ in projected:
        sc = cam.to_camera(fig.shadow)
        if sc[:, 2].min() > 0.1:
            _darken(img, cam.project(sc), 0.3)

    full_area: dict[int, tuple[int, tuple[int, int, int, int]]] = {}
    for label, (_, fig, px, lo, hi) in enumerate(projected, start=1):
        cx, cy = np.clip((lo + hi) / 2, 0, [w - 1, h - 1]).astype(int)
        factor = look.gain * look.vignette[cy, cx] * fig.brightness
        ox, oy = int(math.floor(lo[0])) - 1, int(math.floor(lo[1])) - 1
        full = np.zeros((int(math.ceil(hi[1])) - oy + 2, int(math.ceil(hi[0])) - ox + 2), np.uint8)
        offset = np.array([ox * 16, oy * 16], np.int32)  # ROI origin in _fixed units
        bgr = np.asarray(fig.rgb)[:, ::-1] * factor
        dark_bgr = np.clip(bgr * SHADE_DARK, 0, 255).tolist()
        lit_bgr = np.clip(bgr * SHADE_LIT, 0, 255).tolist()
        group_depth = np.linalg.norm(fig.centres - cam.centre, axis=1)
        for g in np.argsort(-group_depth, kind="stable"):
            for part in fig.groups[g]:
                dark = _fixed(_hull(px[fig.dark[part]]))
                lit = _fixed(_hull(px[fig.lit[part]]))
                cv2.fillConvexPoly(img, dark, dark_bgr[part], cv2.LINE_AA, 4)
                cv2.fillConvexPoly(img, lit, lit_bgr[part], cv2.LINE_AA, 4)
                cv2.fillConvexPoly(labels, dark, label, cv2.LINE_8, 4)
                cv2.fillConvexPoly(full, dark - offset, 255, cv2.LINE_8, 4)
        bx, by, bw, bh = cv2.boundingRect(full)
        full_area[label] = (cv2.countNonZero(full), (bx + ox, by + oy, bw, bh))
        for prop, mask in zip(layout.props, stage.prop_masks, strict=True):
            if mask is not None and _segment_hits_rect(cam_xy, fig.xy, prop.inflated(0.15)):
                mx, my, m = mask
                np.copyto(
                    img[my : my + m.shape[0], mx : mx + m.shape[1]],
                    stage.background[my : my + m.shape[0], mx : mx + m.shape[1]],
                    where=m[..., None],
                )
                labels[my : my + m.shape[0], mx : mx + m.shape[1]][m] = 0
    visible = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()
    rows = []
    for label, (_, fig, _, _, _) in enumerate(projected, start=1):
        area, (bx, by, bw, bh) = full_area[label]
        x0, y0 = max(bx, 0), max(by, 0)
        x1, y1 = min(bx + bw, w), min(by + bh, h)
        vis = float(visible[label]) / area if area else 0.0
        if vis > 0 and x1 > x0 and y1 > y0 and (x1 - x0) * (y1 - y0) >= MIN_BOX_AREA_PX:
            rows.append((fig.person_id, x0, y0, x1 - x0, y1 - y0, min(vis, 1.0)))
    cv2.add(img, look.noise_pos[noise_index], dst=img)
    cv2.subtract(img, look.noise_neg[noise_index], dst=img)
    rows.sort()
    return img, rows


# -------------------------------------------------------------- calibration


def _calibration_points(
    stage: CameraStage, plane: tuple[float, float], props: list[Prop]
) -> tuple[np.ndarray, np.ndarray]:
    """Well-spread floor points the camera sees unobstructed: (image px, metres)."""
    cam = stage.cam
    w, h = cam.size
    for step in (1.0, 0.5, 0.25):
        grid = _plane_grid(plane, step)
        grid = grid[
            [not any(p.x0 - 0.2 < x < p.x1 + 0.2 and p.y0 - 0.2 < y < p.y1 + 0.2 for p in props) for x, y in grid]
        ]
        pc = cam.to_camera(np.column_stack([grid, np.zeros(len(grid))]))
        ok = pc[:, 2] > 0.1
        grid, px = grid[ok], cam.project(pc[ok])
        margin = 0.02 * w
        ok = (px[:, 0] >= margin) & (px[:, 0] < w - margin) & (px[:, 1] >= margin) & (px[:, 1] < h - margin)
        for mask in stage.prop_masks:
            if mask is None:
                continue
            mx, my, m = mask
            ix, iy = px[:, 0].astype(int) - mx, px[:, 1].astype(int) - my
            inside = (ix >= 0) & (iy >= 0) & (ix < m.shape[1]) & (iy < m.shape[0])
            hidden = np.zeros(len(px), bool)
            hidden[inside] = m[iy[inside], ix[inside]]
            ok &= ~hidden
        grid, px = grid[ok], px[ok]
        if len(grid) >= MIN_CALIBRATION_POINTS:
            break
    if len(grid) < MIN_CALIBRATION_POINTS:
        raise RuntimeError(f"camera {cam.camera_id} sees only {len(grid)} unobstructed floor points")
    # Farthest-point sampling in the image, from the point nearest its centre.
    chosen = [int(np.argmin(np.linalg.norm(px - [w / 2, h / 2], axis=1)))]
    dist = np.linalg.norm(px - px[chosen[0]], axis=1)
    while len(chosen) < min(16, len(px)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(px - px[nxt], axis=1))
    return px[chosen], grid[chosen]


def calibration_document(stages: list[CameraStage], layout: Layout) -> dict:
    """``homography_data/<env>.json``: seed point-pair format plus full matrices."""
    pw, ph = layout.plane
    ppm = PIXELS_PER_METER
    cameras = []
    to_map_px = np.diag([ppm, ppm, 1.0])
    for stage in stages:
        cam = stage.cam
        src, dst = _calibration_points(stage, layout.plane, layout.props)
        H = to_map_px @ np.linalg.inv(cam.floor_to_image())
        # Scale to |H22| = 1 but keep the sign that gives floor pixels w > 0: dividing by a
        # negative H22 (the top-left pixel looks above the horizon) would flip every point.
        H /= abs(H[2, 2])
        cameras.append(
            {
                "id": cam.camera_id,
                "image_size": list(cam.size),
                "K": cam.K.tolist(),
                "dist": [0.0] * 5,
                "rvec": cv2.Rodrigues(cam.R)[0].ravel().tolist(),
                "tvec": cam.t.tolist(),
                "source_points": np.round(src, 3).tolist(),
                "destination_points": np.round(dst * ppm, 3).tolist(),
                "homography": H.tolist(),
            }
        )
    return {
        "ground_plane": {"width": pw * ppm, "height": ph * ppm, "pixels_per_meter": ppm},
        "cameras": cameras,
    }


# ----------------------------------------------------------------- the scene


def _textures(layout: Layout, seed: int) -> dict:
    rng = _rng(seed, 5)
    ceiling_ppm = 10.0
    pw, ph = layout.plane
    ceiling = np.full((int(ph * ceiling_ppm), int(pw * ceiling_ppm), 3), (88, 90, 92), np.uint8)
    for lx, ly in layout.lamps:  # lamp panels above the light pools
        p0 = (int((lx - 0.6) * ceiling_ppm), int((ly - 0.3) * ceiling_ppm))
        p1 = (int((lx + 0.6) * ceiling_ppm), int((ly + 0.3) * ceiling_ppm))
        cv2.rectangle(ceiling, p0, p1, (245, 248, 250), -1)
    return {
        "floor": _floor_texture(layout, rng),
        "walls": [_wall_texture(layout, wall, rng) for wall in range(4)],
        "ceiling": (ceiling, ceiling_ppm),
    }


def _check_replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "scene.json").exists())):
        raise ValueError(f"{out} exists and is not a generated scene: refusing to replace it")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` so readers see the old scene or the new one, never half."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _scene_document(
    spec: SceneSpec,
    stages: list[CameraStage],
    layout: Layout,
    people: list[Person],
    coverage: float,
) -> dict:
    cams = []
    for st in stages:
        c = st.cam
        fwd = c.R[2]
        cams.append(
            {
                "id": c.camera_id,
                "position_m": np.round(c.centre, 3).tolist(),
                "hfov_deg": round(math.degrees(2 * math.atan(c.size[0] / 2 / c.K[0, 0])), 2),
                "pitch_deg": round(math.degrees(math.asin(-fwd[2])), 2),
            }
        )
    bounds = spec.chunk_bounds()
    return {
        "generator": "spoton.synth",
        "format_version": 1,
        "spec": spec.model_dump(mode="json"),
        "total_frames": spec.total_frames,
        "sub_video_frames": [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        "coverage_two_plus": round(coverage, 4),
        "cameras": cams,
        "people": [p.describe() for p in people],
        "props": [
            {
                "kind": p.kind,
                "footprint_m": [round(v, 3) for v in (p.x0, p.y0, p.x1, p.y1)],
                "height_m": round(p.height, 3),
            }
            for p in layout.props
        ],
        "doors": [{"wall": d.wall, "xy_m": [round(d.x, 3), round(d.y, 3)]} for d in layout.doors],
    }


def _render_scene(root: Path, spec: SceneSpec, progress: bool) -> tuple[dict[str, list[Path]], float]:
    """Simulate and render everything into ``root``; returns video paths and coverage."""
    cams, coverage = make_cameras(spec)
    layout = make_layout(spec)
    people = make_people(spec)
    motion = simulate(spec, layout, people)
    textures = _textures(layout, spec.seed)
    look_rng = _rng(spec.seed, 6)
    stages = [_build_stage(cam, layout, textures, look_rng) for cam in cams]
    noise_rng = _rng(spec.seed, 7)
    bounds = spec.chunk_bounds()
    video_dir = root / f"video_{spec.env}"
    videos = {
        c.camera_id: [video_dir / c.camera_id / f"sub_video_{j + 1:02d}.mp4" for j in range(spec.sub_videos)]
        for c in cams
    }
    gt_rows: dict[str, list[str]] = {c.camera_id: [] for c in cams}
    plane_rows = ["frame_idx,person_id,x_m,y_m"]
    writers: dict[str, H264Writer] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.total_frames, desc=f"synth {spec.env}", unit="frame")
    try:
        for k in range(spec.total_frames):
            if k in bounds[:-1]:
                j = bounds.index(k)
                for cid in list(writers):
                    writers.pop(cid).close()
                writers = {
                    c.camera_id: H264Writer(videos[c.camera_id][j], spec.fps, spec.size, keyframe_interval=2 * spec.fps)
                    for c in cams
                }
            figures = [_figure(people[i], motion, k, int(i), layout) for i in motion.present(k)]
            for fig in figures:
                plane_rows.append(f"{k},{fig.person_id},{fig.xy[0]:.4f},{fig.xy[1]:.4f}")
            for stage in stages:
                img, rows = render_view(stage, layout, figures, int(noise_rng.integers(len(stage.look.noise_pos))))
                writers[stage.cam.camera_id].write(img)
                gt_rows[stage.cam.camera_id] += [
                    f"{k + 1},{pid},{x},{y},{bw},{bh},1,1,{vis:.4f}" for pid, x, y, bw, bh, vis in rows
                ]
            if bar is not None:
                bar.update(1)
        for cid in list(writers):
            writers.pop(cid).close()
    finally:
        for w in writers.values():
            w.abort()
        if bar is not None:
            bar.close()
    for cid, lines in gt_rows.items():
        _write_text(root / "gt" / cid / "gt.txt", "".join(line + "\n" for line in lines))
    _write_text(root / "gt" / "ground_plane.csv", "\n".join(plane_rows) + "\n")
    _write_text(
        root / "homography_data" / f"{spec.env}.json",
        json.dumps(calibration_document(stages, layout), indent=1) + "\n",
    )
    _write_text(
        root / "scene.json",
        json.dumps(_scene_document(spec, stages, layout, people, coverage), indent=1) + "\n",
    )
    return videos, coverage


def generate_scene(out: Path | str, spec: SceneSpec, progress: bool = False) -> SceneInfo:
    """Render ``spec`` into ``out`` (replacing a previously generated scene there).

    The scene is written into a temporary sibling folder and swapped in at the
    end, so a reader never sees a half-written scene.
    """
    if not isinstance(spec, SceneSpec):
        raise ValueError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    out = Path(out).resolve()
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700: the scene is for everyone to read
    try:
        videos, coverage = _render_scene(tmp, spec, progress)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bounds = spec.chunk_bounds()
    cams = spec.camera_ids
    return SceneInfo(
        out=out,
        env=spec.env,
        cameras=cams,
        videos={c: [out / p.relative_to(tmp) for p in videos[c]] for c in cams},
        gt={c: out / "gt" / c / "gt.txt" for c in cams},
        ground_plane_csv=out / "gt" / "ground_plane.csv",
        calibration=out / "homography_data" / f"{spec.env}.json",
        scene_json=out / "scene.json",
        frames_per_sub_video=tuple(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
        total_frames=spec.total_frames,
        fps=spec.fps,
        coverage=coverage,
    )
