"""Per-camera tracking over boxmot trackers, plus retrospective track clean-up.

Each camera (and each chunk) gets its own ``CameraTracker``, which owns its
boxmot tracker instance and with it its id counter: ids never leak between
cameras. ``track_id = chunk_index * TRACK_ID_STRIDE + local id`` keeps ids
unique per camera over a run.

Trackers: bytetrack (default), botsort, ocsort, strongsort, deepocsort.
Cameras are static, so camera-motion compensation is off by default.
bytetrack and ocsort run on boxmot's C++ backend when it is built
(``spoton build-native``; tracker option ``backend``: auto, cpp or python):
the same tracks as the Python backend at a fifth of the time per frame.
Appearance-based trackers get their embeddings from the pipeline's embedder
or from ``reid_weights`` (a boxmot ReID file in weights/); without either,
botsort and deepocsort run on motion alone and strongsort, which needs
appearance, fails with a message saying what to provide. boxmot never builds
(or downloads) a ReID model itself.

The analysis is retrospective, so a finished chunk's tracks are cleaned up
with hindsight (``postprocess_tracks``): tracks are cut where their
appearance changes (an identity swap), fragments of one person are relinked
by motion and appearance, boxes whose feet are hidden are completed from the
person's own height, short gaps are interpolated, and tracks too short to be
a person walking through are dropped.
"""

import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spoton.detect import PersonSize
from spoton.embed import Embedder, make_embedder
from spoton.types import PERSON_CLASS_ID, Detections, FrameTracks, l2_normalise

TRACK_ID_STRIDE = 100_000
TRACKERS = ("bytetrack", "botsort", "ocsort", "strongsort", "deepocsort")
APPEARANCE_TRACKERS = frozenset({"botsort", "strongsort", "deepocsort"})
# boxmot trackers with a C++ backend that builds from OpenCV core + imgproc and Eigen
# (botsort's also needs OpenCV's calib3d and video modules: hundreds of packages more).
NATIVE_TRACKERS = ("bytetrack", "ocsort")
BACKENDS = ("auto", "cpp", "python")
# Options the C++ trackers take beyond their YAML defaults (boxmot.trackers.box.<name>.native).
_NATIVE_EXTRA_OPTIONS = {"bytetrack": ("max_obs",), "ocsort": ("iou_threshold", "max_obs")}
_OPENCV_SHIM = Path(__file__).resolve().parent / "native" / "opencv4"
NATIVE_REQUIREMENTS = (
    "CMake 3.16+, a C++17 compiler, OpenCV 4 core + imgproc headers and Eigen 3 "
    "(Debian: apt-get install cmake g++ libopencv-core-dev libopencv-imgproc-dev libeigen3-dev)"
)
TRACK_COLUMNS = ("frame_idx", "track_id", "x1", "y1", "x2", "y2", "confidence", "class_id")


def _quiet_boxmot() -> None:
    """boxmot logs every tracker's parameters at INFO; one line per camera chunk drowns run logs."""
    import boxmot.utils  # noqa: F401  (configures the "boxmot" logger at INFO on import)

    log = logging.getLogger("boxmot")
    if log.getEffectiveLevel() < logging.WARNING:
        log.setLevel(logging.WARNING)


def _static_camera_defaults(name: str, fps: float) -> dict[str, Any]:
    """Defaults that differ from boxmot's for static cameras at the environment's frame rate."""
    defaults: dict[str, Any] = {}
    if name in ("bytetrack", "botsort"):
        defaults["frame_rate"] = int(round(fps))
    if name == "bytetrack":
        # Retrospective clean-up removes short false tracks later, so start
        # tracks more readily than boxmot's live defaults do. A short buffer:
        # re-finding a lost person by box overlap alone after seconds swaps
        # identities; the relinker does it better with appearance and hindsight.
        defaults.update(track_thresh=0.5, min_conf=0.1, match_thresh=0.9, track_buffer=10)
    if name == "botsort":
        defaults.update(use_cmc=False)
    if name == "deepocsort":
        defaults.update(cmc_off=True)
    return defaults


def _installed_candidates(name: str) -> list[Path]:
    """Where boxmot looks for tracker ``name``'s packaged C++ library (beside its sources), first choice first."""
    from boxmot.native._common import installed_library_candidates, library_filename

    return installed_library_candidates(name, library_filename(name))


def _not_built(key: str) -> str:
    return f"the C++ {key} is not built: run `spoton build-native` (needs {NATIVE_REQUIREMENTS})"


def native_library(name: str) -> Path | None:
    """The installed C++ library of boxmot tracker ``name`` (see ``build_native``), or None."""
    if name not in NATIVE_TRACKERS:
        return None
    found = [p for p in _installed_candidates(name) if p.is_file()]
    return found[0] if found else None


