"""Cross-camera re-identification: per-camera tracklets -> global identities.

One chunk is solved in three passes, each a pure function of its inputs:

1. Co-visible association. Tracklets of overlapping cameras that are seen at the
   same time are compared on the ground plane: the median over common frames of
   the foot-point distance, normalised by each observation's expected projection
   error (which grows with distance to the camera). Constrained average-linkage
   agglomerative clustering merges the cheapest pairs first; then a tracklet
   left alone takes the place of the one same-camera member that shut it out
   of a cluster when it agrees with the rest over far more frames (a long
   view whose last seconds were swapped onto someone else keeps its person),
   and two clusters that agree closely but for one camera's short duplicate
   track (or a view whose feet were off for a while) merge without it.
2. Temporal linking. The clusters of pass 1 (multi-view tracklets) are chained in
   time when the end of one continues into the start of another (tracker id
   switches, re-entries, hand-overs between non-overlapping cameras), and across
   long gaps by appearance alone.
3. Gallery. The chunk's identities are matched (Hungarian) to the identities of
   previous chunks by continuity on the floor at the border, appearance, and
   box handoff: a camera's track that starts where an identity's box in that
   camera ended just before the border (the border cut it) votes for it.
   Identities are claimed in tiers: clusters several cameras confirm, then
   long single views, then fragments. A cluster begun by three or more
   tracklets is judged by the median of their own continuity costs (one of
   them may start on someone else). A new cluster seen briefly by one camera
   where other cameras look too is no person (a split box, a shadow) and
   gets no identity, nor does a view pass 1 left out of its person's cluster.

Hard constraints, enforced at every merge: two tracklets of one camera that
overlap in time are never one identity, and one identity is never in two places
at once (co-visible tracklets that are far apart, or simultaneous tracklets of
cameras that share no floor, never merge). Candidate pairs are pruned by time
and space (sorting, a k-d tree over (x, y, frame)), so the work grows with the
number of tracklets times the local crowd size, not with its square.
"""

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from spoton.config import Environment
from spoton.geometry import CameraGeometry, box_iou, foot_points, overlap_matrix
from spoton.types import Tracklet, l2_normalise


class AssociationConfig(BaseModel):
    """Association thresholds (``RunConfig.association`` overrides them by name).

    Defaults were fitted with bench/identities.py on tracklets derived from the
    ground truth of the synthetic demo and hard scenes (boxes with pixel noise,
    random id switches, colour embeddings from the rendered videos) and checked
    on MultiviewX, calibration only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Projection error model of one foot point, per axis, in metres.
    sigma_floor_m: float = Field(default=0.15, gt=0, description="calibration / annotation error floor")
    foot_px_fraction: float = Field(
        default=0.03, ge=0, description="foot-point pixel error as a fraction of the box height"
    )
    sigma_max_m: float = Field(default=1.5, gt=0, description="cap on one observation's error")
    truncated_sigma_factor: float = Field(
        default=3.0, ge=1, description="error inflation of boxes cut by the image border"
    )
    border_margin_px: float = Field(default=2.0, ge=0, description="a box this close to the border is cut")

    # Co-visible pairs (pass 1).
    min_common_frames: int = Field(default=3, ge=1, description="frames two tracklets must share to compare")
    gate_z: float = Field(default=4.0, gt=0, description="median normalised distance that costs 1")
    cannot_link_z: float = Field(default=6.0, gt=0, description="median normalised distance that rules a pair out")
    max_match_distance_m: float = Field(default=3.0, gt=0, description="farther apart is never one person")
    min_camera_overlap: float = Field(
        default=0.0, ge=0, lt=1, description="cameras sharing at most this floor fraction never co-see"
    )
    overlap_cell_m: float = Field(default=0.5, gt=0, description="grid cell of the camera-overlap estimate")
    merge_max_cost: float = Field(default=1.0, gt=0, description="pass-1 clusters merge below this cost")
    reunite_max_cost: float = Field(
        default=0.6,
        ge=0,
        description="clusters this close merge after leaving out the short tracklets that conflict (0: never)",
    )
    reunite_max_share: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="a conflicting tracklet is left out only when at most this share of its rival's frames",
    )
    reunite_max_loss: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="... and all that is left out is at most this share of the two clusters' frames",
    )

    # Appearance (used when embeddings exist).
    appearance_weight: float = Field(default=1.0, ge=0, description="weight of appearance vs space cost")
    appearance_gate: float = Field(default=0.8, gt=0, le=2, description="cosine distance that costs 1")
    reentry_appearance_gate: float = Field(
        default=0.25, gt=0, le=2, description="cosine distance that costs 1 with no spatial evidence"
    )
    reentry_neighbours: int = Field(default=5, ge=0, description="appearance neighbours tried across long gaps")

    # Temporal linking (passes 2 and 3).
    max_speed_mps: float = Field(default=3.0, gt=0, description="faster than this is impossible")
    max_gap_s: float = Field(default=5.0, ge=0, description="longest gap bridged by motion continuity")
    link_tolerance_m: float = Field(default=1.0, gt=0, description="continuity error that costs 1 at gap 0")
    velocity_tolerance_mps: float = Field(
        default=1.0, gt=0, description="velocity change that costs 1 across a zero gap"
    )
    max_acceleration_mps2: float = Field(default=1.0, ge=0, description="velocity change tolerated per second of gap")
    motion_tolerance_mps: float = Field(default=0.7, ge=0, description="continuity tolerance growth per second")
    state_window_s: float = Field(default=1.0, gt=0, description="window of the start/end position fit")
    extrapolation_s: float = Field(default=1.0, ge=0, description="longest constant-velocity extrapolation")
    link_max_cost: float = Field(default=1.0, gt=0, description="temporal links and gallery matches below this")
    gallery_momentum: float = Field(default=0.8, ge=0, lt=1, description="EMA weight of the old embedding")

    # Unconfirmed fragments: no identity.
    min_identity_s: float = Field(
        default=4.0,
        ge=0,
        description="a new single-camera cluster seen for less than this where other cameras look too is noise",
    )

    # Chunk borders (pass 3): a camera's track cut by the sub-video boundary continues its own box.
    handoff_gap_s: float = Field(
        default=0.5,
        ge=0,
        description="longest gap between an identity's last box and a new track's first (0: no handoff)",
    )
    handoff_min_iou: float = Field(
        default=0.3, ge=0, le=1, description="box overlap (same camera) that continues an identity"
    )
    handoff_weight: float = Field(
        default=0.5,
        ge=0,
        description="gallery cost removed when all of a cluster's border tracks continue the id",
    )


# ------------------------------------------------------------------ results


_GALLERY_FIELDS = (
    "global_id",
    "embedding",
    "last_xy",
    "last_velocity",
    "last_frame",
    "last_cameras",
)
_TAIL_FIELDS = ("tail_global_id", "tail_camera", "tail_frame", "tail_xyxy")


@dataclass(frozen=True)
class IdentityGallery:
    """What later chunks need to know about every identity seen so far.

    Per identity: EMA appearance (zeros when never embedded), last fused position
    and velocity (NaN when unknown), last frame and the cameras that
    saw it last (comma-joined). ``next_id`` is the next free global id.
    """

    global_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    last_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    last_velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    last_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_cameras: np.ndarray = field(default_factory=lambda: np.zeros(0, np.str_))
    next_id: int = 1
    # Per (identity, camera): the last box that camera saw of it (chunk-border handoff).
    tail_global_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail_camera: np.ndarray = field(default_factory=lambda: np.zeros(0, np.str_))
    tail_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    def __post_init__(self) -> None:
        gid = np.asarray(self.global_id, np.int64).reshape(-1)
        n = gid.shape[0]
        emb = np.asarray(self.embedding, np.float32)
        emb = emb.reshape(n, -1) if emb.size else np.zeros((n, 0), np.float32)
        if emb.shape[0] != n:
            raise ValueError(f"gallery embedding must have {n} rows, got {emb.shape}")
        object.__setattr__(self, "global_id", gid)
        object.__setattr__(self, "embedding", emb)
        for name in ("last_xy", "last_velocity"):
            arr = np.asarray(getattr(self, name), np.float32).reshape(-1, 2) if n else np.zeros((0, 2), np.float32)
            if arr.shape[0] != n:
                raise ValueError(f"gallery {name} must have {n} rows, got {arr.shape[0]}")
            object.__setattr__(self, name, arr)
        frames = np.asarray(self.last_frame, np.int64).reshape(-1)
        cams = np.asarray(self.last_cameras, np.str_).reshape(-1)
        if frames.shape[0] != n or cams.shape[0] != n:
            raise ValueError(f"gallery last_frame / last_cameras must have {n} entries")
        object.__setattr__(self, "last_frame", frames)
        object.__setattr__(self, "last_cameras", cams)
        tg = np.asarray(self.tail_global_id, np.int64).reshape(-1)
        k = tg.shape[0]
        tc = np.asarray(self.tail_camera, np.str_).reshape(-1)
        tf = np.asarray(self.tail_frame, np.int64).reshape(-1)
        tb = np.asarray(self.tail_xyxy, np.float32).reshape(-1, 4) if k else np.zeros((0, 4), np.float32)
        if tc.shape[0] != k or tf.shape[0] != k or tb.shape[0] != k:
            raise ValueError(f"gallery tail_* arrays must all have {k} entries")
        if k and not np.isin(tg, gid).all():
            raise ValueError("gallery tail_global_id names identities the gallery does not hold")
        object.__setattr__(self, "tail_global_id", tg)
        object.__setattr__(self, "tail_camera", tc)
        object.__setattr__(self, "tail_frame", tf)
        object.__setattr__(self, "tail_xyxy", tb)
        if n and np.unique(gid).shape[0] != n:
            raise ValueError(f"gallery global ids must be unique, got {gid.tolist()}")
        if n and int(gid.min()) < 1:
            raise ValueError(f"global ids must be >= 1, got {int(gid.min())}")
        floor = int(gid.max()) + 1 if n else 1
        if int(self.next_id) < floor:
            raise ValueError(f"gallery next_id must be >= {floor}, got {self.next_id}")
        object.__setattr__(self, "next_id", int(self.next_id))

    def __len__(self) -> int:
        return int(self.global_id.shape[0])

    @property
    def has_embedding(self) -> np.ndarray:
        return np.linalg.norm(self.embedding, axis=1) > 0 if self.embedding.shape[1] else np.zeros(len(self), bool)

    def to_npz(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` / ``RunStore.write_npz`` (no pickled objects)."""
        out = {name: getattr(self, name) for name in (*_GALLERY_FIELDS, *_TAIL_FIELDS)}
        out["next_id"] = np.asarray(self.next_id, np.int64)
        return out

    @classmethod
    def from_npz(cls, arrays: Mapping[str, np.ndarray]) -> "IdentityGallery":
        missing = [k for k in (*_GALLERY_FIELDS, "next_id") if k not in arrays]
        if missing:
            raise ValueError(f"gallery arrays lack {missing}")
        # Galleries written before the tail fields existed simply have no handoff boxes.
        tails = {k: np.asarray(arrays[k]) for k in _TAIL_FIELDS if k in arrays}
        return cls(**{k: np.asarray(arrays[k]) for k in _GALLERY_FIELDS}, **tails, next_id=int(arrays["next_id"]))


