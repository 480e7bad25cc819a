"""Annotated H.264 videos and top-down trajectory maps (PyAV and OpenCV only).

Videos are H.264 / yuv420p MP4 with the index up front (``+faststart``) so a
browser can start playing before the whole file has arrived. Encoder settings
and the thread count are fixed: the same frames always give the same bytes.
"""

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
from av.video.stream import VideoStream

from spoton.geometry import CameraGeometry, GroundPlane

H264_ENCODERS = ("libx264", "h264")  # "h264" resolves to whichever H.264 encoder the build has


def h264_encoder() -> str:
    """Name of the H.264 encoder this PyAV build has (libx264 preferred)."""
    for name in H264_ENCODERS:
        try:
            return av.codec.Codec(name, "w").name
        except ValueError:  # av's UnknownCodecError is a ValueError
            continue
    raise RuntimeError(
        "this PyAV build has no H.264 encoder (looked for libx264 and h264); "
        "install a PyAV wheel built with libx264 (the PyPI wheels are)"
    )


def _as_rate(fps: float | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(100_000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


class H264Writer:
    """Write BGR frames to an H.264 MP4, atomically (temp file renamed on close).

    Odd frame sizes are cropped by one pixel: yuv420p needs even dimensions.
    Use as a context manager; an exception inside the block leaves no file.
    """

    def __init__(
        self,
        path: Path | str,
        fps: float | Fraction,
        size: tuple[int, int],
        *,
        crf: int = 23,
        preset: str = "veryfast",
        keyframe_interval: int | None = None,
        threads: int = 2,
    ) -> None:
        w, h = (int(v) for v in size)
        if w < 2 or h < 2:
            raise ValueError(f"video size must be at least 2x2, got {w}x{h}")
        self.path = Path(path)
        self.size = (w - w % 2, h - h % 2)
        self.frames = 0
        rate = _as_rate(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".mp4", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
        gop = keyframe_interval or max(1, round(float(rate) * 2))
        encoder = h264_encoder()
        options = {"g": str(gop)}
        if encoder == "libx264":
            # x264's macroblock-tree rate control gave different bytes (and pixels) for the
            # same frames from run to run at widths like 320 px; without it output is exact.
            options |= {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
        self._stream = cast(VideoStream, self._container.add_stream(encoder, rate=rate, options=options))
        self._stream.width, self._stream.height = self.size
        self._stream.pix_fmt = "yuv420p"
        # x264's output depends on its thread count: fix it so machines agree.
        self._stream.codec_context.thread_count = threads

    def write(self, bgr: np.ndarray) -> None:
        w, h = self.size
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[0] < h or bgr.shape[1] < w:
            raise ValueError(f"frame must be at least {h}x{w}x3 BGR, got shape {bgr.shape}")
        # OpenCV's BGR -> I420 is the limited-range BT.601 conversion swscale would do, at
        # about half the cost.
        yuv = np.asarray(cv2.cvtColor(np.ascontiguousarray(bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place."""
        if self.frames == 0:
            self.abort()  # an MP4 without samples is not a playable file
            raise ValueError(f"no frames were written to {self.path}")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.chmod(self._tmp, 0o644)  # mkstemp makes 0600: readable like any written file
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ------------------------------------------------------------------ colours

# Well-separated BGR colours; an identity keeps its colour in every camera and on the map.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (75, 25, 230),
    (75, 180, 60),
    (25, 225, 255),
    (200, 130, 0),
    (48, 130, 245),
    (180, 30, 145),
    (240, 240, 70),
    (230, 50, 240),
    (60, 245, 210),
    (190, 190, 250),
    (128, 128, 0),
    (255, 190, 230),
    (40, 110, 170),
    (200, 250, 255),
    (0, 0, 128),
    (195, 255, 170),
    (0, 128, 128),
    (180, 215, 255),
    (128, 0, 0),
    (128, 128, 128),
)


def colour_of(identity: int) -> tuple[int, int, int]:
    """Fixed palette colour of an id (global id when known, else track id)."""
    return PALETTE[int(identity) % len(PALETTE)]


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    """Text on a filled tag in the box colour, kept inside the image."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 4)))
    y = int(np.clip(y, th + base + 2, h))
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    cv2.putText(
        img,
        text,
        (x + 2, y - base),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        _text_colour(colour),
        thick,
        cv2.LINE_AA,
    )


# ------------------------------------------------------------ annotated video

TRACK_COLUMNS = ("frame_idx", "track_id", "x1", "y1", "x2", "y2")


def _tracks_by_frame(tracks: pd.DataFrame | None) -> dict[int, np.ndarray]:
    """frame_idx -> (n, 5) rows [track_id, x1, y1, x2, y2]."""
    if tracks is None or len(tracks) == 0:
        return {}
    missing = [c for c in TRACK_COLUMNS if c not in tracks.columns]
    if missing:
        raise ValueError(f"tracks are missing columns {missing}; expected {list(TRACK_COLUMNS)}")
    arr = tracks[list(TRACK_COLUMNS)].to_numpy(np.float64)
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    frames, starts = np.unique(arr[:, 0].astype(np.int64), return_index=True)
    ends = np.append(starts[1:], len(arr))
    return {int(f): arr[s:e, 1:] for f, s, e in zip(frames, starts, ends, strict=True)}


def write_annotated_video(
    video_path: Path | str,
    tracks_df: pd.DataFrame | None,
    out_path: Path | str,
    *,
    global_ids: dict[tuple[str, int], int] | None = None,
    camera_id: str,
    frame_offset: int = 0,
) -> int:
    """Draw a camera chunk's tracks on its video; returns the number of frames written.

    ``tracks_df`` rows use global ``frame_idx``: local frame ``i`` of this video
    shows rows with ``frame_idx == frame_offset + i``. Boxes take their global
    id's colour when ``global_ids`` knows the track, else their track id's.
    """
    if frame_offset < 0:
        raise ValueError(f"frame_offset must be >= 0, got {frame_offset}")
    video_path = Path(video_path)
    if not video_path.is_file():
        raise FileNotFoundError(f"video not found: {video_path}")
    by_frame = _tracks_by_frame(tracks_df)
    ids = global_ids or {}
    with av.open(str(video_path)) as src:
        stream = src.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        size = (stream.codec_context.width, stream.codec_context.height)
        scale = max(0.4, min(size) / 1000)
        with H264Writer(out_path, fps, size) as writer:
            for i, frame in enumerate(src.decode(stream)):
                img = frame.to_ndarray(format="bgr24")
                fidx = frame_offset + i
                for track_id, x1, y1, x2, y2 in by_frame.get(fidx, ()):
                    tid = int(track_id)
                    gid = ids.get((camera_id, tid))
                    colour = colour_of(gid if gid is not None else tid)
                    p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
                    cv2.rectangle(img, p1, p2, colour, max(2, round(scale * 3)), cv2.LINE_AA)
                    text = f"ID {gid} | t{tid}" if gid is not None else f"t{tid}"
                    _label(img, text, p1[0], p1[1], colour, scale * 0.6)
                _label(
                    img,
                    f"{camera_id}  frame {fidx}",
                    4,
                    int(30 * scale) + 4,
                    (32, 32, 32),
                    scale * 0.7,
                )
                writer.write(img)
    return writer.frames


# ------------------------------------------------------------- trajectory map

MAP_MARGIN_PX = 60
MAX_MAP_SIDE_PX = 2400


def map_canvas_size(plane: GroundPlane, px_per_m: float) -> tuple[int, int]:
    """(width, height) of the trajectory PNG for a plane at ``px_per_m``."""
    return (
        int(round(plane.width_m * px_per_m)) + 2 * MAP_MARGIN_PX,
        int(round(plane.height_m * px_per_m)) + 2 * MAP_MARGIN_PX,
    )


def _fov_polygon(cam: CameraGeometry, max_range_m: float) -> np.ndarray | None:
    """Floor area inside the camera's image, as a polygon in metres (None without R/t/K)."""
    if cam.R is None or cam.t is None or cam.K is None or cam.image_size is None:
        return None
    w, h = cam.image_size
    n = 24
    border = np.concatenate(
        [
            np.column_stack([np.linspace(0, w, n), np.zeros(n)]),
            np.column_stack([np.full(n, w), np.linspace(0, h, n)]),
            np.column_stack([np.linspace(w, 0, n), np.full(n, h)]),
            np.column_stack([np.zeros(n), np.linspace(h, 0, n)]),
        ]
    )
    centre = -cam.R.T @ np.asarray(cam.t, np.float64).reshape(3)
    rays = (np.linalg.inv(cam.K) @ np.column_stack([border, np.ones(len(border))]).T).T @ cam.R
    pts = []
    for d in rays:
        horizontal = np.linalg.norm(d[:2])
        if d[2] < -1e-9:
            s = -centre[2] / d[2]
            reach = min(s * horizontal, max_range_m)
        else:  # at or above the horizon: the view runs out at the range limit
            reach = max_range_m
        if horizontal > 1e-9:
            pts.append(centre[:2] + d[:2] / horizontal * reach)
    return np.array(pts) if len(pts) >= 3 else None


def _segments(xy: np.ndarray, frames: np.ndarray, max_gap: int) -> list[np.ndarray]:
    """Split a trajectory at NaNs and at frame gaps longer than ``max_gap``."""
    ok = np.isfinite(xy).all(axis=1)
    breaks = np.flatnonzero((np.diff(frames) > max_gap) | ~ok[1:] | ~ok[:-1]) + 1
    return [seg[np.isfinite(seg).all(axis=1)] for seg in np.split(xy, breaks) if len(seg)]


def write_trajectories_png(
    map_df: pd.DataFrame | None,
    plane: GroundPlane,
    cameras: dict[str, CameraGeometry],
    out_path: Path | str,
    gt: pd.DataFrame | None = None,
    *,
    px_per_m: float | None = None,
) -> Path:
    """Top-down map: metre grid, floor outline, cameras with their views, one polyline per identity.

    ``map_df`` has ``frame_idx, global_id, map_x, map_y`` (metres); ``gt`` is the
    synthetic ``ground_plane.csv`` (``frame_idx, person_id, x_m, y_m``) drawn in grey.
    """
    ppm = px_per_m or min(40.0, (MAX_MAP_SIDE_PX - 2 * MAP_MARGIN_PX) / max(plane.width_m, plane.height_m))
    if not ppm > 0:
        raise ValueError(f"px_per_m must be positive, got {px_per_m}")
    width, height = map_canvas_size(plane, ppm)
    img = np.full((height, width, 3), 255, np.uint8)

    def to_px(xy: npt.ArrayLike) -> np.ndarray:
        return np.round((np.asarray(xy, np.float64).reshape(-1, 2) * ppm + MAP_MARGIN_PX) * 16).astype(np.int32)

    floor = np.array([[0, 0], [plane.width_m, 0], [plane.width_m, plane.height_m], [0, plane.height_m]])
    cv2.fillPoly(img, [to_px(floor)], (242, 242, 242), cv2.LINE_AA, 4)
    tick = 1 if ppm >= 20 else 5 if ppm >= 4 else 25
    grid = 1 if ppm >= 4 else tick  # a line every metre unless they would merge
    for x in range(0, int(plane.width_m) + 1, grid):
        grey = (200, 200, 200) if x % 5 else (165, 165, 165)
        line = np.array([[x, 0.0], [x, plane.height_m]])
        cv2.polylines(img, [to_px(line)], False, grey, 1, cv2.LINE_AA, 4)
        if x % tick == 0:
            cv2.putText(
                img,
                str(x),
                (int(x * ppm + MAP_MARGIN_PX) - 5, MAP_MARGIN_PX - 8),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (60, 60, 60),
                1,
                cv2.LINE_AA,
            )
    for y in range(0, int(plane.height_m) + 1, grid):
        grey = (200, 200, 200) if y % 5 else (165, 165, 165)
        line = np.array([[0.0, y], [plane.width_m, y]])
        cv2.polylines(img, [to_px(line)], False, grey, 1, cv2.LINE_AA, 4)
        if y % tick == 0:
            cv2.putText(
                img,
                str(y),
                (MAP_MARGIN_PX - 24, int(y * ppm + MAP_MARGIN_PX) + 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (60, 60, 60),
                1,
                cv2.LINE_AA,
            )
    cv2.polylines(img, [to_px(floor)], True, (40, 40, 40), 2, cv2.LINE_AA, 4)
    cv2.putText(
        img,
        "x (m)",
        (width // 2 - 20, 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(img, "y (m)", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)

    diagonal = float(np.hypot(plane.width_m, plane.height_m))
    floor_mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(floor_mask, [to_px(floor)], 1, cv2.LINE_8, 4)
    tint = np.array((230, 200, 160), np.float32)
    for _, cam in sorted(cameras.items()):
        wedge = _fov_polygon(cam, diagonal)
        if wedge is not None:
            # Tint each view on its own, inside the floor only: floor seen by more cameras
            # reads darker.
            seen = np.zeros((height, width), np.uint8)
            cv2.fillPoly(seen, [to_px(wedge)], 1, cv2.LINE_8, 4)
            inside = (seen & floor_mask).astype(bool)
            img[inside] = (0.8 * img[inside] + 0.2 * tint).astype(np.uint8)
    for cam_id, cam in sorted(cameras.items()):
        pos = cam.position_m()
        if pos is None:
            continue
        p = to_px(pos[:2])[0] // 16
        cv2.circle(img, (int(p[0]), int(p[1])), 7, (120, 60, 20), -1, cv2.LINE_AA)
        cv2.putText(
            img,
            cam_id,
            (int(p[0]) + 9, int(p[1]) - 9),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (120, 60, 20),
            1,
            cv2.LINE_AA,
        )

    if gt is not None and len(gt):
        for _, person in gt.sort_values(["person_id", "frame_idx"]).groupby("person_id", sort=True):
            xy = person[["x_m", "y_m"]].to_numpy(np.float64)
            for seg in _segments(xy, person["frame_idx"].to_numpy(), max_gap=1):
                cv2.polylines(img, [to_px(seg)], False, (185, 185, 185), 1, cv2.LINE_AA, 4)
    n_ids = 0
    if map_df is not None and len(map_df):
        for gid, person in map_df.sort_values(["global_id", "frame_idx"]).groupby("global_id", sort=True):
            xy = person[["map_x", "map_y"]].to_numpy(np.float64)
            colour = colour_of(int(gid))
            segs = [s for s in _segments(xy, person["frame_idx"].to_numpy(), max_gap=10) if len(s)]
            for seg in segs:
                cv2.polylines(img, [to_px(seg)], False, colour, 2, cv2.LINE_AA, 4)
            if segs:
                n_ids += 1
                start, end = to_px(segs[0][0])[0] // 16, to_px(segs[-1][-1])[0] // 16
                cv2.circle(img, (int(start[0]), int(start[1])), 3, colour, -1, cv2.LINE_AA)
                _label(img, str(int(gid)), int(end[0]) + 4, int(end[1]) - 4, colour, 0.45)
    legend = f"{n_ids} identities" + ("; grey: ground truth" if gt is not None and len(gt) else "")
    cv2.putText(
        img,
        legend,
        (MAP_MARGIN_PX, height - 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    out_path = Path(out_path)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"could not encode the trajectory map for {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".png", dir=out_path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(png.tobytes())
    os.chmod(tmp, 0o644)
    Path(tmp).replace(out_path)
    return out_path