def build_native(names: tuple[str, ...] = NATIVE_TRACKERS) -> dict[str, Path]:
    """Build boxmot's C++ trackers ``names`` and install each library beside its sources.

    Installed there, boxmot loads the library as a packaged artefact: no CMake
    at run time, and nothing to rebuild in each worker process. Already
    installed libraries are kept. Raises RuntimeError naming what is missing.
    """
    import importlib

    out: dict[str, Path] = {}
    for name in names:
        if name not in NATIVE_TRACKERS:
            raise ValueError(f"tracker {name!r} has no C++ backend here; choose from {', '.join(NATIVE_TRACKERS)}")
        have = native_library(name)
        if have is not None:
            out[name] = have
            continue
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"cannot build the C++ {name}: {tool} not found. Needs {NATIVE_REQUIREMENTS}")
        # Debian ships OpenCV's CMake config only with the full libopencv-dev: point
        # CMake at a minimal one unless the caller chose another.
        os.environ.setdefault("OpenCV_DIR", str(_OPENCV_SHIM))
        binding = importlib.import_module(f"boxmot.native.trackers.{name}")
        try:
            built = Path(getattr(binding, f"ensure_{name}_cpp_library")())
        except RuntimeError as e:
            raise RuntimeError(f"cannot build the C++ {name}: {e}\nNeeds {NATIVE_REQUIREMENTS}") from e
        target = _installed_candidates(name)[0]
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, target)
        out[name] = target
    return out


@cache
def _boxmot_defaults(key: str) -> tuple[tuple[str, Any], ...]:
    """boxmot's default options of tracker ``key`` (its YAML file, parsed once per process)."""
    from boxmot.trackers.config import load_tracker_defaults

    return tuple(load_tracker_defaults(key).items())


@cache
def _boxmot_option_names(key: str) -> frozenset[str]:
    """The option names boxmot's config for tracker ``key`` declares (parsed once per process)."""
    from boxmot.trackers.config import load_tracker_config

    return frozenset(load_tracker_config(key))


def _native_defaults(key: str) -> dict[str, Any]:
    """boxmot's defaults for its C++ ``key``: less the Kalman tuning the C++ trackers refuse."""
    return {k: v for k, v in _boxmot_defaults(key) if k != "variable_dt" and not k.startswith("kf_")}


def _native_options(key: str) -> set[str]:
    """Options boxmot's C++ ``key`` takes: its defaults and extras."""
    return set(_native_defaults(key)) | set(_NATIVE_EXTRA_OPTIONS[key])


class _NativeTracker:
    """boxmot's C++ ``bytetrack`` / ``ocsort`` through boxmot's own ctypes binding.

    The same library and configuration as boxmot's C++ adapter (``create_tracker``
    with backend "cpp"), minus the adapter: that one imports torch (3 s in each
    worker process) and spends more time per frame than the tracker itself.
    ``update`` takes and returns boxmot's numpy rows (x1 y1 x2 y2 conf cls in,
    x1 y1 x2 y2 id conf cls det_ind out).
    """

    _libraries: dict[str, Any] = {}

    def __init__(self, key: str, options: dict[str, Any]) -> None:
        import importlib

        cfg = _native_defaults(key)
        cfg.update(options)
        if key == "ocsort":  # as boxmot.trackers.box.ocsort.native
            cfg.setdefault("iou_threshold", 0.3)
            cfg.setdefault("max_obs", int(cfg["max_age"]) + 5)
        library = self._libraries.get(key)
        if library is None:
            path = native_library(key)
            if path is None:
                raise ValueError(_not_built(key))
            binding = importlib.import_module(f"boxmot.native.trackers.{key}")
            cls = {"bytetrack": "ByteTrackLibrary", "ocsort": "OcSortLibrary"}[key]
            library = self._libraries[key] = getattr(binding, cls)(path)
        self._library = library
        try:
            self._handle = library.create(cfg)
        except RuntimeError as e:
            raise ValueError(f"boxmot's C++ {key} refused its options {sorted(options.items())}: {e}") from e

    def update(self, dets: np.ndarray, frame: np.ndarray | None = None) -> np.ndarray:
        d = np.asarray(dets, np.float64).reshape(-1, 6)
        batch = self._library.update(
            self._handle,
            geometry=np.ascontiguousarray(d[:, :4], np.float32),
            scores=np.ascontiguousarray(d[:, 4], np.float32),
            class_ids=d[:, 5].astype(np.int64),
            detection_indices=np.arange(len(d), dtype=np.int64),
            embeddings=None,
            image=frame,
        )
        n = len(batch.track_ids)
        rows = np.empty((n, 8), np.float64)
        if n:
            rows[:, :4] = np.asarray(batch.geometry, np.float32).reshape(n, 4)
            rows[:, 4] = batch.track_ids
            rows[:, 5] = np.asarray(batch.scores, np.float32)
            rows[:, 6] = batch.class_ids
            rows[:, 7] = batch.detection_indices
        return rows

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._library.destroy(handle)
            self._handle = None


def _resolve_backend(key: str, backend: str, options: dict[str, Any]) -> str:
    """'cpp' or 'python' for tracker ``key`` given the option ``backend`` (auto, cpp, python)."""
    choice = str(backend).strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"tracker option backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    python_only = sorted(set(options) - _native_options(key)) if key in NATIVE_TRACKERS else []
    if choice == "python":
        return "python"
    if choice == "cpp":
        if key not in NATIVE_TRACKERS:
            raise ValueError(
                f"tracker {key!r} has no C++ backend; use backend 'python' (C++: {', '.join(NATIVE_TRACKERS)})"
            )
        if python_only:
            raise ValueError(f"option(s) {python_only} exist only in boxmot's Python {key}; use backend 'python'")
        if native_library(key) is None:
            raise ValueError(_not_built(key))
        return "cpp"
    return "cpp" if key in NATIVE_TRACKERS and not python_only and native_library(key) is not None else "python"