@dataclass(frozen=True)
class AssociationResult:
    global_ids: dict[tuple[str, int], int]
    gallery: IdentityGallery
    stats: dict


# ---------------------------------------------------------- observations


@dataclass(frozen=True)
class _Table:
    """Tracklets as arrays; observations sorted by (tracklet, frame)."""

    keys: list[tuple[str, int]]
    cameras: list[str]
    camera: np.ndarray  # (n,) index into cameras
    first: np.ndarray
    last: np.ndarray
    length: np.ndarray
    embedding: np.ndarray  # (n, D) zeros where unknown
    has_embedding: np.ndarray
    obs_start: np.ndarray  # (n,) offset of each tracklet's first observation
    obs_tracklet: np.ndarray
    obs_frame: np.ndarray
    obs_xy: np.ndarray  # (M, 2) float64, NaN off-plane
    obs_sigma: np.ndarray  # (M,) metres

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.obs_xy).all(axis=1)


def _ground_gain(H: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Metres per pixel of a homography at image points (RMS over both axes of its Jacobian)."""
    hom = np.concatenate([px, np.ones((px.shape[0], 1))], axis=1) @ H.T
    w = hom[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = hom[:, 0] / w, hom[:, 1] / w
        jxu, jxv = (H[0, 0] - x * H[2, 0]) / w, (H[0, 1] - x * H[2, 1]) / w
        jyu, jyv = (H[1, 0] - y * H[2, 0]) / w, (H[1, 1] - y * H[2, 1]) / w
        return np.sqrt((jxu**2 + jxv**2 + jyu**2 + jyv**2) / 2.0)


def _foot_sigma(
    xyxy: np.ndarray,
    geometry: CameraGeometry | None,
    image_size: tuple[float, float] | None,
    config: AssociationConfig,
) -> np.ndarray:
    """Expected per-axis error (m) of each box's projected foot point.

    A foot point is off by a fraction of the box height in pixels; the homography's
    local gain turns that into metres, so far-away people (small boxes, steep gain)
    get larger tolerances without needing R and t. Boxes cut by the image border
    have no visible feet at all, hence the inflation.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if xyxy.shape[0] == 0:
        return np.zeros(0, np.float64)
    if geometry is None:
        return np.full(xyxy.shape[0], config.sigma_max_m)
    px_err = config.foot_px_fraction * np.clip(xyxy[:, 3] - xyxy[:, 1], 0.0, None)
    gain = _ground_gain(np.asarray(geometry.H, np.float64), foot_points(xyxy))
    sigma = np.sqrt(config.sigma_floor_m**2 + (px_err * gain) ** 2)
    if image_size is not None:
        w, h = image_size
        m = config.border_margin_px
        cut = (xyxy[:, 0] <= m) | (xyxy[:, 2] >= w - m) | (xyxy[:, 3] >= h - m)
        sigma = np.where(cut, sigma * config.truncated_sigma_factor, sigma)
    return np.where(np.isfinite(sigma), np.minimum(sigma, config.sigma_max_m), config.sigma_max_m)


def _image_size(geometry: CameraGeometry | None, boxes: np.ndarray) -> tuple[float, float] | None:
    """Known image size, else the extent of the boxes seen (detectors clip boxes to the image)."""
    if geometry is not None and geometry.image_size is not None:
        return (float(geometry.image_size[0]), float(geometry.image_size[1]))
    if boxes.shape[0] == 0:
        return None
    return (float(np.ceil(boxes[:, 2].max())), float(np.ceil(boxes[:, 3].max())))


def _build_table(tracklets: Sequence[Tracklet], env: Environment, config: AssociationConfig) -> _Table:
    seen: set[tuple[str, int]] = set()
    dims = set()
    for t in tracklets:
        if t.key in seen:
            raise ValueError(f"duplicate tracklet {t.key}")
        seen.add(t.key)
        if len(t) == 0:
            raise ValueError(f"tracklet {t.key} has no frames")
        if t.embedding is not None:
            dims.add(t.embedding.shape[0])
    if len(dims) > 1:
        raise ValueError(f"tracklet embeddings must share one dimension, got {sorted(dims)}")
    # Sorting by key makes the result independent of the caller's order.
    ordered = sorted(tracklets, key=lambda t: t.key)
    keys = [t.key for t in ordered]
    cameras = sorted({k[0] for k in keys})
    cam_index = {c: i for i, c in enumerate(cameras)}
    length = np.array([len(t) for t in ordered], np.int64)
    dim = dims.pop() if dims else 0
    emb = np.zeros((len(ordered), dim), np.float32)
    has = np.zeros(len(ordered), bool)
    for i, t in enumerate(ordered):
        if t.embedding is not None and dim and np.linalg.norm(t.embedding) > 0:
            emb[i] = t.embedding
            has[i] = True
    emb = l2_normalise(emb) if dim else emb
    camera = np.array([cam_index[k[0]] for k in keys], np.int64)
    obs_tracklet = np.repeat(np.arange(len(ordered)), length)
    obs_frame = np.concatenate([t.frame_idx for t in ordered]) if ordered else np.zeros(0, np.int64)
    boxes = np.concatenate([t.xyxy for t in ordered]).astype(np.float64) if ordered else np.zeros((0, 4))
    obs_xy = np.concatenate([t.map_xy for t in ordered]).astype(np.float64) if ordered else np.zeros((0, 2))
    sigma = np.zeros(obs_frame.shape[0], np.float64)
    obs_cam = camera[obs_tracklet]
    for ci, cam in enumerate(cameras):
        rows = obs_cam == ci
        geo = env.calibration.get(cam)
        sigma[rows] = _foot_sigma(boxes[rows], geo, _image_size(geo, boxes[rows]), config)
    starts = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    return _Table(
        keys=keys,
        cameras=cameras,
        camera=camera,
        first=np.array([t.first_frame for t in ordered], np.int64),
        last=np.array([t.last_frame for t in ordered], np.int64),
        length=length,
        embedding=emb,
        has_embedding=has,
        obs_start=starts,
        obs_tracklet=obs_tracklet,
        obs_frame=obs_frame,
        obs_xy=obs_xy,
        obs_sigma=sigma,
    )


def camera_overlap(
    env: Environment, cameras: Sequence[str], boxes: Mapping[str, np.ndarray], cell_m: float
) -> np.ndarray:
    """Floor overlap of the cameras (C, C) from their geometry.

    Image sizes missing from the calibration are taken from the boxes observed in
    that camera. A camera whose geometry sees no floor at all (or has no
    calibration) overlaps everything: unknown must not prune anything.
    """
    geos: list[CameraGeometry] = []
    known: list[int] = []
    for i, cam in enumerate(cameras):
        geo = env.calibration.get(cam)
        size = _image_size(geo, np.asarray(boxes.get(cam, np.zeros((0, 4))), np.float64).reshape(-1, 4))
        if geo is None or size is None:
            continue
        geos.append(replace(geo, image_size=(int(size[0]), int(size[1]))))
        known.append(i)
    out = np.ones((len(cameras), len(cameras)))
    if geos:
        sub = overlap_matrix(geos, env.plane, cell_m)
        blind = np.diag(sub) <= 0
        sub[blind, :] = 1.0
        sub[:, blind] = 1.0
        out[np.ix_(known, known)] = sub
    return out


# -------------------------------------------------------------- pass 1 costs


@dataclass(frozen=True)
class _Covisible:
    a: np.ndarray  # tracklet index pairs, a < b
    b: np.ndarray
    n_common: np.ndarray
    median_z: np.ndarray


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of ranges [start, start + count) and the range each came from."""
    owner = np.repeat(np.arange(counts.shape[0]), counts)
    offsets = np.arange(owner.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[owner] + offsets, owner


def _covisible_pairs(tab: _Table, cameras_overlap: np.ndarray, config: AssociationConfig) -> _Covisible:
    """Median normalised ground distance over common frames of every pair that is ever close."""
    empty = _Covisible(*(np.zeros(0, np.int64),) * 3, np.zeros(0))
    idx = np.flatnonzero(tab.finite)
    if idx.shape[0] < 2:
        return empty
    r = config.max_match_distance_m
    # Frames are spread further apart than r, so only same-frame neighbours are found.
    pts = np.column_stack([tab.obs_xy[idx], tab.obs_frame[idx] * (3.0 * r + 1.0)])
    found = cKDTree(pts).query_pairs(r, output_type="ndarray")
    if found.shape[0] == 0:
        return empty
    ti, tj = tab.obs_tracklet[idx[found[:, 0]]], tab.obs_tracklet[idx[found[:, 1]]]
    ci, cj = tab.camera[ti], tab.camera[tj]
    keep = (ci != cj) & (cameras_overlap[ci, cj] > config.min_camera_overlap)
    n = np.int64(tab.n)
    code = np.unique(np.minimum(ti, tj)[keep] * n + np.maximum(ti, tj)[keep])
    if code.shape[0] == 0:
        return empty
    pa, pb = code // n, code % n
    # Walk the shorter tracklet's frames and look each up in the other one.
    short = np.where(tab.length[pa] <= tab.length[pb], pa, pb)
    other = np.where(short == pa, pb, pa)
    pos, pair = _expand(tab.obs_start[short], tab.length[short])
    fmin = int(tab.obs_frame.min())
    span = np.int64(int(tab.obs_frame.max()) - fmin + 1)
    obs_key = tab.obs_tracklet * span + (tab.obs_frame - fmin)
    query = other[pair] * span + (tab.obs_frame[pos] - fmin)
    loc = np.minimum(np.searchsorted(obs_key, query), obs_key.shape[0] - 1)
    hit = (obs_key[loc] == query) & tab.finite[pos] & tab.finite[loc]
    pos, loc, pair = pos[hit], loc[hit], pair[hit]
    dist = np.linalg.norm(tab.obs_xy[pos] - tab.obs_xy[loc], axis=1)
    z = dist / np.sqrt(tab.obs_sigma[pos] ** 2 + tab.obs_sigma[loc] ** 2)
    count = np.bincount(pair, minlength=code.shape[0])
    # One sort by (pair, z): pair in the integer part, z squashed into [0, 0.5) below
    # it (two-key sorts are several times slower on millions of frame pairs).
    zs = z[np.argsort(pair + 0.5 * z / (1.0 + z))]
    start = np.cumsum(count) - count
    has = count > 0
    med = np.full(code.shape[0], np.inf)
    lo = start[has] + (count[has] - 1) // 2
    hi = start[has] + count[has] // 2
    med[has] = 0.5 * (zs[lo] + zs[hi])
    return _Covisible(pa, pb, count, med)


def _appearance_distance(emb: np.ndarray, has: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance of pairs; NaN where either side has no embedding."""
    if emb.shape[1] == 0 or a.shape[0] == 0:
        return np.full(a.shape[0], np.nan)
    d = 1.0 - np.einsum("ij,ij->i", emb[a].astype(np.float64), emb[b].astype(np.float64))
    return np.where(has[a] & has[b], d, np.nan)


def _blend(primary: np.ndarray, appearance_cost: np.ndarray, weight: float) -> np.ndarray:
    """Weighted mean of a cost and an appearance cost; the cost alone without appearance."""
    ok = np.isfinite(appearance_cost)
    mixed = (primary + weight * np.where(ok, appearance_cost, 0.0)) / (1.0 + weight)
    return np.where(ok, mixed, primary)


# ---------------------------------------------------------- constraints


def _at_once(tab: _Table, ma: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """(len(ma), len(mb)): which tracklet pairs share some frame span."""
    return (tab.first[ma][:, None] <= tab.last[mb][None, :]) & (tab.first[mb][None, :] <= tab.last[ma][:, None])


class _Constraints:
    """Member-level hard constraints, checked whenever two clusters would merge."""

    def __init__(self, tab: _Table, cameras_overlap: np.ndarray, cov: _Covisible, config: AssociationConfig):
        self.tab = tab
        self.overlap_ok = cameras_overlap > config.min_camera_overlap
        self.min_common = config.min_common_frames
        n = np.int64(max(tab.n, 1))
        self.n = n
        self.evaluated = set((cov.a * n + cov.b).tolist())
        far = cov.median_z > config.cannot_link_z
        self.far = set((cov.a[far] * n + cov.b[far]).tolist())
        self._memo: dict[int, bool] = {}

    def _never_close(self, a: int, b: int) -> bool:
        """Co-existing tracklets never close: incompatible when they share enough frames."""
        code = min(a, b) * int(self.n) + max(a, b)
        if code in self.evaluated:
            return code in self.far
        if code not in self._memo:
            tab = self.tab
            sa = slice(tab.obs_start[a], tab.obs_start[a] + tab.length[a])
            sb = slice(tab.obs_start[b], tab.obs_start[b] + tab.length[b])
            fa, fb = tab.obs_frame[sa], tab.obs_frame[sb]
            if self.overlap_ok[tab.camera[a], tab.camera[b]]:
                # Overlapping views: only frames both put on the floor say "far apart".
                fa, fb = fa[tab.finite[sa]], fb[tab.finite[sb]]
            need = max(1, min(self.min_common, fa.shape[0], fb.shape[0]))
            self._memo[code] = np.intersect1d(fa, fb, assume_unique=True).shape[0] >= need
        return self._memo[code]

    def compatible(self, ma: np.ndarray, mb: np.ndarray) -> bool:
        tab = self.tab
        co = _at_once(tab, ma, mb)
        same = tab.camera[ma][:, None] == tab.camera[mb][None, :]
        if (co & same).any():
            return False
        ia, ib = np.nonzero(co)
        return not any(self._never_close(int(ma[i]), int(mb[j])) for i, j in zip(ia, ib, strict=True))


# ------------------------------------------------------------- clustering


def _agglomerate(
    n: int,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cannot: tuple[np.ndarray, np.ndarray],
    max_cost: float,
    can_merge: Callable[[list[int], list[int]], bool],
) -> np.ndarray:
    """Average-linkage agglomerative clustering on a sparse graph; returns a label per node.

    Edges are (a, b, cost, weight); the cluster-pair cost is the weighted mean
    over the scored member pairs (unscored pairs are no evidence either way).
    Pairs are merged cheapest first while the cost is below ``max_cost``, the
    clusters are not cannot-linked and ``can_merge`` accepts the union. A
    refused pair becomes a cannot-link, which merged clusters inherit.
    """
    members: list[list[int]] = [[i] for i in range(n)]
    nbr: list[dict[int, list[float]]] = [{} for _ in range(n)]
    forbid: list[set[int]] = [set() for _ in range(n)]
    version = [0] * n
    for a, b in zip(cannot[0].tolist(), cannot[1].tolist(), strict=True):
        if a != b:
            forbid[a].add(b)
            forbid[b].add(a)
    heap: list[tuple[float, int, int, int, int]] = []
    for a, b, c, w in zip(*(e.tolist() for e in edges), strict=True):
        if a == b or b in forbid[a] or not np.isfinite(c):
            continue
        acc = nbr[a].get(b)
        if acc is None:
            acc = [0.0, 0.0]
            nbr[a][b] = acc
            nbr[b][a] = acc
        acc[0] += w * c
        acc[1] += w
    for a in range(n):
        for b, (s, k) in nbr[a].items():
            if a < b and s / k <= max_cost:
                heap.append((s / k, a, b, 0, 0))
    heapq.heapify(heap)
    while heap:
        cost, a, b, va, vb = heapq.heappop(heap)
        if cost > max_cost:
            break
        if version[a] != va or version[b] != vb or b not in nbr[a]:
            continue
        if not can_merge(members[a], members[b]):
            del nbr[a][b], nbr[b][a]
            forbid[a].add(b)
            forbid[b].add(a)
            continue
        keep, gone = (a, b) if (len(members[a]), -a) >= (len(members[b]), -b) else (b, a)
        members[keep] += members[gone]
        members[gone] = []
        del nbr[keep][gone]
        for x, acc in nbr[gone].items():
            if x == keep:
                continue
            del nbr[x][gone]
            if x in forbid[keep]:
                continue
            mine = nbr[keep].get(x)
            if mine is None:
                nbr[keep][x] = acc
                nbr[x][keep] = acc
            else:
                mine[0] += acc[0]
                mine[1] += acc[1]
        nbr[gone] = {}
        for x in forbid[gone]:
            forbid[x].discard(gone)
            forbid[x].add(keep)
            forbid[keep].add(x)
            if x in nbr[keep]:
                del nbr[keep][x], nbr[x][keep]
        forbid[gone] = set()
        version[keep] += 1
        for x, (s, k) in nbr[keep].items():
            if s / k <= max_cost:
                lo, hi = min(keep, x), max(keep, x)
                heapq.heappush(heap, (s / k, lo, hi, version[lo], version[hi]))
    labels = np.empty(n, np.int64)
    for root, group in enumerate(members):
        labels[group] = root
    return labels


def _groups(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Member indices of each label 0..k-1, ascending."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=k))[:-1]) if k else []


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Dense labels 0..K-1 in order of each cluster's smallest member."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first, kind="stable")
    remap = np.empty(labels.max() + 1 if labels.size else 0, np.int64)
    remap[labels[first[order]]] = np.arange(order.shape[0])
    return remap[labels] if labels.size else labels


# ------------------------------------------------------- trajectories, states


def _robust_fuse(
    group: np.ndarray,
    frame: np.ndarray,
    camera: np.ndarray,
    xy: np.ndarray,
    sigma: np.ndarray,
    gate_z: float,
) -> pd.DataFrame:
    """Per (group, frame): inverse-variance mean of the finite observations.

    With three or more observations, those farther than ``gate_z`` sigmas from
    the per-frame median are dropped first (one camera's wrong foot point must
    not drag the fused position).
    """
    ok = np.isfinite(xy).all(axis=1)
    df = pd.DataFrame(
        {
            "g": group[ok],
            "f": frame[ok],
            "cam": camera[ok],
            "x": xy[ok, 0],
            "y": xy[ok, 1],
            "s": sigma[ok],
        }
    )
    if df.empty:
        return pd.DataFrame({"g": [], "f": [], "x": [], "y": [], "n": []}).astype(
            {"g": np.int64, "f": np.int64, "n": np.int64}
        )
    grouped = df.groupby(["g", "f"], sort=False)
    size = grouped["x"].transform("size").to_numpy()
    mx = grouped["x"].transform("median").to_numpy()
    my = grouped["y"].transform("median").to_numpy()
    resid = np.hypot(df["x"].to_numpy() - mx, df["y"].to_numpy() - my)
    kept = df[(size < 3) | (resid <= gate_z * df["s"].to_numpy())].copy()
    w = 1.0 / kept["s"].to_numpy() ** 2
    kept["w"], kept["wx"], kept["wy"] = w, w * kept["x"].to_numpy(), w * kept["y"].to_numpy()
    agg = kept.groupby(["g", "f"], sort=True).agg(
        w=("w", "sum"), wx=("wx", "sum"), wy=("wy", "sum"), n=("cam", "nunique")
    )
    out = agg.reset_index()
    out["x"] = out["wx"] / out["w"]
    out["y"] = out["wy"] / out["w"]
    return out[["g", "f", "x", "y", "n"]]


@dataclass(frozen=True)
class _States:
    """Start and end of each group's fused trajectory (NaN where never on the floor)."""

    start_frame: np.ndarray
    start_xy: np.ndarray
    start_vel: np.ndarray  # m/s
    end_frame: np.ndarray
    end_xy: np.ndarray
    end_vel: np.ndarray
    span_first: np.ndarray  # first / last frame of any member, on the floor or not
    span_last: np.ndarray
    embedding: np.ndarray  # (G, D) L2-normalised, zeros where unknown
    has_embedding: np.ndarray


def _window_fit(
    g: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, n_groups: int, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line per group: value at t = 0 and slope (per frame).

    The slope is NaN (unknown) with fewer than ``min_points`` points: a
    velocity from two noisy feet is no evidence of where someone was heading.
    """

    def s(w: np.ndarray | None) -> np.ndarray:
        return np.bincount(g, weights=w, minlength=n_groups)

    n, st, stt = s(None), s(t), s(t * t)
    den = n * stt - st * st
    xy0 = np.full((n_groups, 2), np.nan)
    vel = np.full((n_groups, 2), np.nan)
    for k, v in enumerate((x, y)):
        sv, stv = s(v), s(t * v)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(den > 0, (n * stv - st * sv) / den, 0.0)
            xy0[:, k] = np.where(n > 0, (sv - slope * st) / n, np.nan)
        vel[:, k] = np.where(n >= max(min_points, 2), slope, np.nan)
    return xy0, vel


def _states(tab: _Table, group_of: np.ndarray, n_groups: int, fps: float, config: AssociationConfig) -> _States:
    obs_group = group_of[tab.obs_tracklet]
    fused = _robust_fuse(
        obs_group,
        tab.obs_frame,
        tab.camera[tab.obs_tracklet],
        tab.obs_xy,
        tab.obs_sigma,
        config.gate_z,
    )
    g = fused["g"].to_numpy(np.int64)
    f = fused["f"].to_numpy(np.int64)
    x, y = fused["x"].to_numpy(), fused["y"].to_numpy()
    big = np.iinfo(np.int64).max
    first = np.full(n_groups, big)
    last = np.full(n_groups, -1)
    np.minimum.at(first, g, f)
    np.maximum.at(last, g, f)
    window = max(1, round(config.state_window_s * fps))
    in_start = f < first[g] + window
    start_xy, start_vel = _window_fit(
        g[in_start], (f - first[g])[in_start], x[in_start], y[in_start], n_groups, window // 2
    )
    in_end = f > last[g] - window
    end_xy, end_vel = _window_fit(g[in_end], (f - last[g])[in_end], x[in_end], y[in_end], n_groups, window // 2)

    def clamp(v: np.ndarray) -> np.ndarray:
        # A two-frame fit of noisy feet can claim any speed; nobody walks faster than the limit.
        v = v * fps
        speed = np.linalg.norm(v, axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            fast = speed > config.max_speed_mps
        return np.where(fast, v * config.max_speed_mps / np.maximum(speed, 1e-12), v)

    span_first = np.full(n_groups, big)
    span_last = np.full(n_groups, -1)
    np.minimum.at(span_first, group_of, tab.first)
    np.maximum.at(span_last, group_of, tab.last)
    dim = tab.embedding.shape[1]
    emb = np.zeros((n_groups, dim), np.float64)
    if dim:
        weight = (tab.length * tab.has_embedding).astype(np.float64)
        np.add.at(emb, group_of, tab.embedding * weight[:, None])
    has = np.linalg.norm(emb, axis=1) > 0 if dim else np.zeros(n_groups, bool)
    return _States(
        start_frame=np.where(last >= 0, first, -1),
        start_xy=start_xy,
        start_vel=clamp(start_vel),
        end_frame=last,
        end_xy=end_xy,
        end_vel=clamp(end_vel),
        span_first=span_first,
        span_last=span_last,
        embedding=l2_normalise(emb.astype(np.float32)) if dim else emb.astype(np.float32),
        has_embedding=has,
    )


def _link_costs(
    end_frame: np.ndarray,
    end_xy: np.ndarray,
    end_vel: np.ndarray,
    start_frame: np.ndarray,
    start_xy: np.ndarray,
    start_vel: np.ndarray,
    app_dist: np.ndarray,
    fps: float,
    config: AssociationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Cost of "the one that ended continues as the one that starts", and impossibility.

    Both ends are extrapolated towards each other at constant velocity (for at
    most ``extrapolation_s`` each) and must meet within a tolerance that grows
    with the gap; where both velocities are known, they must also agree within
    what a walker can change in that time (someone leaving through a door is
    not the one coming in through it). Beyond ``max_gap_s`` motion says nothing
    and appearance alone decides, with its stricter gate. A link faster than
    ``max_speed_mps`` (beyond the position tolerance) is impossible. Returns
    (cost, NaN where no evidence; impossible).
    """
    gap_s = np.maximum(start_frame - end_frame, 1) / fps
    spatial = np.isfinite(end_xy).all(axis=1) & np.isfinite(start_xy).all(axis=1)
    straight = np.linalg.norm(start_xy - end_xy, axis=1)
    with np.errstate(invalid="ignore"):
        impossible = spatial & (straight > config.link_tolerance_m + config.max_speed_mps * gap_s)
    h = np.minimum(gap_s / 2.0, config.extrapolation_s)[:, None]
    ve, vs = np.nan_to_num(end_vel), np.nan_to_num(start_vel)
    err = np.linalg.norm((end_xy + ve * h) - (start_xy - vs * h), axis=1)
    tol = config.link_tolerance_m + config.motion_tolerance_mps * gap_s
    turn = np.linalg.norm(start_vel - end_vel, axis=1) / (
        config.velocity_tolerance_mps + config.max_acceleration_mps2 * gap_s
    )
    motion = np.fmax(err / tol, turn)  # fmax: an unknown velocity (NaN) does not count
    near = spatial & (gap_s <= config.max_gap_s)
    cost = _blend(
        np.where(near, motion, np.nan),
        app_dist / config.appearance_gate,
        config.appearance_weight,
    )
    cost = np.where(near, cost, app_dist / config.reentry_appearance_gate)
    return cost, impossible


# ------------------------------------------------------------------- passes


def _pass1(
    tab: _Table, cov: _Covisible, constraints: _Constraints, config: AssociationConfig
) -> tuple[np.ndarray, dict, np.ndarray]:
    # A tracklet shorter than min_common_frames is judged on all the frames it has:
    # a fragment of a few frames still deserves its person's id.
    on_floor = np.bincount(tab.obs_tracklet[tab.finite], minlength=tab.n)
    need = np.minimum(config.min_common_frames, np.minimum(on_floor[cov.a], on_floor[cov.b]))
    scored = cov.n_common >= np.maximum(need, 1)
    far = scored & (cov.median_z > config.cannot_link_z)
    ok = scored & ~far
    a, b = cov.a[ok], cov.b[ok]
    app = _appearance_distance(tab.embedding, tab.has_embedding, a, b)
    cost = _blend(cov.median_z[ok] / config.gate_z, app / config.appearance_gate, config.appearance_weight)
    # Pairs seen together longer weigh more in a cluster's average cost.
    edges = (a, b, cost, cov.n_common[ok].astype(np.float64))
    labels = _agglomerate(
        tab.n,
        edges,
        (cov.a[far], cov.b[far]),
        config.merge_max_cost,
        lambda ma, mb: constraints.compatible(np.asarray(ma), np.asarray(mb)),
    )
    labels, exchanged = _exchange(_relabel(labels), tab, edges, constraints, config.merge_max_cost)
    labels, reunited, left_out = _reunite(_relabel(labels), tab, edges, constraints, config)
    return (
        _relabel(labels),
        {
            "pairs_scored": int(scored.sum()),
            "cannot_link": int(far.sum()),
            "exchanged": exchanged,
            "reunited": reunited,
        },
        left_out,
    )


def _exchange(
    labels: np.ndarray,
    tab: _Table,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    constraints: _Constraints,
    max_cost: float,
) -> tuple[np.ndarray, int]:
    """Give a cluster the tracklet with more evidence when two of one camera compete for it.

    Merging cheapest first, a short tracklet (a tracker's new id after an
    occlusion) can join a person's cluster before the long tracklet of that
    camera that was that person most of the time but ends on someone else
    (an id swap in its last seconds); the long one is then shut out by the
    rule that one camera's simultaneous tracklets are different people, and
    that person's longest view gets another id. Here a tracklet left alone
    takes the place of the one member that blocks it when it agrees with the
    rest of the cluster (average cost below ``max_cost``) over more than
    twice the common frames; the member it replaces is left alone instead.
    """
    a, b, cost, w = edges
    nb: list[dict[int, tuple[float, float]]] = [{} for _ in range(tab.n)]
    for i, j, c, ww in zip(a.tolist(), b.tolist(), cost.tolist(), w.tolist(), strict=True):
        if np.isfinite(c):
            nb[i][j] = nb[j][i] = (c, ww)
    labels = labels.copy()
    members: dict[int, set[int]] = {}
    for i, g in enumerate(labels.tolist()):
        members.setdefault(g, set()).add(i)
    next_label = int(labels.max()) + 1 if labels.size else 0
    done = 0
    for x in sorted(range(tab.n), key=lambda i: (-int(tab.length[i]), i)):
        if len(members[int(labels[x])]) != 1 or not nb[x]:
            continue
        best: tuple[float, int, int] | None = None
        for g in sorted({int(labels[j]) for j in nb[x]}):
            m = members[g]
            blockers = [
                y
                for y in m
                if tab.camera[y] == tab.camera[x] and tab.first[y] <= tab.last[x] and tab.first[x] <= tab.last[y]
            ]
            if len(blockers) != 1 or len(m) < 2:
                continue
            y = blockers[0]
            rest = [j for j in m if j != y]
            wx = sum(nb[x][j][1] for j in rest if j in nb[x])
            wy = sum(nb[y][j][1] for j in rest if j in nb[y])
            if wx <= 2 * wy:  # also when x shares no frame with the rest
                continue
            cx = sum(nb[x][j][0] * nb[x][j][1] for j in rest if j in nb[x]) / wx
            if cx > max_cost or (best is not None and cx >= best[0]):
                continue
            if constraints.compatible(np.array([x]), np.array(sorted(rest))):
                best = (cx, g, y)
        if best is None:
            continue
        _, g, y = best
        members[int(labels[x])].discard(x)
        members[g].discard(y)
        members[g].add(x)
        labels[x] = g
        labels[y] = next_label
        members[next_label] = {y}
        next_label += 1
        done += 1
    return labels, done


def _reunite(
    labels: np.ndarray,
    tab: _Table,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    constraints: _Constraints,
    config: AssociationConfig,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Merge two clusters that agree closely but for a short tracklet in the way.

    One person seen by several cameras can end up as two clusters when one
    camera's tracker gave them two ids at once for a moment (a duplicate box
    next to a swap) or one view put their feet far off for a while: the
    clusters then hold two simultaneous tracklets of that camera, or two
    tracklets that are far apart, and can never merge. When everything else
    says one person (the clusters' mean cost below ``reunite_max_cost``), the
    shorter tracklet of each conflicting pair is left out, if it has at most
    ``reunite_max_share`` of its rival's frames (the longer view is the
    evidence) and all that is left out is at most ``reunite_max_loss`` of the
    two clusters' frames (two long simultaneous views are two people walking
    together, not a duplicate), and the rest merge. A view left out only for
    disagreeing on the floor with another camera's view rejoins the merged
    cluster when its own camera holds nothing else of it then (``_rejoins``);
    what stays left out stands alone. Returns the labels, the merges and the
    tracklets left out.
    """
    left_out: set[int] = set()
    if config.reunite_max_cost <= 0 or labels.size == 0:
        return labels, 0, np.zeros(0, np.int64)
    a, b, cost, w = edges
    fin = np.isfinite(cost)
    a, b, cost, w = a[fin], b[fin], cost[fin], w[fin]
    labels = labels.copy()
    next_label = int(labels.max()) + 1
    done = 0
    tried: set[tuple[frozenset[int], frozenset[int]]] = set()
    while True:
        la, lb = labels[a], labels[b]
        cross = la != lb
        lo, hi = np.minimum(la, lb)[cross], np.maximum(la, lb)[cross]
        if lo.size == 0:
            break
        code, inv = np.unique(lo * np.int64(next_label) + hi, return_inverse=True)
        wsum = np.bincount(inv, weights=w[cross])
        mean = np.bincount(inv, weights=(w * cost)[cross]) / np.maximum(wsum, 1e-12)
        merged = False
        for k in np.argsort(mean, kind="stable").tolist():
            if mean[k] > config.reunite_max_cost:
                break
            ga, gb = int(code[k] // next_label), int(code[k] % next_label)
            ma, mb = np.flatnonzero(labels == ga), np.flatnonzero(labels == gb)
            key = (frozenset(ma.tolist()), frozenset(mb.tolist()))
            if key in tried:
                continue
            tried.add(key)
            if constraints.compatible(ma, mb):
                continue  # the clustering refused them for cost, not for a conflict: leave them
            out = _conflict_victims(tab, constraints, ma, mb, config.reunite_max_share)
            held = tab.length[ma].sum() + tab.length[mb].sum()
            if out is None or tab.length[out].sum() > config.reunite_max_loss * held:
                continue
            ka, kb = np.setdiff1d(ma, out), np.setdiff1d(mb, out)
            if ka.size == 0 or kb.size == 0 or not constraints.compatible(ka, kb):
                continue
            # What stays must still agree: re-average the cross edges without the victims.
            if not _mean_cost((a, b, cost, w), ka, kb) <= config.reunite_max_cost:
                continue
            labels[kb] = ga
            kept = np.concatenate([ka, kb])
            for v in out.tolist():
                if _rejoins(tab, v, kept, (a, b, cost, w), config.reunite_max_cost):
                    labels[v] = ga
                    kept = np.append(kept, v)
                    continue
                labels[v] = next_label
                next_label += 1
                left_out.add(v)
            done += 1
            merged = True
            break
        if not merged:
            break
    return labels, done, np.array(sorted(left_out), np.int64)


def _mean_cost(edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], xs: np.ndarray, ys: np.ndarray) -> float:
    """Weighted mean cost of the (finite) edges between tracklet sets ``xs`` and ``ys``; NaN when none."""
    a, b, cost, w = edges
    sel = (np.isin(a, xs) & np.isin(b, ys)) | (np.isin(a, ys) & np.isin(b, xs))
    return float(np.average(cost[sel], weights=w[sel])) if sel.any() else float("nan")


def _rejoins(
    tab: _Table,
    v: int,
    kept: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    max_cost: float,
) -> bool:
    """A view left out only for disagreeing on the floor with one other camera's view rejoins.

    Once the merge is made, a tracklet whose own camera holds nothing of the
    cluster at the same time, and that agrees with the cluster's other views
    (mean cost at most ``max_cost``), is that person: the disagreement was one
    view's feet put off (clothing the colour of the floor, a prop), not a second
    person.
    """
    same = kept[tab.camera[kept] == tab.camera[v]]
    if _at_once(tab, np.array([v]), same).any():
        return False
    return _mean_cost(edges, np.array([v]), kept) <= max_cost


def _conflict_victims(
    tab: _Table, constraints: _Constraints, ma: np.ndarray, mb: np.ndarray, max_share: float
) -> np.ndarray | None:
    """The shorter tracklet of every conflicting (same camera at once, or far apart) cross pair.

    None when a victim is not clearly the lesser view (more than ``max_share``
    of its rival's frames).
    """
    victims: set[int] = set()
    for i, j in zip(*np.nonzero(_at_once(tab, ma, mb)), strict=True):
        x, y = int(ma[i]), int(mb[j])
        if tab.camera[x] != tab.camera[y] and not constraints._never_close(x, y):
            continue
        short, long_ = (x, y) if (tab.length[x], x) < (tab.length[y], y) else (y, x)
        if tab.length[short] > max_share * tab.length[long_]:
            return None
        victims.add(short)
    return np.array(sorted(victims), np.int64)


def _temporal_candidates(st: _States, max_overlap: int, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Node pairs (p, q) where q starts near the end of p: sorted starts + binary search."""
    order = np.argsort(st.span_first, kind="stable")
    starts = st.span_first[order]
    lo = np.searchsorted(starts, st.span_last - max_overlap, side="left")
    hi = np.searchsorted(starts, st.span_last + max_gap, side="right")
    counts = np.maximum(hi - lo, 0)
    pos, p = _expand(lo, counts)
    q = order[pos]
    keep = q != p
    return p[keep], q[keep]


def _appearance_candidates(st: _States, max_gap: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each node's k most similar nodes among those separated by more than the motion gap."""
    idx = np.flatnonzero(st.has_embedding)
    if k == 0 or idx.shape[0] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    emb = st.embedding[idx]
    first, last = st.span_first[idx], st.span_last[idx]
    out_p, out_q = [], []
    block = 1024
    for s in range(0, idx.shape[0], block):
        sim = emb[s : s + block] @ emb.T
        sep = np.maximum(first[None, :] - last[s : s + block, None], first[s : s + block, None] - last[None, :])
        sim[sep <= max_gap] = -np.inf
        kk = min(k, idx.shape[0] - 1)
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((sim.shape[0], 0), int)
        rows = np.repeat(np.arange(sim.shape[0]), top.shape[1])
        valid = np.isfinite(sim[rows, top.ravel()])
        out_p.append(idx[s + rows[valid]])
        out_q.append(idx[top.ravel()[valid]])
    return np.concatenate(out_p), np.concatenate(out_q)


def _pass2(
    tab: _Table,
    labels1: np.ndarray,
    constraints: _Constraints,
    fps: float,
    config: AssociationConfig,
) -> tuple[np.ndarray, dict]:
    k = int(labels1.max()) + 1 if labels1.size else 0
    st = _states(tab, labels1, k, fps, config)
    max_overlap = config.min_common_frames - 1
    max_gap = int(np.ceil(config.max_gap_s * fps))
    p, q = _temporal_candidates(st, max_overlap, max_gap)
    lp, lq = _appearance_candidates(st, max_gap, config.reentry_neighbours)
    p, q = np.concatenate([p, lp]), np.concatenate([q, lq])
    # Orient every pair as (earlier end, later start) and drop duplicates.
    swap = st.span_last[p] > st.span_last[q]
    p, q = np.where(swap, q, p), np.where(swap, p, q)
    if p.size:
        code = np.unique(p * np.int64(k) + q)
        p, q = code // k, code % k
    app = _appearance_distance(st.embedding, st.has_embedding, p, q)
    cost, impossible = _link_costs(
        st.end_frame[p],
        st.end_xy[p],
        st.end_vel[p],
        st.start_frame[q],
        st.start_xy[q],
        st.start_vel[q],
        app,
        fps,
        config,
    )
    nodes = _groups(labels1, k)

    def can_merge(ga: list[int], gb: list[int]) -> bool:
        fa, la = st.span_first[ga], st.span_last[ga]
        fb, lb = st.span_first[gb], st.span_last[gb]
        overlap = np.minimum(la[:, None], lb[None, :]) - np.maximum(fa[:, None], fb[None, :]) + 1
        if (overlap > max_overlap).any():
            return False
        return constraints.compatible(np.concatenate([nodes[i] for i in ga]), np.concatenate([nodes[i] for i in gb]))

    labels2 = _agglomerate(
        k,
        (p, q, cost, np.ones(p.shape[0])),
        (p[impossible], q[impossible]),
        config.link_max_cost,
        can_merge,
    )
    labels2 = _relabel(labels2)
    links = int(k - (labels2.max() + 1)) if k else 0
    return labels2[labels1], {"temporal_candidates": int(p.shape[0]), "temporal_links": links}


def _handoff_votes(
    first_boxes: np.ndarray, tab: _Table, gallery: IdentityGallery, fps: float, config: AssociationConfig
) -> np.ndarray:
    """Per tracklet, the global id whose last box in the same camera it continues (0: none).

    A sub-video boundary cuts every camera's tracks; the track that starts just
    after it where an identity's box ended just before it, in the same camera,
    is that identity: far stronger evidence than positions on the floor.
    One-to-one per camera (Hungarian on box overlap); no vote where another
    box overlaps nearly as much (people overlapping in that view).
    """
    votes = np.zeros(tab.n, np.int64)
    max_gap = round(config.handoff_gap_s * fps)
    if gallery.tail_global_id.size == 0 or tab.n == 0 or max_gap < 1:
        return votes
    for ci, cam in enumerate(tab.cameras):
        ti = np.flatnonzero(tab.camera == ci)
        ei = np.flatnonzero(gallery.tail_camera == cam)
        if ti.size == 0 or ei.size == 0:
            continue
        gap = tab.first[ti][:, None] - gallery.tail_frame[ei][None, :]
        iou = box_iou(first_boxes[ti], gallery.tail_xyxy[ei])
        ok = (gap > 0) & (gap <= max_gap) & (iou >= config.handoff_min_iou)
        if not ok.any():
            continue
        rows, cols = linear_sum_assignment(np.where(ok, -iou, 1.0))
        cand = np.where(ok, iou, 0.0)
        for r, c in zip(rows, cols, strict=True):
            if not ok[r, c]:
                continue
            # Two people overlapping in this view at the border: the boxes cannot tell who is who.
            rivals = max(np.delete(cand[r], c).max(initial=0.0), np.delete(cand[:, c], r).max(initial=0.0))
            if rivals < 0.5 * cand[r, c]:
                votes[ti[r]] = gallery.tail_global_id[ei[c]]
    return votes


def _handoff_support(tab: _Table, labels: np.ndarray, votes: np.ndarray) -> dict[int, dict[int, float]]:
    """Cluster -> {global id: share of its voting tracklets' frames that continue that id's boxes}."""
    out: dict[int, dict[int, float]] = {}
    voting = np.flatnonzero(votes > 0)
    for c in np.unique(labels[voting]).tolist():
        rows = voting[labels[voting] == c]
        total = float(tab.length[rows].sum())
        share: dict[int, float] = {}
        for g, w in zip(votes[rows].tolist(), tab.length[rows].tolist(), strict=True):
            share[int(g)] = share.get(int(g), 0.0) + w / total
        out[int(c)] = share
    return out


def _match_gallery(
    st: _States,
    gallery: IdentityGallery,
    fps: float,
    config: AssociationConfig,
    handoff: Mapping[int, Mapping[int, float]] | None = None,
    starters: Mapping[int, _States] | None = None,
) -> dict[int, int]:
    """Cluster index -> existing global id, by Hungarian on border continuity + appearance.

    ``handoff`` (cluster -> {id: share}, see ``_handoff_support``) lowers the
    cost of the ids a cluster's tracks continue in their own cameras by
    ``handoff_weight`` x share; a unanimous handoff also stands where the floor
    positions alone call the link impossible (feet mis-placed at the border).
    """
    handoff = handoff or {}
    n, g = st.span_first.shape[0], len(gallery)
    if n == 0 or g == 0:
        return {}
    c, i = np.repeat(np.arange(n), g), np.tile(np.arange(g), n)
    app = np.full(c.shape[0], np.nan)
    dim = st.embedding.shape[1]
    if dim and dim == gallery.embedding.shape[1]:
        d = 1.0 - np.einsum("ij,ij->i", st.embedding[c].astype(np.float64), gallery.embedding[i].astype(np.float64))
        app = np.where(st.has_embedding[c] & gallery.has_embedding[i], d, np.nan)
    start = np.where(st.start_frame[c] >= 0, st.start_frame[c], st.span_first[c])
    cost, impossible = _continues(gallery, i, start, st.start_xy[c], st.start_vel[c], app, fps, config)
    if starters:
        cost, impossible = _starters_vote(cost, impossible, starters, c, i, app, gallery, fps, config)
    share = np.zeros(c.shape[0])
    if handoff:
        gid_of = gallery.global_id[i]
        for cl, votes in handoff.items():
            rows = c == cl
            share[rows] = [votes.get(int(x), 0.0) for x in gid_of[rows]]
    unanimous = share >= 1.0 - 1e-9
    cost = np.where(np.isfinite(cost), cost, 1.0) - config.handoff_weight * share
    # ... but no cheaper than an identity without evidence: a cluster that
    # continues the id on the floor as well as in the boxes comes first.
    cost = np.where(impossible & unanimous, 1.0 - config.handoff_weight, cost)
    # An identity seen after this cluster began cannot be continued by it.
    bad = (impossible & ~unanimous) | (cost > config.link_max_cost) | (st.span_first[c] <= gallery.last_frame[i])
    matrix = np.where(bad, np.inf, cost).reshape(n, g)
    feasible = np.isfinite(matrix)
    if not feasible.any():
        return {}
    # Shift costs to >= 0 for the solver; infeasible pairs cost more than any feasible.
    shifted = matrix - min(0.0, float(np.min(np.where(feasible, matrix, 0.0))))
    big = float(np.max(np.where(feasible, shifted, 0.0))) * 10.0 + 10.0
    rows, cols = linear_sum_assignment(np.where(feasible, shifted, big))
    return {int(r): int(gallery.global_id[k]) for r, k in zip(rows, cols, strict=True) if feasible[r, k]}


def _continues(
    gallery: IdentityGallery,
    gi: np.ndarray,
    start_frame: np.ndarray,
    start_xy: np.ndarray,
    start_vel: np.ndarray,
    app: np.ndarray,
    fps: float,
    config: AssociationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """``_link_costs`` of gallery identities (rows ``gi``) continuing as the given starts."""
    return _link_costs(
        gallery.last_frame[gi],
        gallery.last_xy[gi].astype(np.float64),
        gallery.last_velocity[gi].astype(np.float64),
        start_frame,
        start_xy,
        start_vel,
        app,
        fps,
        config,
    )


def _starters_vote(
    cost: np.ndarray,
    impossible: np.ndarray,
    starters: Mapping[int, _States],
    c: np.ndarray,
    i: np.ndarray,
    app: np.ndarray,
    gallery: IdentityGallery,
    fps: float,
    config: AssociationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Continuity judged by the median of the cluster's first tracklets, each on its own.

    A cluster whose first seconds are seen by three or more cameras, one of
    which starts on someone else (a swap inside that camera's track), has a
    fused start that is nobody's; the median of its tracklets' own costs is
    the majority's.
    """
    cost, impossible = cost.copy(), impossible.copy()
    for k, ts in starters.items():
        rows = np.flatnonzero(c == k)
        m = ts.start_xy.shape[0]
        rr, tt = np.repeat(rows, m), np.tile(np.arange(m), rows.shape[0])
        tc, ti = _continues(gallery, i[rr], ts.start_frame[tt], ts.start_xy[tt], ts.start_vel[tt], app[rr], fps, config)
        tc = np.where(np.isfinite(tc), tc, 1.0).reshape(rows.shape[0], m)
        ti = ti.reshape(rows.shape[0], m)
        cost[rows] = np.median(tc, axis=1)
        impossible[rows] = ti.sum(axis=1) * 2 > m
    return cost, impossible


def _starters(
    tab: _Table, members: list[np.ndarray], st: _States, fps: float, config: AssociationConfig
) -> dict[int, _States]:
    """Per cluster begun by three or more tracklets (within the state window), their own start states."""
    window = max(1, round(config.state_window_s * fps))
    cand = [k for k, m in enumerate(members) if (tab.first[m] < st.span_first[k] + window).sum() >= 3]
    if not cand:
        return {}
    own = _states(tab, np.arange(tab.n), tab.n, fps, config)
    out = {}
    for k in cand:
        m = members[k]
        first = m[(tab.first[m] < st.span_first[k] + window) & np.isfinite(own.start_xy[m]).all(axis=1)]
        if first.shape[0] >= 3:
            out[k] = _subset_states(own, np.isin(np.arange(tab.n), first))
    return out


def _match_subset(
    st: _States,
    keep: np.ndarray,
    gallery: IdentityGallery,
    fps: float,
    config: AssociationConfig,
    handoff: Mapping[int, Mapping[int, float]],
    starters: Mapping[int, _States] | None = None,
) -> dict[int, int]:
    """``_match_gallery`` on the clusters where ``keep`` is set (indices stay the chunk's)."""
    idx = np.flatnonzero(keep)
    if idx.size == 0 or len(gallery) == 0:
        return {}
    sub = {int(np.searchsorted(idx, c)): v for c, v in handoff.items() if keep[c]}
    first = {int(np.searchsorted(idx, c)): v for c, v in (starters or {}).items() if keep[c]}
    found = _match_gallery(_subset_states(st, keep), gallery, fps, config, sub, first)
    return {int(idx[r]): g for r, g in found.items()}


def _drop_ids(gallery: IdentityGallery, ids: set[int]) -> IdentityGallery:
    """The gallery without identities ``ids`` (for matching only: tails are left out)."""
    keep = ~np.isin(gallery.global_id, np.array(sorted(ids), np.int64))
    return IdentityGallery(
        global_id=gallery.global_id[keep],
        embedding=gallery.embedding[keep],
        last_xy=gallery.last_xy[keep],
        last_velocity=gallery.last_velocity[keep],
        last_frame=gallery.last_frame[keep],
        last_cameras=gallery.last_cameras[keep],
        next_id=gallery.next_id,
    )


def _update_gallery(
    gallery: IdentityGallery,
    gids: np.ndarray,
    st: _States,
    last_cams: list[str],
    config: AssociationConfig,
) -> IdentityGallery:
    dim = max(st.embedding.shape[1], gallery.embedding.shape[1])
    old = {int(g): k for k, g in enumerate(gallery.global_id)}
    all_ids = sorted(set(old) | set(int(g) for g in gids))
    row = {g: k for k, g in enumerate(all_ids)}
    m = len(all_ids)
    emb = np.zeros((m, dim), np.float32)
    last_xy = np.full((m, 2), np.nan, np.float32)
    last_vel = np.full((m, 2), np.nan, np.float32)
    last_frame = np.zeros(m, np.int64)
    cams = np.zeros(m, dtype=object)
    for g, k in old.items():
        r = row[g]
        if gallery.embedding.shape[1] == dim:
            emb[r] = gallery.embedding[k]
        last_xy[r], last_vel[r] = gallery.last_xy[k], gallery.last_velocity[k]
        last_frame[r], cams[r] = gallery.last_frame[k], str(gallery.last_cameras[k])
    prev_has = np.linalg.norm(emb, axis=1) > 0
    for c, g in enumerate(gids.tolist()):
        r = row[g]
        if st.has_embedding[c] and st.embedding.shape[1] == dim:
            new = st.embedding[c]
            emb[r] = new if not prev_has[r] else config.gallery_momentum * emb[r] + (1 - config.gallery_momentum) * new
        last_xy[r] = st.end_xy[c]
        last_vel[r] = st.end_vel[c]
        last_frame[r] = st.span_last[c]
        cams[r] = last_cams[c]
    return IdentityGallery(
        global_id=np.array(all_ids, np.int64),
        embedding=l2_normalise(emb) if dim else emb,
        last_xy=last_xy,
        last_velocity=last_vel,
        last_frame=last_frame,
        last_cameras=np.array([str(x) for x in cams], np.str_) if m else np.zeros(0, np.str_),
        next_id=max([gallery.next_id, *(g + 1 for g in all_ids)]),
    )


def _unconfirmed(tab: _Table, members: list[np.ndarray], env: Environment, config: AssociationConfig) -> set[int]:
    """Clusters that may be no person: brief, never seen by two cameras at once, where others look too.

    A person standing where two or more cameras look is seen by more than one
    of them (that is what overlapping views are for); a short track that no
    other camera confirms is a split box, a shadow or a reflection. Unless it
    continues a known identity (the caller matches these last), it gets no
    identity (its rows stay in the camera's raw tracks). Long clusters and
    those where only one camera looks are kept.
    """
    if config.min_identity_s <= 0:
        return set()
    geos = [g for g in env.calibration.values() if g.image_size is not None]
    if len(geos) < 2:
        return set()
    min_frames = config.min_identity_s * env.fps
    out: set[int] = set()
    for c, m in enumerate(members):
        if _seen_together(tab, m) or tab.length[m].sum() >= min_frames:
            continue
        xy = tab.obs_xy[_expand(tab.obs_start[m], tab.length[m])[0]]
        xy = xy[np.isfinite(xy).all(axis=1)]
        if xy.shape[0] == 0:
            continue
        where = np.median(xy, axis=0)
        if sum(bool(g.sees(where)[0]) for g in geos) >= 2:
            out.add(c)
    return out


def _seen_together(tab: _Table, m: np.ndarray) -> bool:
    """Two cameras saw the cluster at the same time (views one after another confirm nothing)."""
    cam = tab.camera[m]
    return bool((_at_once(tab, m, m) & (cam[:, None] != cam[None, :])).any())


def _subset_states(st: _States, keep: np.ndarray) -> _States:
    return _States(**{f: getattr(st, f)[keep] for f in st.__dataclass_fields__})


def _with_tails(
    gallery: IdentityGallery,
    tab: _Table,
    tracklet_gid: np.ndarray,
    last_boxes: np.ndarray,
    kept: np.ndarray,
) -> IdentityGallery:
    """The gallery with this chunk's last box per (identity, camera) of its ``kept`` tracklets, as handoff boxes."""
    best: dict[tuple[int, int], int] = {}
    for i in np.flatnonzero(kept).tolist():
        key = (int(tracklet_gid[i]), int(tab.camera[i]))
        if key not in best or tab.last[i] > tab.last[best[key]]:
            best[key] = i
    keys = sorted(best)
    idx = np.array([best[k] for k in keys], np.int64)
    return replace(
        gallery,
        tail_global_id=np.array([k[0] for k in keys], np.int64),
        tail_camera=np.array([tab.cameras[k[1]] for k in keys], np.str_) if keys else np.zeros(0, np.str_),
        tail_frame=tab.last[idx] if keys else np.zeros(0, np.int64),
        tail_xyxy=last_boxes[idx] if keys else np.zeros((0, 4), np.float32),
    )


def associate(
    tracklets: Sequence[Tracklet],
    env: Environment,
    config: AssociationConfig | None = None,
    gallery: IdentityGallery | None = None,
) -> AssociationResult:
    """Global ids for one chunk's tracklets, continuing the identities of ``gallery``.

    Every tracklet gets an id (short ones too, possibly their own), except those
    of clusters found to be no person (``_unconfirmed``: brief, one camera, where
    others look too), which are left out of ``global_ids``. New identities
    are numbered from ``gallery.next_id`` in order of first appearance, then
    camera id and track id, so the same inputs always give the same ids.
    """
    t0 = time.perf_counter()
    config = config or AssociationConfig()
    gallery = gallery or IdentityGallery()
    if not env.fps > 0:
        raise ValueError(f"environment {env.environment_id!r} needs fps > 0, got {env.fps}")
    tab = _build_table(tracklets, env, config)
    stats: dict = {"tracklets": tab.n, "observations": int(tab.obs_frame.shape[0])}
    if tab.n == 0:
        stats.update(clusters=0, covisible_clusters=0, pairs_scored=0, gallery_matches=0, handoffs=0, new_identities=0)
        stats["seconds"] = time.perf_counter() - t0
        return AssociationResult({}, gallery, stats)
    boxes: dict[str, list[np.ndarray]] = {c: [] for c in tab.cameras}
    for t in tracklets:
        boxes[t.camera_id].append(t.xyxy)
    overlap = camera_overlap(env, tab.cameras, {c: np.concatenate(b) for c, b in boxes.items()}, config.overlap_cell_m)
    cov = _covisible_pairs(tab, overlap, config)
    constraints = _Constraints(tab, overlap, cov, config)
    labels1, s1, left_out = _pass1(tab, cov, constraints, config)
    labels, s2 = _pass2(tab, labels1, constraints, env.fps, config)
    ordered = sorted(tracklets, key=lambda t: t.key)  # the table's order
    first_boxes = np.stack([t.xyxy[0] for t in ordered]).astype(np.float64)
    votes = _handoff_votes(first_boxes, tab, gallery, env.fps, config)
    k = int(labels.max()) + 1
    handoff = _handoff_support(tab, labels, votes)
    st = _states(tab, labels, k, env.fps, config)
    members = _groups(labels, k)
    weak = _unconfirmed(tab, members, env, config)
    # A view left out of its person's cluster (a duplicate box) that nothing else
    # joined is that person again, not someone new: it may continue an identity
    # of the gallery but opens none.
    weak |= {c for c, m in enumerate(members) if np.isin(m, left_out).all()}
    # Identities are claimed by the best-evidenced clusters first: those several
    # cameras confirm, then long single views, then fragments (a duplicate box
    # must not take the id of the person every camera sees).
    is_weak = np.zeros(k, bool)
    is_weak[sorted(weak)] = True
    several = np.array([_seen_together(tab, m) for m in members])
    tiers = [several & ~is_weak, ~several & ~is_weak, is_weak]
    starters = _starters(tab, members, st, env.fps, config) if len(gallery) else {}
    matched: dict[int, int] = {}
    for tier in tiers:
        rest = _drop_ids(gallery, set(matched.values()))
        matched.update(_match_subset(st, tier, rest, env.fps, config, handoff, starters))
    noise = weak - set(matched)
    first_key = [tab.keys[int(m[0])] for m in members]
    new = sorted(
        (c for c in range(k) if c not in matched and c not in noise),
        key=lambda c: (int(st.span_first[c]), first_key[c]),
    )
    gids = np.zeros(k, np.int64)
    for c, g in matched.items():
        gids[c] = g
    for offset, c in enumerate(new):
        gids[c] = gallery.next_id + offset
    window = max(1, round(config.state_window_s * env.fps))
    last_cams = [
        ",".join(sorted({tab.cameras[tab.camera[i]] for i in m if tab.last[i] > st.span_last[c] - window}))
        for c, m in enumerate(members)
    ]
    last_boxes = np.stack([t.xyxy[-1] for t in ordered]).astype(np.float32)
    keep = np.array([c not in noise for c in range(k)])
    new_gallery = _update_gallery(
        gallery, gids[keep], _subset_states(st, keep), [last_cams[c] for c in range(k) if keep[c]], config
    )
    kept_tracklets = keep[labels]
    new_gallery = _with_tails(new_gallery, tab, gids[labels], last_boxes, kept_tracklets)
    stats.update(s1)
    stats.update(s2)
    stats.update(
        covisible_clusters=int(labels1.max()) + 1,
        clusters=k,
        gallery_matches=len(matched),
        handoffs=sum(1 for c, g in matched.items() if handoff.get(c, {}).get(g, 0.0) > 0),
        new_identities=len(new),
        noise_tracklets=int((~kept_tracklets).sum()),
        seconds=time.perf_counter() - t0,
    )
    global_ids = {tab.keys[i]: int(gids[labels[i]]) for i in range(tab.n) if kept_tracklets[i]}
    return AssociationResult(global_ids, new_gallery, stats)


# ------------------------------------------------------------------ fusion


_MAP_COLUMNS = {
    "frame_idx": np.int64,
    "global_id": np.int64,
    "map_x": np.float32,
    "map_y": np.float32,
    "n_cameras": np.int32,
}


def fuse_positions(
    tracks_df: pd.DataFrame,
    global_ids: Mapping[tuple[str, int], int],
    env: Environment,
    config: AssociationConfig | None = None,
) -> pd.DataFrame:
    """One ground position per identity per frame from every camera that sees it.

    Each camera's foot point is weighted by the inverse of its expected error
    (closer and larger boxes count more, boxes cut by the border little), after
    dropping points that disagree with the other cameras' median. Rows of tracks
    without a global id are ignored; identities seen only off the floor in a frame
    keep a row with NaN position and ``n_cameras`` 0. Sorted by (frame_idx, global_id).
    """
    config = config or AssociationConfig()
    needed = {"camera_id", "frame_idx", "track_id", "x1", "y1", "x2", "y2", "map_x", "map_y"}
    missing = sorted(needed - set(tracks_df.columns))
    if missing:
        raise ValueError(f"tracks_df lacks columns {missing}")
    empty = pd.DataFrame({k: pd.Series(dtype=v) for k, v in _MAP_COLUMNS.items()})
    if tracks_df.empty or not global_ids:
        return empty
    ids = pd.DataFrame(
        [(str(c), int(t), int(g)) for (c, t), g in global_ids.items()],
        columns=["camera_id", "track_id", "global_id"],
    )
    df = tracks_df[list(needed)].copy()
    df["camera_id"] = df["camera_id"].astype(str)
    df["track_id"] = df["track_id"].astype(np.int64)
    df = df.merge(ids, on=["camera_id", "track_id"], how="inner")
    if df.empty:
        return empty
    boxes = df[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    sigma = np.zeros(len(df))
    cams = df["camera_id"].to_numpy()
    cam_codes, cam_index = np.unique(cams, return_inverse=True)
    for ci, cam in enumerate(cam_codes):
        rows = cam_index == ci
        geo = env.calibration.get(str(cam))
        sigma[rows] = _foot_sigma(boxes[rows], geo, _image_size(geo, boxes[rows]), config)
    gid = df["global_id"].to_numpy(np.int64)
    frame = df["frame_idx"].to_numpy(np.int64)
    xy = df[["map_x", "map_y"]].to_numpy(np.float64)
    fused = _robust_fuse(gid, frame, cam_index, xy, sigma, config.gate_z)
    present = pd.DataFrame({"g": gid, "f": frame}).drop_duplicates()
    out = present.merge(fused, on=["g", "f"], how="left")
    out = out.rename(columns={"g": "global_id", "f": "frame_idx", "x": "map_x", "y": "map_y", "n": "n_cameras"})
    out["n_cameras"] = out["n_cameras"].fillna(0)
    out = out.sort_values(["frame_idx", "global_id"], kind="stable").reset_index(drop=True)
    return out[list(_MAP_COLUMNS)].astype(_MAP_COLUMNS)
