"""Person detectors behind one small protocol.

``Detector.detect(frame) -> Detections`` and ``detect_batch(frames)``; a
detector that needs to see a sub-video before its frames (the background
model of ``bgsub``, the frame cursor of ``mot``) also has
``prepare(video_path, frame_offset=0, context=())``, which the pipeline calls
once per sub-video before feeding its frames in order (``context``: the same
camera's neighbouring sub-videos, which bgsub samples for its background).

- ``bgsub`` (default, weightless): static cameras, retrospective analysis. The
  background is the temporal median of frames sampled across the whole
  sub-video and its neighbours, with people who stood still through most of
  them uncovered (``uncover_standing``); per frame, foreground = colour distance to it (shadows removed),
  and calibrated person-sized boxes are fitted to the foreground, which splits
  people merged side by side or in depth and rejects blobs of no person size.
  With K and R known, the mask is first warped so that the world's verticals
  are image columns (``rectify``): a camera looking down sees people at the
  sides of its view slanted by up to a body width, which upright boxes fit badly.
- ``torchvision``: a torchvision detection model (Faster R-CNN ResNet50-FPN v2
  by default) from a local state dict; batched, person class only.
- ``mot``: precomputed MOTChallenge det.txt / gt.txt rows (external detectors,
  oracle runs with ground truth as detections).
"""

import ctypes
import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from spoton import compiled
from spoton.embed import check_options, resolve_device, weight_file
from spoton.geometry import CameraGeometry, GroundPlane
from spoton.types import PERSON_CLASS_ID, Detections