def make_tracker(
    name: str, *, fps: float = 25.0, use_embeddings: bool = False, backend: str = "auto", **options: Any
) -> Any:
    """A fresh boxmot tracker with static-camera defaults; ``options`` override them.

    ``backend``: "cpp" (boxmot's C++ tracker, see ``build_native``), "python",
    or "auto" (default: C++ where it is built and takes the options given).
    The tracker's ``spoton_backend`` attribute says which one it is.
    """
    key = name.strip().lower()
    if key not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    merged = _static_camera_defaults(key, fps)
    if key in ("botsort", "deepocsort"):
        merged["use_embeddings"] = bool(use_embeddings)
    merged.update(options)
    known = set(_boxmot_option_names(key)) | {
        "det_thresh",
        "max_age",
        "max_obs",
        "min_hits",
        "iou_threshold",
        "per_class",
    }
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for tracker {key!r}; known: {sorted(known)}")
    chosen = _resolve_backend(key, backend, merged)
    if chosen == "cpp":
        tracker: Any = _NativeTracker(key, merged)
    else:
        from boxmot.trackers.factory import create_tracker
        from boxmot.trackers.specs import TrackerSpec

        _quiet_boxmot()
        tracker = create_tracker(TrackerSpec(key, options=tuple(sorted(merged.items()))))
    tracker.spoton_backend = chosen
    return tracker


