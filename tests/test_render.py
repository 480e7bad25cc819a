"""Rendering: annotated H.264 videos and the trajectory map."""

from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from spoton.geometry import CameraGeometry, GroundPlane, homography_from_calibration
from spoton.render import (
    H264Writer,
    colour_of,
    h264_encoder,
    map_canvas_size,
    write_annotated_video,
    write_trajectories_png,
)

N_FRAMES, SIZE = 12, (160, 120)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("render") / "src.mp4"
    with H264Writer(path, 25, SIZE) as w:
        for i in range(N_FRAMES):
            img = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
            cv2.rectangle(img, (10 + 5 * i, 40), (30 + 5 * i, 90), (200, 200, 200), -1)
            w.write(img)
    return path


def tracks(offset: int) -> pd.DataFrame:
    rows = [(offset + i, 7, 10.0 + 5 * i, 40.0, 30.0 + 5 * i, 90.0) for i in range(0, N_FRAMES, 2)]
    rows += [(offset + 3, 100_001, 100.0, 10.0, 150.0, 60.0)]
    return pd.DataFrame(rows, columns=["frame_idx", "track_id", "x1", "y1", "x2", "y2"])


def test_encoder_available():
    assert h264_encoder() in ("libx264", "h264", "libopenh264")


def test_annotated_video_decodes_as_h264(source, tmp_path):
    out = tmp_path / "out" / "c01_sub_video_02.mp4"
    n = write_annotated_video(source, tracks(500), out, global_ids={("c01", 7): 3}, camera_id="c01", frame_offset=500)
    assert n == N_FRAMES and out.is_file()
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == SIZE
    got, src = frames_of(out), frames_of(source)
    assert len(got) == N_FRAMES
    # Frame 3 has the unassociated track's box drawn in its track-id colour; frame 1 does not.
    edge = (slice(58, 62), slice(110, 140))
    expected = np.array(colour_of(100_001), np.float64)
    assert np.abs(got[3][edge].reshape(-1, 3).mean(0) - expected).max() < 40
    assert np.abs(got[1][edge].astype(int) - src[1][edge]).mean() < 10


def test_annotation_is_deterministic(source, tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for path in (a, b):
        write_annotated_video(source, tracks(0), path, global_ids=None, camera_id="c02")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("empty", [None, pd.DataFrame(), pd.DataFrame(columns=["frame_idx", "track_id"])])
def test_annotated_video_without_tracks(source, tmp_path, empty):
    out = tmp_path / "empty.mp4"
    assert write_annotated_video(source, empty, out, camera_id="c01") == N_FRAMES
    assert len(frames_of(out)) == N_FRAMES


def test_annotated_video_rejects_bad_input(source, tmp_path):
    with pytest.raises(ValueError, match="x1"):
        write_annotated_video(
            source,
            pd.DataFrame({"frame_idx": [0], "track_id": [1]}),
            tmp_path / "x.mp4",
            camera_id="c01",
        )
    with pytest.raises(ValueError, match="frame_offset"):
        write_annotated_video(source, None, tmp_path / "x.mp4", camera_id="c01", frame_offset=-1)
    with pytest.raises(FileNotFoundError):
        write_annotated_video(tmp_path / "missing.mp4", None, tmp_path / "x.mp4", camera_id="c01")
    assert not (tmp_path / "x.mp4").exists()


def test_writer_crops_odd_sizes_and_leaves_nothing_on_error(tmp_path):
    with H264Writer(tmp_path / "odd.mp4", 10, (65, 33)) as w:
        for _ in range(3):
            w.write(np.zeros((33, 65, 3), np.uint8))
    with av.open(str(tmp_path / "odd.mp4")) as c:
        assert (
            c.streams.video[0].codec_context.width,
            c.streams.video[0].codec_context.height,
        ) == (64, 32)
    with pytest.raises(RuntimeError), H264Writer(tmp_path / "broken.mp4", 10, (64, 32)) as w:
        w.write(np.zeros((32, 64, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.glob("*broken*")) == []
    with pytest.raises(ValueError, match="no frames"), H264Writer(tmp_path / "none.mp4", 10, (64, 32)):
        pass
    assert list(tmp_path.glob("*none*")) == []


def demo_camera() -> CameraGeometry:
    """A camera in the corner (0, 0) at 4 m looking towards the middle of a 20 x 15 m floor."""
    fwd = np.array([0.8, 0.6, -0.5])
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(fwd, right), fwd])
    t = -R @ np.array([0.3, 0.3, 4.0])
    K = np.array([[500.0, 0, 320], [0, 500, 180], [0, 0, 1]])
    return CameraGeometry("c01", homography_from_calibration(K, R, t), (640, 360), K, R, t)


def test_trajectory_png(tmp_path):
    plane = GroundPlane(20.0, 15.0)
    frames = np.arange(50)
    map_df = pd.DataFrame(
        {
            "frame_idx": np.concatenate([frames, frames]),
            "global_id": [1] * 50 + [2] * 50,
            "map_x": np.concatenate([np.linspace(2, 18, 50), np.full(50, 10.0)]),
            "map_y": np.concatenate([np.full(50, 7.0), np.linspace(1, 14, 50)]),
        }
    )
    map_df.loc[10, "map_x"] = np.nan  # an off-plane sample splits the line instead of breaking it
    gt = pd.DataFrame({"frame_idx": frames, "person_id": 1, "x_m": np.linspace(2, 18, 50), "y_m": 7.2})
    out = write_trajectories_png(map_df, plane, {"c01": demo_camera()}, tmp_path / "maps" / "t.png", gt=gt, px_per_m=30)
    img = cv2.imread(str(out))
    assert img is not None and (img.shape[1], img.shape[0]) == map_canvas_size(plane, 30) == (
        720,
        570,
    )
    # Identity 1's polyline crosses the map in its palette colour at y = 7 m.
    row = img[60 + 7 * 30, 60 + 5 * 30 : 60 + 15 * 30].astype(int)
    assert (np.abs(row - colour_of(1)).max(axis=1) < 30).mean() > 0.8


@pytest.mark.parametrize("map_df", [None, pd.DataFrame(columns=["frame_idx", "global_id", "map_x", "map_y"])])
def test_trajectory_png_empty(tmp_path, map_df):
    plane = GroundPlane(8.0, 6.0)
    out = write_trajectories_png(map_df, plane, {}, tmp_path / "empty.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[:2] == map_canvas_size(plane, 40)[::-1]