TORCHVISION_DEFAULT_MODEL = "fasterrcnn_resnet50_fpn_v2"
TORCHVISION_DEFAULT_WEIGHTS = "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
TORCHVISION_WEIGHTS_SOURCE = (
    "torchvision's COCO checkpoint, e.g. "
    "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth for the default model"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@runtime_checkable
class Detector(Protocol):
    def detect(self, frame: np.ndarray) -> Detections:
        """Person boxes of one BGR frame."""
        ...

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Person boxes of consecutive frames (batched where the model can)."""
        ...


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = (getattr(frame, "shape", None), getattr(frame, "dtype", None))
        raise ValueError(f"frame must be an (H, W, 3) uint8 BGR image, got shape/dtype {desc}")
    return frame


# ------------------------------------------------------------ frame sampling


def sample_frames(video_path: Path | str, n: int) -> list[np.ndarray]:
    """Up to ``n`` BGR frames spread evenly over a video file or image folder.

    Videos are walked with ``grab`` (demux + decode, no colour conversion) and
    only the chosen frames are retrieved; H.264 cannot seek cheaply, so one
    sequential pass is the fastest exact way. Reading stops quietly at a
    corrupt frame: the frames before it still make a background, and the
    frame reader reports the corruption when the pipeline reaches it.
    """
    if n < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got {n}")
    path = Path(video_path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            return []
        picks = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
        frames = [cv2.imread(str(files[i]), cv2.IMREAD_COLOR) for i in picks]
        return [f for f in frames if f is not None]
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            return []
        wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())
        last = max(wanted)
        skipping = _sample_skipping(path, wanted)
        if skipping is not None:
            ok, first = cap.read()  # the same pixels as OpenCV decodes them, or OpenCV's way below
            if ok and first.shape == skipping[0].shape and np.array_equal(first, skipping[0]):
                return skipping
            cap.release()
            cap = cv2.VideoCapture(str(path))
        out: list[np.ndarray] = []
        for i in range(last + 1):
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if not ok:
                    break
                out.append(frame)
        return out
    finally:
        cap.release()


def _sample_skipping(path: Path, wanted: set[int]) -> list[np.ndarray] | None:
    """The ``wanted`` frames (display order indices) of a video, skipping what they do not need.

    A frame no other frame references (most B-frames) and that is not wanted
    is not decoded at all: a third less work on videos with B-frames, none
    lost on videos without. Frames are placed by their timestamps, so None
    (the caller decodes every frame instead) when those are missing or
    irregular, or when decoding fails or ends early.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV is a dependency
        return None
    out: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            rate, base = stream.average_rate, stream.time_base
            if not rate or not base:
                return None
            ctx = stream.codec_context
            origin: int | None = None

            def index(pts: int) -> int | None:
                assert origin is not None
                x = float((pts - origin) * base * rate)
                i = round(x)
                return i if abs(x - i) < 0.01 else None

            def take(frames: Any) -> bool:
                nonlocal origin
                for frame in frames:
                    if frame.pts is None:
                        return False
                    if origin is None:
                        origin = frame.pts  # the first frame shown
                    i = index(frame.pts)
                    if i is None:
                        return False
                    if i in wanted and i not in out:
                        out[i] = frame.to_ndarray(format="bgr24")
                return True

            for packet in container.demux(stream):
                i = index(packet.pts) if packet.pts is not None and origin is not None else None
                ctx.skip_frame = "NONREF" if i is not None and i not in wanted else "DEFAULT"
                if not take(ctx.decode(packet)):
                    return None
                if len(out) == len(wanted):
                    break
            else:
                ctx.skip_frame = "DEFAULT"
                if not take(ctx.decode(None)):
                    return None
    except (av.error.FFmpegError, ValueError, IndexError, OSError):
        return None
    if set(out) != wanted:
        return None
    return [out[i] for i in sorted(out)]


@lru_cache(maxsize=32)
def _selection_network(n: int, k: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Comparators of Batcher's odd-even merge sort on ``n`` inputs that decide the rank-``k`` output.

    Each is (low, high, keep_min, keep_max): after it, input ``low`` holds the
    smaller value and ``high`` the larger (only the ones a later step reads are
    computed). Comparators to a missing input (past ``n``, an infinite value
    that never moves) are dropped, so any ``n`` works; pruning backwards from
    output ``k`` leaves about a third of a full sort.
    """
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        q = p
        while q >= 1:
            for j in range(q % p, n - q, 2 * q):
                for i in range(min(q, n - j - q)):
                    if (i + j) // (2 * p) == (i + j + q) // (2 * p):
                        pairs.append((i + j, i + j + q))
            q //= 2
        p *= 2
    needed, kept = {k}, []
    for a, b in reversed(pairs):
        keep_min, keep_max = a in needed, b in needed
        if keep_min or keep_max:
            kept.append((a, b, keep_min, keep_max))
            needed |= {a, b}
    return tuple(reversed(kept))


def temporal_median(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel median of equally sized uint8 frames: people move, the floor stays.

    The lower median of an even count (rank n // 2) is as good a background
    estimate and stays uint8. Computed by a selection network of whole-image
    ``cv2.min``/``cv2.max``: exact, and ten times faster than ``np.partition``
    along the frame axis.
    """
    if not frames:
        raise ValueError("temporal_median needs at least one frame, got 0")
    shapes = {(f.shape, f.dtype) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"temporal_median needs frames of one shape and dtype, got {sorted(map(str, shapes))}")
    x = [np.ascontiguousarray(f) for f in frames]
    n = len(x)
    for a, b, keep_min, keep_max in _selection_network(n, n // 2):
        low = cv2.min(x[a], x[b]) if keep_min else None
        if keep_max:
            x[b] = cv2.max(x[a], x[b])
        if low is not None:
            x[a] = low
    return x[n // 2].copy() if n == 1 else x[n // 2]


def _median_u8(values: np.ndarray) -> float:
    """``np.median`` of uint8 values, by counting them (exact, and a tenth of the time)."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    n = int(cum[-1])
    if n == 0:
        return float("nan")
    lo, hi = np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")
    return (int(lo) + int(hi)) / 2.0


def _nanmedian_rows(vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per column k and channel, the median of ``vals[i, k]`` over the rows i with ``valid[i, k]``.

    ``vals``: (n, k, c) float32 of integer values (pixels), ``valid``: (n, k)
    bool. NaN where no row is valid. Equal to ``np.nanmedian`` over the
    masked values (the mean of two integers halves exactly), by one sort.
    """
    n, k, c = vals.shape
    # Invalid rows sort last as +inf; columns laid out contiguously for the sort.
    v = np.where(valid[..., None], vals, np.inf).transpose(1, 2, 0).copy()  # (k, c, n)
    v.sort(axis=2)
    count = valid.sum(axis=0)  # (k,)
    lo = np.maximum((count - 1) // 2, 0)[:, None, None]
    hi = np.minimum(count // 2, n - 1)[:, None, None]
    out = (np.take_along_axis(v, lo, axis=2) + np.take_along_axis(v, hi, axis=2))[..., 0] / np.float32(2.0)
    out[count == 0] = np.nan
    return out.astype(np.float32)


def channel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the largest absolute difference over the three colour channels (uint8)."""
    d0, d1, d2 = cv2.split(cv2.absdiff(a, b))
    return cv2.max(cv2.max(d0, d1), d2)


def uncover_standing(
    stack: Sequence[np.ndarray],
    background: np.ndarray,
    threshold: float,
    min_area: int = 60,
    min_share: float = 0.15,
) -> tuple[np.ndarray, int]:
    """The background with long-standing people removed where the floor they covered was seen.

    Someone who stands still in most sample frames is the per-pixel median.
    Where at least ``min_share`` of the samples agree on another stable value
    (the floor before they arrived or after they left), a region has two
    candidate backgrounds. Which one is the scene? A person is an object:
    pasted into the background it leaves strong edges along its outline,
    while the floor continues its surroundings seamlessly. So a region takes
    its alternative value when that makes its boundary markedly smoother.
    Returns the corrected background and how many regions were replaced.
    """
    n = len(stack)
    if n < 6:
        return background, 0
    bg = np.ascontiguousarray(background)
    dev = np.empty((n, *bg.shape[:2]), bool)
    for i, frame in enumerate(stack):
        dev[i] = channel_distance(frame, bg) > threshold
    share = dev.sum(axis=0, dtype=np.uint16) / n  # the fraction of samples deviating (as dev.mean)
    ys, xs = np.nonzero(share >= min_share)
    if ys.size < min_area:
        return background, 0
    vals = np.stack([f[ys, xs] for f in stack]).astype(np.float32)  # (n, k, 3)
    d = dev[:, ys, xs]
    alt = _nanmedian_rows(vals, d)  # (k, 3): the deviating samples' median; NaN where none deviates
    gap = np.abs(vals - alt[None])
    with np.errstate(invalid="ignore"):  # NaN (no deviating sample) agrees with nothing
        agree = d & (np.maximum(np.maximum(gap[..., 0], gap[..., 1]), gap[..., 2]) <= threshold)
    stable = agree.mean(axis=0) >= min_share
    known = np.zeros(bg.shape[:2], np.uint8)
    keep = stable & np.isfinite(alt).all(axis=1)
    known[ys[keep], xs[keep]] = 1
    # Regions: the stable pixels closed into solid shapes (a person's pixels
    # close to the floor's colour have no stable alternative of their own).
    mask = cv2.morphologyEx(known, cv2.MORPH_OPEN, _KERNEL_3)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL_CLOSE)
    alternative = bg.copy()
    alternative[ys[keep], xs[keep]] = np.clip(alt[keep], 0, 255).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = bg.copy()
    replaced = 0
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if area < min_area:
            continue
        x0, y0 = max(x - 6, 0), max(y - 6, 0)
        x1, y1 = min(x + w + 6, bg.shape[1]), min(y + h + 6, bg.shape[0])
        # A little wider than the stable pixels: a silhouette's rim blends with what is behind it.
        region = cv2.dilate((labels[y0:y1, x0:x1] == label).astype(np.uint8), _KERNEL_3)
        ring = (cv2.dilate(region, _KERNEL_3, iterations=2) - cv2.erode(region, _KERNEL_3)).astype(bool)
        if not ring.any():
            continue
        before = bg[y0:y1, x0:x1]
        # Pixels of the region without a stable alternative are filled from around them.
        missing = (region.astype(bool) & ~known[y0:y1, x0:x1].astype(bool)).astype(np.uint8)
        fill = alternative[y0:y1, x0:x1]
        if missing.any():
            fill = cv2.inpaint(np.ascontiguousarray(fill), missing, 3, cv2.INPAINT_TELEA)
        after = np.where(region[..., None].astype(bool), fill, before)
        if _edge_energy(after, ring) < 0.7 * _edge_energy(before, ring):
            out[y0:y1, x0:x1] = after
            replaced += 1
    return out, replaced


def _edge_energy(image: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    # Median: outlines shared by both versions (a door frame behind someone) do not decide.
    return float(np.median(np.hypot(gx, gy)[where]))


# -------------------------------------------------------- person size priors


class PersonSize(Protocol):
    """Expected image size (px) of a standing person whose feet are at image point (u, v)."""

    def size_px(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(height, width) arrays; NaN where no person can stand (beyond the horizon)."""
        ...


@dataclass(frozen=True)
class CalibratedSize:
    """Exact pinhole projection of a person-sized box standing on the floor (z = 0)."""

    geometry: CameraGeometry
    height_m: float = 1.7
    width_m: float = 0.5

    def __post_init__(self) -> None:
        g = self.geometry
        if g.K is None or g.R is None or g.t is None:
            raise ValueError(f"camera {g.camera_id}: CalibratedSize needs K, R and t")
        if not (0.5 <= self.height_m <= 2.5 and 0.1 <= self.width_m <= 1.5):
            raise ValueError(f"implausible person size {self.height_m} m x {self.width_m} m")

    def _floor_points(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Where the viewing rays of pixels (u, v) meet the floor; NaN above the horizon.

        Intersects rays with z = 0 from K, R, t directly rather than through the
        homography, whose overall sign (and so the in-front test) depends on
        how it was normalised.
        """
        g = self.geometry
        R = np.asarray(g.R, np.float64)
        centre = -R.T @ np.asarray(g.t, np.float64).reshape(3)
        rays = np.linalg.solve(np.asarray(g.K, np.float64), np.stack([u, v, np.ones_like(u)]))
        rays = R.T @ rays  # world directions, (3, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = -centre[2] / rays[2]
        s = np.where(s > 0, s, np.nan)
        return (centre[:2, None] + s * rays[:2]).T

    def _to_image(self, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = self.geometry
        cam = world @ np.asarray(g.R, np.float64).T + np.asarray(g.t, np.float64).reshape(1, 3)
        img = cam @ np.asarray(g.K, np.float64).T
        with np.errstate(divide="ignore", invalid="ignore"):
            px = img[:, :2] / img[:, 2:3]
        return px, cam[:, 2]

    def person_points(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(4, n, 2) image points of feet, head and the two shoulders-width sides at mid-height
        of a person standing at image point (u, v); NaN where no one can stand."""
        u = np.asarray(u, np.float64).reshape(-1)
        v = np.asarray(v, np.float64).reshape(-1)
        ground = self._floor_points(u, v)
        n = ground.shape[0]
        feet = np.concatenate([ground, np.zeros((n, 1))], axis=1)
        head = feet + np.array([0.0, 0.0, self.height_m])
        # Shoulder-width offsets along the camera's x axis: horizontal and
        # perpendicular to the view, so the projected width is the full width.
        side = np.asarray(self.geometry.R, np.float64)[0] * (self.width_m / 2.0)
        mid = feet + np.array([0.0, 0.0, self.height_m / 2.0])
        pts, depth = self._to_image(np.concatenate([feet, head, mid - side, mid + side]))
        p = pts.reshape(4, n, 2)
        d = depth.reshape(4, n)
        bad = ~np.isfinite(ground).all(axis=1) | (d.min(axis=0) <= 1e-6)
        p[:, bad] = np.nan
        return p

    def size_px(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.person_points(u, v)
        return np.linalg.norm(p[0] - p[1], axis=1), np.linalg.norm(p[2] - p[3], axis=1)


@dataclass(frozen=True)
class VerticalRectifier:
    """A homography of the work image after which the world's verticals are image columns.

    A camera looking down sees people away from the image centre slanted:
    their verticals converge on the vertical vanishing point, by more than a
    person's width from feet to head at the edges of a wide view. Upright
    boxes then fit either the legs or the torso (two boxes for one person) or
    fall between them. Warping the foreground mask so that verticals become
    columns (the vanishing point sent to infinity, the centre row at its
    scale) lets upright boxes fit slanted people; each box maps back to the
    image around what the mask shows of its person, row by row.
    """

    H: np.ndarray  # work px -> rectified px
    size: tuple[int, int]  # (w, h) of the rectified canvas

    @cached_property
    def H_inv(self) -> np.ndarray:
        """Rectified px -> work px (inverted once: boxes map back on every frame)."""
        return np.linalg.inv(self.H)

    @classmethod
    def for_camera(
        cls, vertical_vp: np.ndarray, work_shape: tuple[int, int], scale: float, max_stretch: float = 2.0
    ) -> "VerticalRectifier | None":
        """The rectifier for a work image of ``work_shape`` (h, w) at ``scale`` work px per full px.

        None when verticals are already (nearly) columns, or when the warp would
        stretch some part of the image by more than ``max_stretch`` (the
        vanishing point near the image: a camera looking almost straight down).
        """
        h, w = work_shape
        vx, vy, vw = (float(c) for c in np.asarray(vertical_vp, np.float64).reshape(3))
        vx, vy = vx * scale, vy * scale  # homogeneous: scaling x, y moves the point into work px
        v0 = h / 2.0
        # Projective part: the line through the vanishing point parallel to the rows
        # goes to infinity; the centre row keeps its scale.
        if abs(vw) > 1e-12 and abs(vy / vw - v0) > 1e-9:
            vpv = vy / vw
            a = 1.0 / (v0 - vpv)
            b = -a * vpv
            # After P every vertical runs along the vanishing point's own coordinates.
            dx, dy = vx / vw, vpv
        else:
            a, b = 0.0, 1.0
            dx, dy = vx, vy
        if abs(dy) < 1e-12:
            return None
        k = dx / dy
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
        denominators = a * corners[:, 1] + b
        if denominators.min() <= 1e-6:
            return None
        stretch = 1.0 / denominators
        if abs(k) < 0.02 and float(np.abs(stretch - 1).max()) < 0.02:
            return None  # verticals already columns
        if float(stretch.max()) > max_stretch or float(stretch.min()) < 1.0 / max_stretch:
            return None
        P = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, a, b]])
        # Shear about the centre: the verticals' direction (after P) becomes a column.
        S = np.array([[1.0, -k, k * v0], [0, 1.0, 0], [0, 0, 1.0]])
        M = S @ P
        pts = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), M).reshape(-1, 2)
        lo, hi = np.floor(pts.min(axis=0)), np.ceil(pts.max(axis=0))
        # No overall rescaling: shrinking the canvas to the image's area would
        # save detection time (the near rows grow more than the far ones shrink)
        # but lose the far, small people (measured: MOTA down on a scene of them).
        T = np.array([[1.0, 0, -lo[0]], [0, 1.0, -lo[1]], [0, 0, 1.0]])
        size = (int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1)
        if size[0] * size[1] > 4 * w * h:
            return None
        return cls(T @ M, size)

    @cached_property
    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel of every rectified pixel, in OpenCV's fixed-point form (built once per video)."""
        w, h = self.size
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        src = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ self.H_inv.T
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = (src[..., 0] / src[..., 2]).astype(np.float32)
            my = (src[..., 1] / src[..., 2]).astype(np.float32)
        return cv2.convertMaps(mx, my, cv2.CV_16SC2, nninterpolation=True)

    def warp(self, mask: np.ndarray, content: Sequence[int] | None = None) -> np.ndarray:
        """A 0/1 (or bool) work mask in rectified coordinates (nearest neighbour).

        A remap through precomputed maps: the same pixels as ``cv2.warpPerspective``
        at a third of its cost per frame. ``content`` (x, y, w, h in work px, as
        ``cv2.boundingRect`` gives it) bounds the mask's non-zero pixels: only
        the part of the canvas they can land on is remapped, the rest is zero.
        """
        m1, m2 = self._maps
        src = mask.view(np.uint8)
        if content is None:
            out = cv2.remap(src, m1, m2, cv2.INTER_NEAREST, borderValue=0)
        else:
            out = np.zeros((self.size[1], self.size[0]), np.uint8)
            region = self.region_of(content)
            if region is not None:
                x0, y0, x1, y1 = region
                sub2 = None if m2 is None else m2[y0:y1, x0:x1]  # nearest neighbour: one map
                out[y0:y1, x0:x1] = cv2.remap(src, m1[y0:y1, x0:x1], sub2, cv2.INTER_NEAREST, borderValue=0)
        return out.view(bool) if mask.dtype == bool else out

    def region_of(self, rect: Sequence[int]) -> tuple[int, int, int, int] | None:
        """Canvas (x0, y0, x1, y1) holding every rectified pixel whose source lies in work ``rect``.

        Nearest-neighbour sources are rounded: the rectangle grows by a pixel
        before its corners are mapped, and the result by two more. None when
        ``rect`` is empty.
        """
        x, y, w, h = rect
        if w <= 0 or h <= 0:
            return None
        corners = np.array([[x - 1, y - 1], [x + w, y - 1], [x - 1, y + h], [x + w, y + h]], np.float64)
        pts = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), self.H).reshape(-1, 2)
        cw, ch = self.size
        x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in pts.min(axis=0))
        x1, y1 = (int(np.ceil(v)) + 3 for v in pts.max(axis=0))
        x1, y1 = min(x1, cw), min(y1, ch)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def boxes_back(
        self, boxes: np.ndarray, body: np.ndarray, work_shape: tuple[int, int], native: bool = True
    ) -> np.ndarray:
        """Rectified xyxy boxes -> boxes in work px around the people they hold.

        A slanted person fills a slanted strip, not the corners of its
        bounding box: the box in the image spans what ``body`` (rectified
        foreground without shadows) shows of them, row by row, plus their feet
        at the box bottom (hidden feet included), each row's extent mapped back.
        In C++ (spoton/native/boxes_back.cpp, the same numbers) when built and ``native``.
        """
        h, w = work_shape
        out = np.zeros((boxes.shape[0], 4), np.float64)
        bh, bw = body.shape
        fn = compiled.native_boxes_back() if native and len(boxes) else None
        if fn is not None:
            mask = np.ascontiguousarray(body, bool).view(np.uint8)
            xyxy = np.ascontiguousarray(boxes, np.float64)
            m = np.ascontiguousarray(self.H_inv, np.float64)
            fn(mask.ctypes.data, bh, bw, xyxy.ctypes.data, len(xyxy), m.ctypes.data, out.ctypes.data)
        python_boxes = [] if fn is not None else boxes.tolist()  # the loop below is the C++'s model
        for i, (x1, y1, x2, y2) in enumerate(python_boxes):
            ix1, iy1 = min(max(math.floor(x1), 0), bw), min(max(math.floor(y1), 0), bh)
            ix2, iy2 = min(max(math.ceil(x2), 0), bw), min(max(math.ceil(y2), 0), bh)
            sub = body[iy1:iy2, ix1:ix2]
            rows = np.nonzero(sub.any(axis=1))[0] if sub.size else np.zeros(0, np.int64)
            half = (x2 - x1) / 2.0
            n = rows.size
            pts = np.empty((2 * n + 4, 2), np.float64)  # row ends left, row ends right, box corners
            if n:
                pts[:n, 0] = ix1 + np.argmax(sub[rows], axis=1)
                pts[n : 2 * n, 0] = ix1 + sub.shape[1] - np.argmax(sub[rows, ::-1], axis=1)
                pts[:n, 1] = pts[n : 2 * n, 1] = iy1 + rows + 0.5
                widths = np.sort(pts[n : 2 * n, 0] - pts[:n, 0])
                # The median width (by hand: np.median costs more than the rest of the loop).
                half = (widths[n // 2] if n % 2 else (widths[n // 2 - 1] + widths[n // 2]) / 2.0) / 2.0
            mid = (x1 + x2) / 2.0
            pts[2 * n :] = [[mid - half, y1], [mid + half, y1], [mid - half, y2], [mid + half, y2]]
            back = cv2.perspectiveTransform(pts.reshape(-1, 1, 2), self.H_inv).reshape(-1, 2)
            ends_back = back[2 * n :]
            if n:
                back = np.concatenate([back[: 2 * n], ends_back[2:]])
            # Top and bottom rows from the box itself (the top of the head, the feet).
            out[i] = [back[:, 0].min(), ends_back[:, 1].min(), back[:, 0].max(), ends_back[:, 1].max()]
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
        return out


@dataclass(frozen=True)
class LinearSize:
    """height = slope * v + intercept, width = aspect * height: a level camera's size law.

    For a camera without roll the image height of a person grows linearly with
    the distance of the feet below the horizon, so a line fitted to isolated
    blobs (homography-only calibration) predicts sizes almost as well as K/R/t.
    """

    slope: float
    intercept: float
    aspect: float

    def size_px(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(v, np.float64).reshape(-1)
        h = self.slope * v + self.intercept
        h = np.where(h > 1.0, h, np.nan)
        return h, h * self.aspect


def calibrated_size(geometry: CameraGeometry | None, **kwargs: float) -> CalibratedSize | None:
    """The exact size prior of a fully calibrated camera (K, R, t), else None."""
    if geometry is None or geometry.K is None or geometry.R is None or geometry.t is None:
        return None
    return CalibratedSize(geometry, **kwargs)


def fit_linear_size(
    bottoms: np.ndarray, heights: np.ndarray, widths: np.ndarray, *, seed: int = 0
) -> LinearSize | None:
    """Robust (RANSAC) fit of the size law to blob measurements; None if the data cannot support one.

    Merged and fragmented blobs are outliers on both sides of the true line;
    RANSAC with a relative tolerance keeps the dominant (single person) mode.
    """
    v = np.asarray(bottoms, np.float64)
    h = np.asarray(heights, np.float64)
    w = np.asarray(widths, np.float64)
    if v.shape[0] < 8:
        return None
    rng = np.random.default_rng(seed)
    tol = 0.15
    best_inliers = np.zeros(v.shape[0], bool)
    for _ in range(300):
        i, j = rng.choice(v.shape[0], 2, replace=False)
        if abs(v[i] - v[j]) < 1e-6:
            slope, icpt = 0.0, (h[i] + h[j]) / 2.0
        else:
            slope = (h[i] - h[j]) / (v[i] - v[j])
            icpt = h[i] - slope * v[i]
        pred = slope * v + icpt
        with np.errstate(divide="ignore", invalid="ignore"):
            inl = (pred > 1) & (np.abs(np.log(h / pred)) < tol)
        if inl.sum() > best_inliers.sum():
            best_inliers = inl
    if best_inliers.sum() < max(6, 0.3 * v.shape[0]):
        return None
    slope, icpt = (
        np.polyfit(v[best_inliers], h[best_inliers], 1)
        if np.ptp(v[best_inliers]) > 1
        else (0.0, float(np.median(h[best_inliers])))
    )
    aspect = float(np.median(w[best_inliers] / h[best_inliers]))
    return LinearSize(float(slope), float(icpt), aspect)


# ------------------------------------------------------------------ bgsub


@dataclass(frozen=True)
class _Foreground:
    mask: np.ndarray  # (h, w) uint8 0/1 at work resolution
    shadowish: np.ndarray  # (h, w) bool: foreground with a shadow's colour, kept (see _shadows)
    scale: float  # work px per full-res px
    valid: np.ndarray | None = None  # (h, w) bool: pixels inside the camera's view (rectified masks)
    valid_integral: np.ndarray | None = None  # cv2.integral of ``valid`` (it is fixed per video)


def _box_score(box: np.ndarray, fill: float, h_exp: np.float32) -> float:
    """A fitted box's confidence: how full of foreground it is, and how its height agrees with the prior."""
    size_agree = float(np.exp(-abs(np.log(max(box[3] - box[1], 1.0) / h_exp)) / 0.35))
    return 0.5 * min(1.0, fill / 0.6) + 0.5 * size_agree


class BgSubDetector:
    """Temporal-median background subtraction with calibration-guided person boxes.

    Every threshold is an option; the defaults are set from physical reasoning
    (a person is ~1.7 m x 0.5 m, fills ~60 % of its box) and from the noise
    level measured on the video itself, not from any one scene.
    """

    def __init__(
        self,
        geometry: CameraGeometry | None = None,
        *,
        work_width: int = 640,
        bg_samples: int = 25,
        threshold: float = 10.0,
        noise_factor: float = 5.0,
        shadow_ratio: tuple[float, float] = (0.4, 0.98),
        shadow_chroma: float = 0.045,
        shadow_texture: float = 0.03,
        person_height_m: float = 1.7,
        person_width_m: float = 0.5,
        min_fill: float = 0.3,
        min_visible: float = 0.2,
        max_people_per_blob: int = 8,
        min_confidence: float = 0.1,
        bg_weight: float = 1.0,
        context_max_change: float = 0.05,
        max_hidden: float = 0.6,
        max_widen: float = 0.3,
        uncover_standing: bool = True,
        rectify: bool = True,
        sample_cache: Path | str | None = None,
        native: bool | None = None,
    ) -> None:
        if not 64 <= work_width <= 4096:
            raise ValueError(f"work_width must be in [64, 4096] px, got {work_width}")
        if bg_samples < 3:
            raise ValueError(f"bg_samples must be >= 3, got {bg_samples}")
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold must be in [1, 255], got {threshold}")
        if not (0 < shadow_ratio[0] < shadow_ratio[1] <= 1.0):
            raise ValueError(f"shadow_ratio must be (lo, hi) with 0 < lo < hi <= 1, got {shadow_ratio}")
        for name, value in (
            ("min_fill", min_fill),
            ("min_visible", min_visible),
            ("min_confidence", min_confidence),
        ):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if max_people_per_blob < 1:
            raise ValueError(f"max_people_per_blob must be >= 1, got {max_people_per_blob}")
        self.geometry = geometry
        self.work_width = int(work_width)
        self.bg_samples = int(bg_samples)
        self.threshold = float(threshold)
        self.noise_factor = float(noise_factor)
        self.shadow_ratio = (float(shadow_ratio[0]), float(shadow_ratio[1]))
        self.shadow_chroma = float(shadow_chroma)
        self.shadow_texture = float(shadow_texture)
        self.min_fill = float(min_fill)
        self.min_visible = float(min_visible)
        self.max_people_per_blob = int(max_people_per_blob)
        self.min_confidence = float(min_confidence)
        if not 0 < bg_weight <= 4:
            raise ValueError(f"bg_weight must be in (0, 4], got {bg_weight}")
        self.bg_weight = float(bg_weight)
        if not 0 <= context_max_change <= 1:
            raise ValueError(f"context_max_change must be in [0, 1], got {context_max_change}")
        self.context_max_change = float(context_max_change)
        if not 0 <= max_hidden < 1:
            raise ValueError(f"max_hidden must be in [0, 1), got {max_hidden}")
        self.max_hidden = float(max_hidden)
        if not 0 <= max_widen <= 1:
            raise ValueError(f"max_widen must be in [0, 1], got {max_widen}")
        self.max_widen = float(max_widen)
        self.uncover_standing = bool(uncover_standing)
        self.rectify = bool(rectify)
        # SpotOn's C++ parts (group fitting, shadow colours, boxes back from the rectified view,
        # frame shrinking: identical boxes, a fraction of the time): None uses them when built.
        if native and compiled.library() is None:
            raise ValueError(f"bgsub option native=True needs SpotOn's C++ parts: {compiled.HOW_TO_BUILD}")
        self.native = native
        self.rectifier: VerticalRectifier | None = None  # set by fit() for calibrated, tilted views
        self._valid: np.ndarray | None = None  # the rectified view's inside
        self._valid_integral: np.ndarray | None = None  # its integral image
        self.standing_uncovered = 0  # regions uncover_standing() replaced in the last fit
        self.sample_cache = Path(sample_cache) if sample_cache is not None else None
        self.context_used = 0  # neighbouring sub-videos the last prepare() took samples from
        self.size: PersonSize | None = calibrated_size(geometry, height_m=person_height_m, width_m=person_width_m)
        self.background: np.ndarray | None = None  # work resolution, uint8 BGR
        self._bg_gray: np.ndarray | None = None  # its grey level + 1, for shadow ratios
        self._size_table: np.ndarray | None = None  # see _build_size_table
        self.full_size: tuple[int, int] | None = None  # (w, h) of the frames fitted
        self.effective_threshold = self.threshold

    # -- background -----------------------------------------------------------

    def prepare(
        self,
        video_path: Path | str,
        frame_offset: int = 0,  # noqa: ARG002
        context: Sequence[Path | str] = (),
    ) -> None:
        """Build the background from frames sampled across the whole sub-video.

        ``context`` are neighbouring sub-videos of the same camera (the one
        before and after). Someone who stands still for most of one sub-video
        is, per pixel, the most frequent value there and would be taken for
        background; sampled over a longer window they are not. A neighbour
        joins only where its own background agrees with this one's almost
        everywhere (same lighting, camera not moved).
        """
        full_size, small = self._samples(video_path)
        if not small:
            raise ValueError(f"no readable frame in {video_path}: cannot build a background")
        extra: list[np.ndarray] = []
        if context:
            own = temporal_median(small)
            for other in context:
                try:
                    other_size, more = self._samples(other)
                except (OSError, ValueError):
                    continue  # a broken neighbour only loses its help
                if not more or other_size != full_size:
                    continue
                if self._agrees(own, temporal_median(more)):
                    extra += more
        self.context_used = len(extra) // max(self.bg_samples, 1)
        self._fit_work(full_size, small, extra)

    def _samples(self, video_path: Path | str) -> tuple[tuple[int, int], list[np.ndarray]]:
        """The frame size (w, h) and ``bg_samples`` frames of a video at work resolution.

        From ``sample_cache`` when it holds them: kept at work resolution, a
        sixteenth of the full frames' bytes at 1080p.
        """

        def sample() -> tuple[tuple[int, int], list[np.ndarray]]:
            frames = [_check_frame(f) for f in sample_frames(video_path, self.bg_samples)]
            sizes = {(f.shape[1], f.shape[0]) for f in frames}
            if len(sizes) > 1:
                raise ValueError(f"frames of {video_path} change size: {sorted(sizes)}")
            return (sizes.pop() if sizes else (0, 0)), [self._to_work(f) for f in frames]

        if self.sample_cache is None:
            return sample()
        path = Path(video_path)
        st = path.stat()
        tag = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.bg_samples}|{self.work_width}"
        cache = Path(self.sample_cache) / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    w, h = (int(v) for v in z["full_size"])
                    return (w, h), list(z["frames"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: sample again and overwrite it
        full_size, small = sample()
        if small:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=np.stack(small), full_size=np.array(full_size, np.int64))
            os.replace(tmp, cache)
        return full_size, small

    def _agrees(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Two backgrounds of one camera agree when they differ on few pixels (people standing)."""
        if a.shape != b.shape:
            return False
        return float(np.mean(channel_distance(a, b) > 2 * self.threshold)) <= self.context_max_change

    def fit(self, frames: Iterable[np.ndarray], context: Iterable[np.ndarray] = ()) -> "BgSubDetector":
        """Background, noise level and (without K/R/t) the person size law from sample frames.

        ``context`` frames (neighbouring sub-videos, see ``prepare``) join the
        background median only; noise and size are measured on ``frames``.
        """
        full = [_check_frame(f) for f in frames]
        if len(full) < 1:
            raise ValueError("fit needs at least one frame")
        extra = [_check_frame(f) for f in context]
        sizes = {f.shape[:2] for f in full + extra}
        if len(sizes) != 1:
            raise ValueError(f"frames to fit must share one size, got {sorted(sizes)}")
        h, w = full[0].shape[:2]
        return self._fit_work((w, h), [self._to_work(f) for f in full], [self._to_work(f) for f in extra])

    def _fit_work(
        self, full_size: tuple[int, int], small: list[np.ndarray], extra: list[np.ndarray]
    ) -> "BgSubDetector":
        """``fit`` on frames already at work resolution, taken from frames of ``full_size`` (w, h)."""
        w, _ = full_size
        self.full_size = full_size
        samples = small + extra
        self.background = temporal_median(samples)
        self.effective_threshold = self._threshold_from_noise(small)
        self.standing_uncovered = 0
        if self.uncover_standing:
            self.background, self.standing_uncovered = uncover_standing(
                samples, self.background, self.effective_threshold
            )
        self._bg_gray = cv2.cvtColor(self.background, cv2.COLOR_BGR2GRAY).astype(np.float32) + 1.0
        if self.size is None and len(small) >= 3:
            self.size = self._learn_size(small)
        scale = self._scale(w)
        self.rectifier = None
        if self.rectify and isinstance(self.size, CalibratedSize):
            vp = self.size.geometry.vertical_vp
            if vp is not None:
                self.rectifier = VerticalRectifier.for_camera(vp, self.background.shape[:2], scale)
        if self.rectifier is not None:
            self._valid = self.rectifier.warp(np.ones(self.background.shape[:2], bool))
            self._valid_integral = cv2.integral(self._valid.view(np.uint8))
            self._build_size_table((self.rectifier.size[1], self.rectifier.size[0]), scale)
        else:
            self._valid = None
            self._valid_integral = None
            self._build_size_table(self.background.shape[:2], scale)
        return self

    def _to_work(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if w <= self.work_width:
            return frame
        ww = self.work_width
        wh = max(1, int(round(h * ww / w)))
        # 1080p -> 640 px, a whole factor: the same pixels from C++, 4x faster than cv2.
        return compiled.resize_area(frame, (ww, wh), native=self.native is not False)

    def _scale(self, full_w: int) -> float:
        return min(1.0, self.work_width / full_w)

    def _threshold_from_noise(self, small: list[np.ndarray]) -> float:
        """Raise the colour threshold above the video's own pixel noise (sensor, compression)."""
        assert self.background is not None
        med = [_median_u8(channel_distance(f, self.background)) for f in small[:: max(1, len(small) // 8)]]
        # Most pixels are background: their median distance is the noise scale.
        return max(self.threshold, self.noise_factor * 1.4826 * float(np.median(med)))

    def _learn_size(self, small: list[np.ndarray]) -> PersonSize | None:
        """Size law from the whole-person blobs of the sample frames (None when too few)."""
        bottoms, heights, widths = [], [], []
        for s in small:
            fg = self._foreground(s)
            n, _, stats, _ = cv2.connectedComponentsWithStats(fg.mask, connectivity=8)
            scale = fg.scale
            hh, ww = fg.mask.shape
            for x, y, bw, bh, area in stats[1:n]:
                touches = x <= 0 or y <= 0 or x + bw >= ww or y + bh >= hh
                if touches or area < 30 or bh < 8:
                    continue
                bottoms.append((y + bh) / scale)
                heights.append(bh / scale)
                widths.append(bw / scale)
        return fit_linear_size(np.array(bottoms), np.array(heights), np.array(widths))

    # -- per frame ------------------------------------------------------------

    def _foreground(self, small: np.ndarray) -> _Foreground:
        assert self.background is not None and self.full_size is not None
        bg = self.background
        if small.shape != bg.shape:
            raise ValueError(f"frame size {small.shape[:2]} (work) differs from the background's {bg.shape[:2]}")
        raw = (channel_distance(small, bg) > self.effective_threshold).view(np.uint8)
        shadowish = self._shadows(small, raw) if self.shadow_chroma > 0 else np.zeros(raw.shape, bool)
        # Opening removes speckle; a tall closing rejoins head, torso and legs
        # split where clothing matches the floor colour.
        opened = cv2.morphologyEx(raw, cv2.MORPH_OPEN, _KERNEL_3)
        fg = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, _KERNEL_TALL)
        return _Foreground(fg, shadowish & fg.view(bool), self._scale(self.full_size[0]))

    def _shadows(self, small: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Clear cast shadows from ``fg`` (in place); return the shadow-coloured pixels kept.

        A shadow scales the floor by one factor: darker, same chromaticity.
        Grey clothing can look the same, so only pixels where the floor's
        texture also shows through (the ratio frame / background is nearly
        constant around the pixel) are cleared. Shadow-coloured pixels that
        fail that test (a soft shadow's rim, grey trousers) stay foreground
        but are returned, so box bottoms can ignore them: a shadow lies on the
        floor around and below the feet, clothing does not.
        """
        assert self.background is not None and self._bg_gray is not None
        out = np.zeros(fg.shape, bool)
        h, w = fg.shape
        lo, hi = self.shadow_ratio
        candidates = compiled.native_shadow_candidates() if self.native is not False else None
        if candidates is not None:  # the same test in one pass (spoton/native/shadow_candidates.cpp)
            # (packed copies only where they are not already; kept referenced during the call)
            frame, bg, mask = (np.ascontiguousarray(a) for a in (small, self.background, fg))
            found = np.empty((2, h * w), np.int32)
            n = candidates(frame.ctypes.data, bg.ctypes.data, mask.ctypes.data, h, w, lo, hi, self.shadow_chroma,
                           found[0].ctypes.data, found[1].ctypes.data)
            if n == 0:
                return out
            ys, xs = found[0, :n], found[1, :n]
        else:
            nz = cv2.findNonZero(fg)  # row-major like np.nonzero, at a fifth of its cost
            if nz is None:
                return out
            xs, ys = nz[:, 0, 0], nz[:, 0, 1]
            # Per-channel arithmetic on the foreground pixels only, with explicit
            # channel sums: NumPy reductions over a 3-wide axis are slow. Pixels are
            # gathered by flat index (a third of the time of 2-D fancy indexing).
            at = ys.astype(np.intp) * w + xs
            f = small.reshape(-1, 3).take(at, axis=0).astype(np.float32) + 1.0
            b = self.background.reshape(-1, 3).take(at, axis=0).astype(np.float32) + 1.0
            fs = f[:, 0] + f[:, 1] + f[:, 2]
            bs = b[:, 0] + b[:, 1] + b[:, 2]
            fn, bn = f / fs[:, None], b / bs[:, None]
            chroma = np.abs(fn[:, 0] - bn[:, 0]) + np.abs(fn[:, 1] - bn[:, 1]) + np.abs(fn[:, 2] - bn[:, 2])
            r = fs / bs
            coloured = (r > lo) & (r < hi) & (chroma < self.shadow_chroma)
            if not coloured.any():
                return out
            ys, xs = ys[coloured], xs[coloured]
        # Texture test only around the shadow-coloured pixels: local mean and
        # variance of the grey-level ratio frame / background.
        h, w = fg.shape
        y0, y1 = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, h)
        x0, x1 = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, w)
        gray = cv2.cvtColor(small[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32) + 1.0
        ratio = gray / self._bg_gray[y0:y1, x0:x1]
        mean = cv2.boxFilter(ratio, -1, (5, 5))
        var = cv2.sqrBoxFilter(ratio, -1, (5, 5)) - mean * mean
        near = (ys.astype(np.intp) - y0) * (x1 - x0) + (xs - x0)
        m, v = mean.ravel().take(near), var.ravel().take(near)
        cast = v < (self.shadow_texture * m) ** 2
        fg[ys[cast], xs[cast]] = 0
        out[ys[~cast], xs[~cast]] = True
        return out

    def detect(self, frame: np.ndarray) -> Detections:
        if self.background is None or self.full_size is None:
            raise ValueError("bgsub detector has no background yet: call prepare(video_path) or fit(frames) first")
        frame = _check_frame(frame)
        if (frame.shape[1], frame.shape[0]) != self.full_size:
            raise ValueError(
                f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the background's "
                f"{self.full_size[0]}x{self.full_size[1]}"
            )
        small = self._to_work(frame)
        fg = self._foreground(small)
        r = self.rectifier
        if r is not None:
            # One warp for both masks (bit 0: foreground, bit 1: shadow-coloured; nearest neighbour).
            # Only the canvas the foreground can land on (a third of it, typically) is remapped.
            both = r.warp(fg.mask | (fg.shadowish.view(np.uint8) << 1), cv2.boundingRect(fg.mask))
            fg = _Foreground(both & 1, (both >> 1).view(bool), fg.scale, self._valid, self._valid_integral)
        boxes, conf = self._boxes(fg)
        if r is not None:
            boxes = r.boxes_back(boxes, fg.mask.view(bool) & ~fg.shadowish, small.shape[:2], self.native is not False)
        boxes = (boxes / fg.scale).astype(np.float32)
        keep = conf >= self.min_confidence
        boxes, conf = boxes[keep], conf[keep]
        return Detections(boxes, conf, np.full(len(conf), PERSON_CLASS_ID, np.int32))

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(f) for f in frames]

    # -- boxes from the mask -----------------------------------------------------

    def _size_work(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected person (height, width) in work pixels for feet at work pixel (u, v).

        Looked up in a per-pixel table built once per video: the projection
        maths per candidate box would otherwise cost more than the rest of
        the detector together.
        """
        assert self._size_table is not None
        th, tw = self._size_table.shape[1:]
        # np.minimum/np.maximum, not np.clip: these arrays are small and np.clip's overhead dominates.
        iu = np.minimum(np.maximum(np.rint(u).astype(np.intp), 0), tw - 1)
        iv = np.minimum(np.maximum(np.rint(v).astype(np.intp), 0), th - 1)
        flat = self._size_table.reshape(2, -1)
        at = iv * tw + iu
        return flat[0].take(at), flat[1].take(at)

    def _size_at(self, u: np.ndarray, v: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Expected (height, width) in detection px (work, or rectified work) for feet at (u, v) there."""
        assert self.size is not None
        r = self.rectifier
        if r is None or not isinstance(self.size, CalibratedSize):
            ph, pw = self.size.size_px(u / scale, v / scale)
            return ph * scale, pw * scale
        work = cv2.perspectiveTransform(np.stack([u, v], 1).reshape(-1, 1, 2), r.H_inv).reshape(-1, 2)
        pts = self.size.person_points(work[:, 0] / scale, work[:, 1] / scale) * scale  # (4, n, 2) work px
        rect = cv2.perspectiveTransform(pts.reshape(-1, 1, 2), r.H).reshape(4, -1, 2)
        return np.abs(rect[0, :, 1] - rect[1, :, 1]), np.linalg.norm(rect[2] - rect[3], axis=1)

    def _build_size_table(self, work_shape: tuple[int, int], scale: float) -> None:
        """(2, h, w) table of the size prior in detection px (NaN beyond the horizon)."""
        if self.size is None:
            self._size_table = None
            return
        h, w = work_shape
        # Sizes vary smoothly over the image: project a 4 px grid, interpolate the rest.
        gh, gw = (h + 3) // 4 + 1, (w + 3) // 4 + 1
        vv, uu = np.mgrid[0:gh, 0:gw].astype(np.float64) * 4.0
        ph, pw = self._size_at(uu.ravel(), vv.ravel(), scale)
        coarse = np.stack([ph, pw]).reshape(2, gh, gw).astype(np.float32)
        fine = [cv2.resize(c, (gw * 4, gh * 4), interpolation=cv2.INTER_LINEAR)[:h, :w] for c in coarse]
        self._size_table = np.stack(fine)

    def _boxes(self, fg: _Foreground) -> tuple[np.ndarray, np.ndarray]:
        mask = fg.mask
        # Groups: components after a vertical dilation, so a person cut into
        # pieces (head / body) is fitted as one group; fitting uses the raw mask.
        # Dilation and labelling run on the foreground's bounding box (grown by the
        # kernel's reach): the same groups without the empty rest of the image.
        # The crop starts on even rows and columns so BBDT's 2x2 blocks, and with
        # them the labels' numbering, stay as on the whole image.
        bx, by, bw_, bh_ = cv2.boundingRect(mask)
        if bw_ == 0 or bh_ == 0:
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float32)
        kh, kw = _KERNEL_GROUP.shape
        cx0, cy0 = max(bx - kw // 2, 0) & ~1, max(by - kh // 2, 0) & ~1
        cx1, cy1 = min(bx + bw_ + kw // 2, mask.shape[1]), min(by + bh_ + kh // 2, mask.shape[0])
        grouped = cv2.dilate(mask[cy0:cy1, cx0:cx1], _KERNEL_GROUP)
        # Block-based labelling (BBDT): the same labels as the default, in 60 % of its time.
        n, crop_labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(grouped, 8, cv2.CV_32S, cv2.CCL_BBDT)
        labels = np.zeros(mask.shape, np.int32)
        labels[cy0:cy1, cx0:cx1] = crop_labels
        stats[:, 0] += cx0
        stats[:, 1] += cy0
        fit = compiled.native_fit_groups() if self.native is not False and self.size is not None else None
        if fit is not None:
            return self._fit_groups_native(fit, fg, labels, stats, n)
        boxes: list[np.ndarray] = []
        confs: list[float] = []
        for label, (x, y, bw, bh, _area) in enumerate(stats[1:n], start=1):
            roi = mask[y : y + bh, x : x + bw]
            fg_count = int(roi.sum())
            if fg_count < 12:
                continue
            if self.size is None:
                # No size prior: each group is one person if shaped like one.
                ys, xs = np.nonzero(roi)
                x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                aspect = (x2 - x1) / max(y2 - y1, 1)
                if 0.15 <= aspect <= 1.2:
                    fill = fg_count / float((x2 - x1) * (y2 - y1))
                    boxes.append(np.array([x + x1, y + y1, x + x2, y + y2], np.float64))
                    confs.append(min(1.0, fill / 0.6) * 0.8)
                continue
            for box, conf in self._fit_group(fg, labels, label, (x, y, bw, bh)):
                boxes.append(box)
                confs.append(conf)
        if not boxes:
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float32)
        return np.stack(boxes), np.clip(np.asarray(confs, np.float32), 0.0, 1.0)

    def _fit_groups_native(
        self, fit: Any, fg: _Foreground, labels: np.ndarray, stats: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``_fit_group`` for every group at once, in C++ (spoton/native/fit_groups.cpp)."""
        assert self._size_table is not None
        mask = np.ascontiguousarray(fg.mask, np.uint8)
        shadow = np.ascontiguousarray(fg.shadowish).view(np.uint8)
        labels = np.ascontiguousarray(labels, np.int32)
        stats = np.ascontiguousarray(stats, np.int32)
        table = np.ascontiguousarray(self._size_table, np.float32)
        vi = None if fg.valid_integral is None else np.ascontiguousarray(fg.valid_integral, np.int32)
        if fg.valid is not None and vi is None:
            vi = np.asarray(cv2.integral(np.ascontiguousarray(fg.valid).view(np.uint8)), np.int32)
        cap = self.max_people_per_blob * max(n - 1, 1)
        out_box, out_fill, out_h = np.empty((cap, 4)), np.empty(cap), np.empty(cap, np.float32)
        params = compiled.FitParams(
            self.max_hidden,
            self.min_visible,
            self.bg_weight,
            self.max_widen,
            self.min_fill,
            self.max_people_per_blob,
            int(fg.valid is not None),
        )
        ih, iw = mask.shape
        k = fit(
            mask.ctypes.data,
            shadow.ctypes.data,
            labels.ctypes.data,
            ih,
            iw,
            stats.ctypes.data,
            n,
            table.ctypes.data,
            table.shape[1],
            table.shape[2],
            None if vi is None else vi.ctypes.data,
            ctypes.byref(params),
            out_box.ctypes.data,
            out_fill.ctypes.data,
            out_h.ctypes.data,
            cap,
        )
        if k < 0:
            raise RuntimeError("native group fitting: more boxes than max_people_per_blob per group")
        if k == 0:
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float32)
        # Scored as _fit_group scores its boxes (the same NumPy scalar types, so the same bits).
        confs = [_box_score(rb, fill, h) for rb, fill, h in zip(out_box[:k], out_fill[:k], out_h[:k], strict=True)]
        return out_box[:k].copy(), np.clip(np.asarray(confs, np.float32), 0.0, 1.0)

    def _fit_group(
        self,
        fgr: _Foreground,
        labels: np.ndarray,
        label: int,
        rect: tuple[int, int, int, int],
    ) -> list[tuple[np.ndarray, float]]:
        """Calibrated person boxes explaining one foreground group.

        Candidate boxes stand at foot points on a grid over the group; a
        candidate's size comes from the size prior at its feet, so a merged
        blob of two people cannot be explained by one box. The objective is
        foreground covered minus background covered by the union of boxes. Boxes are added greedily (foreground already
        covered is neutral, so a person partly hidden behind another is found
        from what shows of them) and fitted to their foreground at once, then
        each box is re-placed with the others fixed and dropped when it adds
        too little: greedy alone can put its first box between two people and
        then need slivers on either side.

        ``spoton/native/fit_groups.cpp`` ports this and ``_refine`` line for
        line (tests compare the two bit for bit): a change here goes there too.
        """
        x, y, bw, bh = rect
        ih, iw = labels.shape
        assert self._size_table is not None
        th, tw = self._size_table.shape[1:]
        iu0, iv0 = min(max(round(x + bw / 2.0), 0), tw - 1), min(max(round(y + bh), 0), th - 1)
        h_exp, w_exp = self._size_table[0, iv0, iu0], self._size_table[1, iv0, iu0]  # at the group's feet
        if not np.isfinite(h_exp):
            return []
        # Padding so candidates may stick out of the group (and pay for it).
        pad_x = int(np.ceil(w_exp)) + 2
        pad_y = int(np.ceil(0.5 * h_exp)) + 2
        x0, y0 = max(0, x - pad_x), max(0, y - pad_y)
        x1, y1 = min(iw, x + bw + pad_x), min(ih, y + bh + 2)
        # Only this group's pixels: a neighbouring group inside the padding is
        # fitted on its own and must not be explained twice.
        fg = fgr.mask[y0:y1, x0:x1].astype(bool) & (labels[y0:y1, x0:x1] == label)
        shadowish = fgr.shadowish[y0:y1, x0:x1]
        rh, rw = fg.shape
        # Foot-point grid: every column step, every row step down to the group bottom.
        step = max(1, int(round(min(w_exp, h_exp) / 12.0)))
        us = np.arange(x, x + bw + 1, step, dtype=np.float64)
        vs = np.arange(y + max(2, int(0.25 * bh)), y + bh + 1, step, dtype=np.float64)
        if self.max_hidden > 0:
            # Feet hidden below what shows (behind a prop or a nearer person):
            # candidates may stand below the group, more coarsely.
            below = np.arange(y + bh + 2 * step, y + bh + self.max_hidden * h_exp + 1, 2 * step)
            vs = np.concatenate([vs, below.astype(np.float64)])
        gu, gv = np.tile(us, vs.size), np.repeat(vs, us.size)  # the grid, row by row
        hc, wc = self._size_work(gu, gv)
        ok = np.isfinite(hc) & (hc >= 4)
        gu, gv, hc, wc = gu[ok], gv[ok], hc[ok], wc[ok]
        if gu.size == 0:
            return []
        # Candidate boxes in ROI coordinates, clipped to the image (a person
        # cut by the image border is scored on what the camera can see); parts
        # outside the ROI hold no foreground, so they count as background.
        # All four edges at once (x1, y1, x2, y2 rows): few numpy calls, as the arrays are small.
        half = wc / 2.0
        edges = np.rint(np.stack([gu - half, gv - hc, gu + half, gv]))
        edges[3] += 1.0
        offset = np.array([[x0], [y0], [x0], [y0]], np.float64)
        limit = np.array([[iw - x0], [ih - y0], [iw - x0], [ih - y0]], np.float64)
        bx1, by1, bx2, by2 = np.minimum(np.maximum(edges - offset, -offset), limit).astype(np.int64)
        cx1, cy1, cx2, cy2 = np.minimum(np.maximum(np.stack([bx1, by1, bx2, by2]), 0), [[rw], [rh], [rw], [rh]])
        min_gain = self.min_visible * np.maximum(wc * hc, 1.0)
        # Flat indices of each box's corners in a (rh+1, rw+1) integral image.
        stride = rw + 1
        c22, c12 = cy2 * stride + cx2, cy1 * stride + cx2
        c21, c11 = cy2 * stride + cx1, cy1 * stride + cx1

        def box_sum(img: np.ndarray) -> np.ndarray:
            ii = cv2.integral(img.view(np.uint8)).ravel()
            return ii.take(c22) - ii.take(c12) - ii.take(c21) + ii.take(c11)

        # Only the part of a box above the group's bottom can show background:
        # below it the box may be hidden, and what hides it is no evidence against it.
        # Neither can what lies outside the camera's view (rectified masks).
        rectified = fgr.valid is not None
        if fgr.valid_integral is not None:  # the view's integral, built once per video
            vi = fgr.valid_integral
            gx1, gx2, gy1, gy2 = cx1 + x0, (cx2 + x0), (cy1 + y0) * vi.shape[1], (cy2 + y0) * vi.shape[1]
            flat = vi.ravel()
            area = flat.take(gy2 + gx2) - flat.take(gy1 + gx2) - flat.take(gy2 + gx1) + flat.take(gy1 + gx1)
        elif fgr.valid is not None:
            area = box_sum(fgr.valid[y0:y1, x0:x1])
        else:
            area = np.maximum(bx2 - bx1, 0) * np.maximum(np.minimum(by2, rh) - by1, 0)

        def covered(rects: list[np.ndarray], widen: float = 0.0) -> np.ndarray:
            cov = np.zeros((rh, rw), bool)
            for r in rects:
                a, b, c, d = (int(v) for v in r)
                m = int(round(widen * (c - a)))
                cov[max(b, 0) : max(d, 0), max(a - m, 0) : max(c + m, 0)] = True
            return cov

        fill_all = box_sum(fg)
        min_gain_floor = float(min_gain.min())

        def best_given(others: list[np.ndarray]) -> tuple[int, np.ndarray | None]:
            """Best candidate with ``others`` fixed and its fitted box, or (-1, None)."""
            cov = covered(others)
            if others:
                # Too little foreground left uncovered for any candidate: nothing to add (exact shortcut).
                if np.count_nonzero(fg & ~cov) < min_gain_floor:
                    return -1, None
                neutral = box_sum(fg & cov)
            else:
                neutral = np.zeros_like(fill_all)
            new_fg = fill_all - neutral
            gain = new_fg - self.bg_weight * (area - new_fg - neutral)
            best = int(np.argmax(gain))
            if gain[best] <= 0 or new_fg[best] < min_gain[best]:
                return -1, None
            cand = (bx1[best], by1[best], bx2[best], by2[best])
            return best, self._refine(fg, shadowish, cov, cand, hc[best], grow_x=False, body_width=rectified)

        chosen: list[int] = []
        rects: list[np.ndarray] = []
        for _ in range(self.max_people_per_blob):
            best, fitted = best_given(rects)
            if fitted is None:
                break
            chosen.append(best)
            rects.append(fitted)
        # Re-place each box with the others fixed; drop boxes that add too little.
        for _ in range(4 if len(chosen) > 1 else 0):  # one box alone is already placed best
            changed = False
            for i in range(len(chosen) - 1, -1, -1):
                best, fitted = best_given(rects[:i] + rects[i + 1 :])
                if fitted is None:
                    del chosen[i], rects[i]
                    changed = True
                elif best != chosen[i]:
                    chosen[i], rects[i] = best, fitted
                    changed = True
            if not changed:
                break
        # A box must show enough of a person that no neighbour could cover by
        # widening (arms, a long stride): otherwise it is a piece of that neighbour.
        for i in range(len(chosen) - 1, -1, -1) if len(chosen) > 1 else ():
            others = covered(rects[:i] + rects[i + 1 :], widen=self.max_widen)
            own = covered([rects[i]])
            if int((fg & own & ~others).sum()) < min_gain[chosen[i]]:
                del chosen[i], rects[i]
        out: list[tuple[np.ndarray, float]] = []
        for i, c in enumerate(chosen):
            fill = fill_all[c] / max(area[c], 1)
            if fill < self.min_fill:
                continue
            # Widen only now that every neighbour has its box: arms and stride
            # may take what no other box covers.
            others = covered(rects[:i] + rects[i + 1 :])
            cand = (bx1[c], by1[c], bx2[c], by2[c])
            r = self._refine(
                fg, shadowish, others, cand, hc[c], grow_x=True, max_widen=self.max_widen, body_width=rectified
            )
            rb = r + np.array([x0, y0, x0, y0], np.float64)
            out.append((rb, _box_score(rb, fill, hc[c])))
        return out

    @staticmethod
    def _refine(
        fg: np.ndarray,
        shadowish: np.ndarray,
        others: np.ndarray,
        box: tuple[int, int, int, int],
        h_exp: float,
        grow_x: bool,
        max_widen: float = 0.3,
        body_width: bool = False,
    ) -> np.ndarray:
        """Fit a calibrated box to the foreground around it, keeping hidden feet where calibration says.

        The box may shrink to its foreground (people are narrower than the
        prior side-on) or grow by up to 10 % of its height (tall people) and,
        with ``grow_x`` (once every neighbour has its box), by up to 30 % of
        its width per side (swinging arms, a long stride) into foreground no
        other box covers. The
        bottom stays at the calibrated foot row when the foreground ends well
        above it: the feet are hidden behind someone nearer, unless a shadow
        shows on the floor below the solid part (then the feet are where it
        ends, and the person is just shorter than the prior). The bottom row
        ignores shadow-coloured foreground (a soft shadow on the floor below
        the feet); with ``body_width`` the width does too (a shadow spreading
        sideways at the feet; measured to help on rectified masks only).
        """
        rh, rw = fg.shape
        x1, y1, x2, y2 = (int(v) for v in box)
        mx = int(round(max_widen * (x2 - x1))) if grow_x else 0
        my = int(round(0.1 * (y2 - y1)))
        wx1, wx2, wy1, wy2 = max(x1 - mx, 0), min(x2 + mx, rw), max(y1 - my, 0), min(y2 + my, rh)
        if wx2 <= wx1 or wy2 <= wy1:
            return np.array([x1, y1, x2, y2], np.float64)
        own = fg[wy1:wy2, wx1:wx2]
        # Foreground inside the box, and around it where no other box covers it.
        win = own & ~others[wy1:wy2, wx1:wx2]
        inside = (slice(max(y1 - wy1, 0), y2 - wy1), slice(max(x1 - wx1, 0), x2 - wx1))
        win[inside] = own[inside]
        # A column/row counts when a few percent of its length is foreground,
        # so a stray pixel of a neighbour does not widen the box.
        solid = win & ~shadowish[wy1:wy2, wx1:wx2]
        col_min, row_min = max(1, 0.04 * win.shape[0]), max(1, 0.04 * win.shape[1])
        cols = np.zeros(0, np.int64)
        if body_width:  # width from the body, not from a shadow spreading sideways at the feet
            cols = np.flatnonzero(np.count_nonzero(solid, axis=0) >= col_min)
        if cols.size == 0:
            cols = np.flatnonzero(np.count_nonzero(win, axis=0) >= col_min)
        per_row = np.count_nonzero(win, axis=1)
        rows = np.flatnonzero(per_row >= row_min)
        solid_rows = np.flatnonzero(np.count_nonzero(solid, axis=1) >= row_min)
        if cols.size == 0 or rows.size == 0:
            return np.array([x1, y1, x2, y2], np.float64)
        nx1, nx2 = wx1 + cols[0], wx1 + cols[-1] + 1
        ny1 = wy1 + rows[0]
        ny2 = wy1 + (solid_rows[-1] if solid_rows.size else rows[-1]) + 1
        # A shadow on the floor below the solid part (a band about as wide as
        # the person, not two legs in grey trousers): the feet stand there, in view.
        below = per_row[solid_rows[-1] + 1 :] if solid_rows.size else per_row[:0]
        feet_in_view = below.size > 0 and int(below.max()) >= 0.5 * (x2 - x1)
        if ny2 < y2 - 0.12 * h_exp and not feet_in_view:
            ny2 = y2
        return np.array([nx1, ny1, nx2, ny2], np.float64)


_KERNEL_3 = np.ones((3, 3), np.uint8)
_KERNEL_TALL = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 7))
_KERNEL_GROUP = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 9))
_KERNEL_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))


# -------------------------------------------------------------- torchvision


class TorchvisionDetector:
    """A torchvision detection model (COCO label space) from a local state dict; person class only."""

    def __init__(
        self,
        model: str = TORCHVISION_DEFAULT_MODEL,
        weights: str | Path = TORCHVISION_DEFAULT_WEIGHTS,
        *,
        weights_dir: Path | str | None = None,
        device: str = "auto",
        score_threshold: float = 0.5,
        half: bool = False,
        batch_size: int = 8,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> None:
        import torch
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models.detection)
        if model not in available:
            raise ValueError(f"unknown torchvision detection model {model!r}; choose one of {sorted(available)}")
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        path = weight_file(weights, weights_dir, what=f"torchvision {model}", source=TORCHVISION_WEIGHTS_SOURCE)
        self.device = resolve_device(device)
        kwargs: dict[str, Any] = {
            "weights": None,
            "weights_backbone": None,
            "box_score_thresh": score_threshold,
        }
        if "ssd" in model:  # SSD builders take no box_score_thresh; they filter with score_thresh
            kwargs = {"weights": None, "weights_backbone": None, "score_thresh": score_threshold}
        if min_size is not None:
            kwargs["min_size"] = int(min_size)
        if max_size is not None:
            kwargs["max_size"] = int(max_size)
        net = torchvision.models.get_model(model, **kwargs)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # training checkpoints wrap the state dict
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path} is not a state dict of torchvision {model}: {str(e)[:300]}") from None
        self.half = bool(half) and self.device.startswith("cuda")
        self.model = net.eval().to(self.device)
        self.score_threshold = float(score_threshold)
        self.batch_size = int(batch_size)

    def detect(self, frame: np.ndarray) -> Detections:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        frames = [_check_frame(f) for f in frames]
        out: list[Detections] = []
        for i in range(0, len(frames), self.batch_size):
            chunk = frames[i : i + self.batch_size]
            with torch.inference_mode(), torch.autocast("cuda", enabled=self.half):
                # BGR uint8 HWC -> RGB float CHW in [0, 1] on the device (one copy per frame).
                tensors = [
                    torch.from_numpy(np.ascontiguousarray(f[..., ::-1])).to(self.device).permute(2, 0, 1).float()
                    / 255.0
                    for f in chunk
                ]
                results = self.model(tensors)
            for r in results:
                labels = r["labels"].cpu().numpy()
                scores = r["scores"].float().cpu().numpy()
                keep = (labels == PERSON_CLASS_ID) & (scores >= self.score_threshold)
                boxes = r["boxes"].float().cpu().numpy()[keep]
                out.append(Detections(boxes, scores[keep], np.full(int(keep.sum()), PERSON_CLASS_ID, np.int32)))
        return out


# ---------------------------------------------------------------------- mot


class MotDetector:
    """Detections read from a MOTChallenge file (``frame, id, x, y, w, h, conf, class, vis``).

    Frames in the file are ``frame_base``-based (1 in MOTChallenge) and count
    over the whole camera; ``prepare(..., frame_offset)`` aligns a sub-video's
    first frame. ``path`` may hold ``{camera_id}``. Ground-truth files work
    too: their ``conf`` column is the 0/1 "consider" flag and rows of other
    classes than ``classes`` are dropped (det.txt rows have class -1 and stay).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        camera_id: str | None = None,
        frame_base: int = 1,
        frame_offset: int = 0,
        min_confidence: float = 1e-6,
        classes: Sequence[int] = (1,),
    ) -> None:
        text = str(path)
        if "{camera_id}" in text:
            if camera_id is None:
                raise ValueError(f"path {text!r} names {{camera_id}} but no camera geometry was given")
            text = text.replace("{camera_id}", camera_id)
        file = Path(text)
        if not file.is_file():
            raise FileNotFoundError(f"MOTChallenge detection file not found: {file}")
        if frame_offset < 0:
            raise ValueError(f"frame_offset must be >= 0, got {frame_offset}")
        rows = np.loadtxt(file, delimiter=",", ndmin=2, dtype=np.float64) if file.stat().st_size else np.zeros((0, 7))
        if rows.shape[0] and rows.shape[1] < 7:
            raise ValueError(f"{file}: MOTChallenge rows need >= 7 columns, got {rows.shape[1]}")
        keep = rows[:, 6] >= min_confidence if rows.shape[0] else np.zeros(0, bool)
        if rows.shape[1] >= 8:
            cls = rows[:, 7]
            keep &= (cls < 0) | np.isin(cls, np.asarray(classes, np.float64))
        rows = rows[keep]
        self.path = file
        self.frame_base = int(frame_base)
        self._frames = rows[:, 0].astype(np.int64) - self.frame_base
        order = np.argsort(self._frames, kind="stable")
        self._frames = self._frames[order]
        rows = rows[order]
        self._xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1).astype(np.float32)
        # Some detectors write scores above 1 (logits, percentages); trackers need [0, 1].
        self._conf = np.clip(rows[:, 6], 0.0, 1.0).astype(np.float32)
        self._cursor = int(frame_offset)

    def prepare(
        self,
        video_path: Path | str | None = None,  # noqa: ARG002
        frame_offset: int = 0,
        context: Sequence[Path | str] = (),  # noqa: ARG002
    ) -> None:
        if frame_offset < 0:
            raise ValueError(f"frame_offset must be >= 0, got {frame_offset}")
        self._cursor = int(frame_offset)

    def at(self, frame_idx: int) -> Detections:
        """Detections of camera frame ``frame_idx`` (0-based)."""
        lo, hi = np.searchsorted(self._frames, [frame_idx, frame_idx + 1])
        return Detections(self._xyxy[lo:hi], self._conf[lo:hi], np.full(hi - lo, PERSON_CLASS_ID, np.int32))

    def detect(self, frame: np.ndarray) -> Detections:  # noqa: ARG002
        dets = self.at(self._cursor)
        self._cursor += 1
        return dets

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(f) for f in frames]


DETECTORS = ("bgsub", "torchvision", "mot")


def make_detector(
    name: str,
    *,
    geometry: CameraGeometry | None = None,
    plane: GroundPlane | None = None,  # noqa: ARG001
    weights_dir: Path | str | None = None,
    device: str = "auto",
    **options: Any,
) -> Detector:
    """Detector by name; ``options`` go to its constructor (see the classes above).

    ``geometry`` is the camera's calibration (bgsub uses K/R/t for person
    sizes; mot fills ``{camera_id}`` from it).
    """
    key = name.strip().lower()
    if key == "bgsub":
        check_options(BgSubDetector, options, "detector 'bgsub'")
        return BgSubDetector(geometry, **options)
    if key == "torchvision":
        check_options(TorchvisionDetector, options, "detector 'torchvision'")
        return TorchvisionDetector(weights_dir=weights_dir, device=device, **options)
    if key == "mot":
        check_options(MotDetector, options, "detector 'mot'")
        if "path" not in options:
            raise ValueError("detector 'mot' needs option path (a det.txt / gt.txt, may contain {camera_id})")
        options.setdefault("camera_id", geometry.camera_id if geometry is not None else None)
        return MotDetector(**options)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