class CameraTracker:
    """One camera's tracker for one chunk: detections in, confirmed tracks out.

    ``embedder`` (optional) gives returned tracks appearance rows: on every
    frame for appearance-based trackers (the matched detection's embedding,
    computed anyway); otherwise, to keep it cheap, on every
    ``embed_every``-th frame and on a track's first frame, with zero rows for
    tracks not sampled and ``FrameTracks.embedding`` None when none was.
    Options: boxmot's for the chosen tracker, plus ``reid_weights`` (a boxmot
    ReID ``.pt`` in ``weights_dir``, used instead of ``embedder`` for the
    tracker's own matching) and ``box_source`` ("detection": report the
    matched detection's box, default; "track": the Kalman-filtered box).
    """

    def __init__(
        self,
        name: str = "bytetrack",
        options: dict[str, Any] | None = None,
        *,
        camera_id: str = "",
        chunk_index: int = 0,
        fps: float = 25.0,
        embedder: Embedder | None = None,
        embed_every: int = 5,
        weights_dir: Path | str | None = None,
        device: str = "auto",
    ) -> None:
        key = name.strip().lower()
        if key not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
        if chunk_index < 0:
            raise ValueError(f"chunk_index must be >= 0, got {chunk_index}")
        if embed_every < 1:
            raise ValueError(f"embed_every must be >= 1, got {embed_every}")
        opts = dict(options or {})
        box_source = opts.pop("box_source", "detection")
        if box_source not in ("detection", "track"):
            raise ValueError(f"box_source must be 'detection' or 'track', got {box_source!r}")
        reid_weights = opts.pop("reid_weights", None)
        self.name = key
        self.camera_id = camera_id
        self.id_offset = int(chunk_index) * TRACK_ID_STRIDE
        self.box_source = box_source
        self.embed_every = int(embed_every)
        self.embedder = embedder
        appearance: Embedder | None = None
        if key in APPEARANCE_TRACKERS:
            if reid_weights is not None:
                appearance = make_embedder(
                    "boxmot-reid", weights_dir=weights_dir, device=device, weights=reid_weights
                )
            else:
                appearance = embedder
            if appearance is None and key == "strongsort":
                raise ValueError(
                    "tracker 'strongsort' matches by appearance: give the pipeline an embedder or set "
                    "tracker option reid_weights to a boxmot ReID file in weights/ (e.g. osnet_x0_25_msmt17.pt)"
                )
        elif reid_weights is not None:
            raise ValueError(
                f"tracker {key!r} uses no appearance; option reid_weights does not apply"
            )
        self._tracker_embedder = appearance
        self._seen: set[int] = set()
        self.embed_seconds = 0.0  # time spent in embedders, so callers can time stages apart
        self.tracker = make_tracker(key, fps=fps, use_embeddings=appearance is not None, **opts)
        self.backend: str = self.tracker.spoton_backend
        # boxmot's Python trackers count ids from 0, its C++ ones from 1; MOTChallenge ids are positive.
        self._id_base = 1 if self.backend == "python" else 0

    def _sampled_embedding(
        self,
        embedder: Embedder,
        frame_idx: int,
        frame: np.ndarray,
        track_id: np.ndarray,
        xyxy: np.ndarray,
    ) -> np.ndarray | None:
        """Rows of tracks due for a sample: every ``embed_every``-th frame, and a track's first frame.

        Sampling the first frame guarantees every track at least one sample;
        unsampled rows stay zero (``l2_normalise`` keeps zero rows zero).
        """
        due = np.array([int(t) not in self._seen for t in track_id], bool)
        self._seen.update(int(t) for t in track_id)
        if frame_idx % self.embed_every == 0:
            due[:] = True
        if not due.any():
            return None
        t0 = time.perf_counter()
        rows = embedder.embed(frame, xyxy[due])
        self.embed_seconds += time.perf_counter() - t0
        out = np.zeros((len(track_id), rows.shape[1]), np.float32)
        out[due] = rows
        return out

    def _boxmot_update(
        self, frame: np.ndarray | None, dets: Detections
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw boxmot rows (x1 y1 x2 y2 id conf cls det_ind) and the detections' embeddings."""
        if self._tracker_embedder is None:
            return np.asarray(self.tracker.update(dets.as_boxmot(), frame)), None
        import torch
        from boxmot.structures import Boxes
        from boxmot.structures import Detections as BoxmotDetections

        if dets.embedding is not None:
            emb = dets.embedding
        elif frame is not None:
            t0 = time.perf_counter()
            emb = self._tracker_embedder.embed(frame, dets.xyxy)
            self.embed_seconds += time.perf_counter() - t0
        else:
            raise ValueError(
                f"tracker {self.name!r} needs the frame (or detection embeddings) to match by appearance"
            )
        bd = BoxmotDetections(
            geometry=Boxes(torch.from_numpy(np.ascontiguousarray(dets.xyxy, np.float32))),
            scores=torch.from_numpy(np.ascontiguousarray(dets.confidence, np.float32)),
            class_ids=torch.from_numpy(dets.class_id.astype(np.int64)),
            sample_id="frame",
            embeddings=torch.from_numpy(np.ascontiguousarray(emb, np.float32)),
        )
        tracks = self.tracker.update(bd, frame)
        rows = np.concatenate(
            [
                tracks.geometry.values.numpy().reshape(-1, 4),
                tracks.track_ids.numpy().reshape(-1, 1),
                tracks.scores.numpy().reshape(-1, 1),
                tracks.class_ids.numpy().reshape(-1, 1),
                tracks.detection_indices.numpy().reshape(-1, 1),
            ],
            axis=1,
        ).astype(np.float64)
        return rows, emb

    def update(self, frame_idx: int, frame: np.ndarray | None, dets: Detections) -> FrameTracks:
        """Advance one frame; ``frame`` may be None for motion-only trackers without an embedder."""
        if not isinstance(dets, Detections):
            raise ValueError(f"dets must be spoton.types.Detections, got {type(dets).__name__}")
        if frame is not None and (not isinstance(frame, np.ndarray) or frame.ndim != 3):
            raise ValueError(
                f"frame must be an (H, W, 3) image or None, got {getattr(frame, 'shape', frame)!r}"
            )
        dets = dets.filter(dets.class_id == PERSON_CLASS_ID) if len(dets) else dets
        rows, det_emb = self._boxmot_update(frame, dets)
        rows = rows.reshape(-1, 8) if rows.size else np.zeros((0, 8))
        det_ind = rows[:, 7].astype(np.int64)
        local = rows[:, 4].astype(np.int64) + self._id_base
        if local.size and local.max() >= TRACK_ID_STRIDE:
            raise ValueError(
                f"camera {self.camera_id}: more than {TRACK_ID_STRIDE - 1} tracks in one chunk; split the video"
            )
        xyxy = dets.xyxy[det_ind] if self.box_source == "detection" else rows[:, :4]
        conf = dets.confidence[det_ind]
        track_id = self.id_offset + local
        embedding = None
        if det_emb is not None and self._tracker_embedder is self.embedder:
            embedding = det_emb[det_ind]  # computed for matching anyway: every frame, free
        elif self.embedder is not None and frame is not None and len(track_id):
            embedding = self._sampled_embedding(self.embedder, frame_idx, frame, track_id, xyxy)
        return FrameTracks(
            camera_id=self.camera_id,
            frame_idx=int(frame_idx),
            track_id=track_id,
            xyxy=xyxy,
            confidence=conf,
            class_id=np.full(local.shape[0], PERSON_CLASS_ID, np.int32),
            embedding=embedding,
        )


# ------------------------------------------------------- retrospective clean-up


def _empty_tracks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame_idx": np.zeros(0, np.int64),
            "track_id": np.zeros(0, np.int64),
            "x1": np.zeros(0, np.float32),
            "y1": np.zeros(0, np.float32),
            "x2": np.zeros(0, np.float32),
            "y2": np.zeros(0, np.float32),
            "confidence": np.zeros(0, np.float32),
            "class_id": np.zeros(0, np.int32),
        }
    )


@dataclass(frozen=True)
class PostprocessConfig:
    """Retrospective clean-up knobs (tracker options ``min_frames``, ``max_gap``, ``link_gap``...)."""

    min_frames: int = 8  # tracks with fewer observed frames are dropped (noise, reflections)
    max_gap: int = 50  # gaps up to this many frames inside a track are interpolated (2 s at 25 fps)
    link_gap: int = 100  # fragments this close in time (frames) may be relinked into one track
    link_overlap: int = 10  # ... or overlapping by up to this many frames (a new track started while the old coasted)
    trim_overlap: int = 36  # a track's last frames (1.4 s at 25 fps) overlapping its successor's first are cut
    link_distance: float = 0.6  # max foot-point jump (box heights) for a relink after a short gap
    link_speed: float = (
        0.04  # extra jump allowed per frame of gap (box heights; ~1.3 m/s at 25 fps)
    )
    link_min_similarity: float = 0.6  # min appearance cosine similarity for a relink (when known)
    split_similarity: float = 0.6  # cut a track where its appearance drops below this (a swap)
    smooth: int = 0  # centred moving-average window over box coordinates (0: off)
    complete_feet: bool = True  # extend boxes whose feet are hidden (needs a size prior)

    def __post_init__(self) -> None:
        for name in ("min_frames", "max_gap", "link_gap", "link_overlap", "trim_overlap", "smooth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"postprocess {name} must be an integer >= 0, got {value!r}")
        for name in ("link_distance", "link_speed"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("link_min_similarity", "split_similarity"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [-1, 1], got {getattr(self, name)}")


POSTPROCESS_OPTIONS = frozenset(PostprocessConfig.__dataclass_fields__)


def split_tracker_options(
    options: dict[str, Any] | None,
) -> tuple[dict[str, Any], PostprocessConfig]:
    """RunConfig.tracker_options -> (CameraTracker options, clean-up config)."""
    opts = dict(options or {})
    post = {k: opts.pop(k) for k in list(opts) if k in POSTPROCESS_OPTIONS}
    return opts, PostprocessConfig(**post)


def _track_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per track: first/last frame and box, and velocity of the feet near each end (px/frame)."""
    df = df.sort_values(["track_id", "frame_idx"], kind="stable")
    g = df.groupby("track_id", sort=True)
    first = g.head(1).set_index("track_id")
    last = g.tail(1).set_index("track_id")
    # Velocity from up to 10 frames at each end: enough to extrapolate a few
    # frames of walking without amplifying box jitter.
    head = g.head(10).groupby("track_id")
    tail = g.tail(10).groupby("track_id")

    def vel(part: Any) -> pd.DataFrame:
        a = part.head(1).set_index("track_id")
        b = part.tail(1).set_index("track_id")
        dt = (b["frame_idx"] - a["frame_idx"]).clip(lower=1)
        return pd.DataFrame(
            {
                "vx": ((b["x1"] + b["x2"]) - (a["x1"] + a["x2"])) / 2 / dt,
                "vy": (b["y2"] - a["y2"]) / dt,
            }
        )

    vh, vt = vel(head), vel(tail)
    return pd.DataFrame(
        {
            "start": first["frame_idx"],
            "end": last["frame_idx"],
            "sx": (first["x1"] + first["x2"]) / 2,
            "sy": first["y2"],
            "sh": first["y2"] - first["y1"],
            "ex": (last["x1"] + last["x2"]) / 2,
            "ey": last["y2"],
            "eh": last["y2"] - last["y1"],
            "svx": vh["vx"],
            "svy": vh["vy"],
            "evx": vt["vx"],
            "evy": vt["vy"],
            "n": g.size(),
        }
    )


def _overlap_iou(df: pd.DataFrame, a: int, b: int) -> float:
    """Mean IoU of tracks a and b over the frames both have (0 when none)."""
    cols = ["frame_idx", "x1", "y1", "x2", "y2"]
    ra = df.loc[df["track_id"] == a, cols]
    rb = df.loc[df["track_id"] == b, cols]
    both = ra.merge(rb, on="frame_idx", suffixes=("_a", "_b"))
    if both.empty:
        return 0.0
    iw = (np.minimum(both["x2_a"], both["x2_b"]) - np.maximum(both["x1_a"], both["x1_b"])).clip(lower=0)
    ih = (np.minimum(both["y2_a"], both["y2_b"]) - np.maximum(both["y1_a"], both["y1_b"])).clip(lower=0)
    inter = iw * ih
    area_a = (both["x2_a"] - both["x1_a"]) * (both["y2_a"] - both["y1_a"])
    area_b = (both["x2_b"] - both["x1_b"]) * (both["y2_b"] - both["y1_b"])
    return float(np.mean(inter / np.maximum(area_a + area_b - inter, 1e-9)))


def link_fragments(
    df: pd.DataFrame, cfg: PostprocessConfig, embeddings: dict[int, np.ndarray] | None = None
) -> dict[int, int]:
    """Map of fragment track id -> the id of the earlier fragment it continues.

    A track ending at frame t1 and another starting at t2 (-link_overlap < t2 -
    t1 <= link_gap) are the same person when the end extrapolated forward and
    the start extrapolated backward meet within ``link_distance`` box heights
    (across an overlap, where both boxes existed at once, they must also
    overlap each other, mean IoU >= 0.2) and (with embeddings) look alike. Pairs are taken cheapest first, each end and
    each start used once, so chains form over several gaps.
    """
    if df.empty or cfg.link_gap == 0:
        return {}
    s = _track_summary(df)
    ids = s.index.to_numpy()
    end = s["end"].to_numpy()
    start = s["start"].to_numpy()
    gap = start[None, :] - end[:, None]  # [a, b]: b starts after a ends (or overlaps its end)
    ok = (gap > -cfg.link_overlap) & (gap <= cfg.link_gap)
    # b must really come later: start after a's start and end after a's end.
    ok &= (start[None, :] > start[:, None]) & (end[None, :] > end[:, None])
    if not ok.any():
        return {}
    # Signed: across an overlap both ends are extrapolated back to where they meet.
    g = np.where(gap == 0, 1, gap).astype(np.float64)
    ex = s["ex"].to_numpy()[:, None] + s["evx"].to_numpy()[:, None] * g / 2
    ey = s["ey"].to_numpy()[:, None] + s["evy"].to_numpy()[:, None] * g / 2
    sx = s["sx"].to_numpy()[None, :] - s["svx"].to_numpy()[None, :] * g / 2
    sy = s["sy"].to_numpy()[None, :] - s["svy"].to_numpy()[None, :] * g / 2
    height = np.maximum((s["eh"].to_numpy()[:, None] + s["sh"].to_numpy()[None, :]) / 2, 1.0)
    dist = np.hypot(ex - sx, ey - sy) / height
    hratio = np.abs(
        np.log(
            np.maximum(s["eh"].to_numpy()[:, None], 1) / np.maximum(s["sh"].to_numpy()[None, :], 1)
        )
    )
    # Tolerance grows with the gap: someone unseen for g frames may have
    # walked (or turned) up to link_speed box heights per frame away.
    allowed = cfg.link_distance + cfg.link_speed * np.abs(g)
    ok &= (dist <= allowed) & (hratio < 0.4)
    # Across an overlap both boxes were there at once: they must coincide (one
    # person tracked twice), not merely be neighbours walking together.
    for a, b in np.argwhere(ok & (gap <= 0)):
        if _overlap_iou(df, int(ids[a]), int(ids[b])) < 0.2:
            ok[a, b] = False
    # The nearest continuation in time first: a fragment that bridges a long
    # gap must not skip over the one that filled it.
    cost = dist / allowed + np.maximum(gap, 0) / max(cfg.link_gap, 1)
    if embeddings:
        dim = next(iter(embeddings.values())).shape[0]
        e = np.stack([embeddings.get(int(i), np.zeros(dim, np.float32)) for i in ids])
        known = np.linalg.norm(e, axis=1) > 0
        sim = e @ e.T
        both = known[:, None] & known[None, :]
        ok &= ~both | (sim >= cfg.link_min_similarity)
        # Appearance weighs twice the motion term: after a long gap it is the
        # better witness; unknown appearance costs as much as a mediocre match.
        cost = cost + 2.0 * np.where(both, 1.0 - sim, 0.25)
    pairs = np.argwhere(ok)
    order = np.argsort(cost[ok], kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    parent: dict[int, int] = {}
    for a, b in pairs[order]:
        if a in used_a or b in used_b:
            continue
        used_a.add(int(a))
        used_b.add(int(b))
        parent[int(ids[b])] = int(ids[a])
    # Resolve chains a <- b <- c to the root id.
    out: dict[int, int] = {}
    for child in parent:
        root = parent[child]
        while root in parent:
            root = parent[root]
        out[child] = root
    return out


def trim_handovers(df: pd.DataFrame, max_overlap: int, max_distance: float = 1.0) -> pd.DataFrame:
    """Cut the last frames of a track where its successor on the same person already started.

    A tracker often opens a new track on someone while the old one still
    holds on for a few frames (a size jump, a partial occlusion). Two tracks
    of one camera that overlap in time can never be one identity downstream,
    so the old track's overlapping tail (at most ``max_overlap`` frames) is
    dropped when, at the new track's first frame, their feet are within
    ``max_distance`` box heights. Long overlaps are two people.
    """
    if df.empty or max_overlap <= 0:
        return df
    s = _track_summary(df)
    ids = s.index.to_numpy()
    start, end = s["start"].to_numpy(), s["end"].to_numpy()
    over = end[:, None] - start[None, :] + 1  # [a, b]: frames b overlaps a's end
    cand = (over >= 1) & (over <= max_overlap) & (start[None, :] > start[:, None]) & (end[None, :] > end[:, None])
    if not cand.any():
        return df
    cut: dict[int, int] = {}
    sx, sy, sh = s["sx"].to_numpy(), s["sy"].to_numpy(), s["sh"].to_numpy()  # b's first box
    for a, b in np.argwhere(cand):
        ta = int(ids[a])
        at = df[(df["track_id"] == ta) & (df["frame_idx"] == start[b])]
        if at.empty:
            continue
        ra = at.iloc[0]
        height = max(float(ra["y2"] - ra["y1"]), float(sh[b]), 1.0)
        dx = (ra["x1"] + ra["x2"]) / 2 - sx[b]
        dy = ra["y2"] - sy[b]
        if np.hypot(dx, dy) <= max_distance * height:
            cut[ta] = min(cut.get(ta, int(start[b])), int(start[b]))
    if not cut:
        return df
    limit = df["track_id"].map(cut)
    return df[~(limit.notna() & (df["frame_idx"] >= limit))]


def _interpolate(df: pd.DataFrame, max_gap: int) -> pd.DataFrame:
    """Linearly interpolated boxes for gaps of 1..max_gap missing frames inside each track."""
    if df.empty or max_gap == 0:
        return df
    df = df.sort_values(["track_id", "frame_idx"], kind="stable")
    tid = df["track_id"].to_numpy()
    fr = df["frame_idx"].to_numpy()
    same = tid[1:] == tid[:-1]
    step = fr[1:] - fr[:-1]
    holes = np.nonzero(same & (step > 1) & (step <= max_gap + 1))[0]
    if holes.size == 0:
        return df
    cols = ["x1", "y1", "x2", "y2", "confidence"]
    vals = df[cols].to_numpy(np.float64)
    new_rows = []
    for i in holes:
        n = int(step[i])
        t = (np.arange(1, n) / n)[:, None]
        box = vals[i] + (vals[i + 1] - vals[i]) * t
        # Interpolated rows are guesses: report them with half the weaker
        # neighbour's confidence so consumers can tell them apart.
        box[:, 4] = 0.5 * min(vals[i, 4], vals[i + 1, 4])
        part = pd.DataFrame(box, columns=cols)
        part.insert(0, "track_id", tid[i])
        part.insert(0, "frame_idx", fr[i] + np.arange(1, n))
        new_rows.append(part)
    out = pd.concat([df, *new_rows], ignore_index=True)
    return out.astype({"frame_idx": np.int64, "track_id": np.int64})


def _smooth(df: pd.DataFrame, window: int) -> pd.DataFrame:
    if window <= 1 or df.empty:
        return df
    df = df.sort_values(["track_id", "frame_idx"], kind="stable").copy()
    cols = ["x1", "y1", "x2", "y2"]
    df[cols] = df.groupby("track_id")[cols].transform(
        lambda s: s.rolling(window, center=True, min_periods=1).mean()
    )
    return df


def complete_hidden_feet(
    df: pd.DataFrame,
    size: PersonSize,
    image_size: tuple[int, int] | None,
    min_rows: int = 10,
    min_height: float = 0.85,
) -> pd.DataFrame:
    """Extend boxes whose lower body is hidden (behind a prop or a nearer person) down to the feet.

    Occluders hide feet, not heads, from cameras above head height. A track's
    own rows say how tall that person looks relative to the size prior (its
    upper quartile of visible height / expected height, at least
    ``min_height``: occlusion only ever shortens a box); a row much shorter
    than that keeps its top and gets the bottom where a person of the
    track's height with that head row would stand. Rows cut by the image's
    top edge are left alone (their feet show).
    """
    if df.empty:
        return df
    df = df.copy()
    u = ((df["x1"] + df["x2"]) / 2).to_numpy(np.float64)
    top = df["y1"].to_numpy(np.float64)
    bottom = df["y2"].to_numpy(np.float64)
    h_exp = size.size_px(u, bottom)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (bottom - top) / h_exp
    rel_series = pd.Series(rel, index=df.index)
    grp = rel_series.groupby(df["track_id"])
    track_rel = grp.transform(lambda r: r.quantile(0.75) if r.notna().sum() >= min_rows else np.nan)
    # A track that is short throughout (someone standing behind a crate the
    # whole time) is still an adult: never aim below min_height of the prior.
    target = np.maximum(track_rel.to_numpy(np.float64), min_height)
    short = np.isfinite(rel) & np.isfinite(target) & (rel < 0.85 * target) & (top > 1.0)
    if not short.any():
        return df
    idx = np.nonzero(short)[0]
    # Bottom v solving (v - top) = target * h(u, v): scan below the visible
    # bottom; the visible height grows faster than the expected one, so the
    # first v where it reaches the target is the foot row.
    span = np.maximum(bottom[idx] - top[idx], 1.0)
    steps = np.linspace(0.0, 3.0, 61)
    vs = bottom[idx, None] + span[:, None] * steps[None, :]
    hs = size.size_px(np.repeat(u[idx], steps.size), vs.ravel())[0].reshape(vs.shape)
    reached = (vs - top[idx, None]) >= target[idx, None] * hs
    ok = reached.any(axis=1)
    first = np.argmax(reached, axis=1)
    new_bottom = vs[np.arange(idx.size), first]
    if image_size is not None:
        new_bottom = np.minimum(new_bottom, float(image_size[1]))
    y2 = df["y2"].to_numpy(np.float64).copy()
    y2[idx[ok]] = np.maximum(y2[idx[ok]], new_bottom[ok])
    df["y2"] = y2.astype(np.float32)
    return df


@dataclass(frozen=True)
class Appearance:
    """Appearance rows sampled along tracks: (S,) frames and track ids, (S, D) embeddings."""

    frame_idx: np.ndarray
    track_id: np.ndarray
    embedding: np.ndarray

    @classmethod
    def from_frames(cls, frames: list[FrameTracks], dim: int) -> "Appearance":
        """The sampled (non-zero) embedding rows of a chunk's FrameTracks."""
        fr, tid, emb = [], [], []
        for f in frames:
            if f.embedding is None:
                continue
            keep = np.linalg.norm(f.embedding, axis=1) > 0  # zero rows: not sampled
            fr.append(np.full(int(keep.sum()), f.frame_idx, np.int64))
            tid.append(f.track_id[keep])
            emb.append(f.embedding[keep])
        if not fr:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
        return cls(np.concatenate(fr), np.concatenate(tid).astype(np.int64), np.concatenate(emb))

    def relabel(self, track_id: np.ndarray) -> "Appearance":
        return Appearance(self.frame_idx, np.asarray(track_id, np.int64), self.embedding)

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track ids, L2-normalised mean embedding, number of samples), ids sorted."""
        ids, inverse, counts = np.unique(self.track_id, return_inverse=True, return_counts=True)
        sums = np.zeros((ids.shape[0], self.embedding.shape[1]), np.float64)
        np.add.at(sums, inverse, self.embedding)
        mean = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        return (
            ids.astype(np.int64),
            (l2_normalise(mean) if ids.size else mean),
            counts.astype(np.int64),
        )


def split_at_appearance_changes(
    df: pd.DataFrame, samples: Appearance, min_similarity: float, window: int = 4
) -> tuple[pd.DataFrame, Appearance]:
    """Cut tracks where the person under the box changes (an identity swap).

    A tracker that matches boxes by overlap can hand a track over to another
    person when two cross. Along each track, the mean appearance of the
    ``window`` samples before and after every sample boundary is compared;
    where it drops below ``min_similarity`` the track is cut at the least
    similar boundary and the later part gets a new id (the relinker then
    joins the pieces to the right people). Repeats until no track changes.
    """
    if df.empty or samples.frame_idx.size == 0 or min_similarity <= -1:
        return df, samples
    df = df.copy()
    tids = samples.track_id.copy()
    next_id = int(max(df["track_id"].max(), tids.max())) + 1
    frames_of = df.groupby("track_id")["frame_idx"]
    queue = [int(t) for t in np.unique(tids)]
    while queue:
        t = queue.pop()
        idx = np.nonzero(tids == t)[0]
        if idx.size < 2 * window:
            continue
        idx = idx[np.argsort(samples.frame_idx[idx], kind="stable")]
        emb = samples.embedding[idx].astype(np.float64)
        csum = np.concatenate([np.zeros((1, emb.shape[1])), np.cumsum(emb, axis=0)])
        cuts = np.arange(window, idx.size - window + 1)
        before = csum[cuts] - csum[cuts - window]
        after = csum[cuts + window] - csum[cuts]
        sim = (before * after).sum(axis=1) / np.maximum(
            np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1), 1e-12
        )
        k = int(np.argmin(sim))
        if sim[k] >= min_similarity:
            continue
        cut_frame = int(samples.frame_idx[idx[cuts[k]]])
        # The swap happened between the two samples: cut half way.
        prev_frame = int(samples.frame_idx[idx[cuts[k] - 1]])
        boundary = (prev_frame + cut_frame + 1) // 2
        rows = (df["track_id"] == t) & (df["frame_idx"] >= boundary)
        if not rows.any() or rows.sum() == frames_of.size().get(t, 0):
            continue
        df.loc[rows, "track_id"] = next_id
        later = idx[samples.frame_idx[idx] >= boundary]
        tids[later] = next_id
        queue += [t, next_id]
        next_id += 1
    return df, samples.relabel(tids)


def postprocess_tracks(
    df: pd.DataFrame,
    cfg: PostprocessConfig,
    samples: Appearance | None = None,
    size: PersonSize | None = None,
    image_size: tuple[int, int] | None = None,
) -> tuple[pd.DataFrame, Appearance]:
    """Cleaned tracks of one chunk, and the appearance samples relabelled to the kept ids.

    Without ``samples`` the returned Appearance is empty (dimension 0).

    Order matters: cut tracks where the appearance changes (identity swaps),
    relink fragments of one person (so the gap between them is then
    interpolated), drop what is still too short, complete boxes whose feet
    are hidden (with ``size``, the camera's person size prior), interpolate,
    smooth.
    """
    missing = [c for c in TRACK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"tracks table lacks columns {missing}")
    if samples is None:
        samples = Appearance(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        )
    if df.empty:
        return _empty_tracks(), samples
    out = df
    out, samples = split_at_appearance_changes(out, samples, cfg.split_similarity)
    ids, means, _ = samples.means()
    embeddings = dict(zip(ids.tolist(), means, strict=True))
    remap = link_fragments(out, cfg, embeddings)
    out = out.copy()
    if remap:
        out["track_id"] = out["track_id"].map(lambda t: remap.get(int(t), int(t))).astype(np.int64)
        # Fragments linked across a short overlap have two rows on those frames:
        # keep the more confident one.
        out = out.sort_values(["frame_idx", "track_id", "confidence"], ascending=[True, True, False], kind="stable")
        out = out.drop_duplicates(["frame_idx", "track_id"], keep="first")
        samples = samples.relabel(
            np.array([remap.get(int(t), int(t)) for t in samples.track_id], np.int64)
        )
    out = trim_handovers(out, cfg.trim_overlap)
    counts = out.groupby("track_id")["frame_idx"].transform("size")
    out = out[counts >= cfg.min_frames]
    if size is not None and cfg.complete_feet:
        out = complete_hidden_feet(out, size, image_size)
    out = _interpolate(out, cfg.max_gap)
    out = _smooth(out, cfg.smooth)
    out["class_id"] = PERSON_CLASS_ID
    out = out.astype(
        {
            "x1": np.float32,
            "y1": np.float32,
            "x2": np.float32,
            "y2": np.float32,
            "confidence": np.float32,
            "class_id": np.int32,
        }
    )
    out = out.sort_values(["frame_idx", "track_id"], kind="stable").reset_index(drop=True)
    kept = np.isin(samples.track_id, out["track_id"].unique())
    samples = Appearance(samples.frame_idx[kept], samples.track_id[kept], samples.embedding[kept])
    return out[list(TRACK_COLUMNS)], samples
