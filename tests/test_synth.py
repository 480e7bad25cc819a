"""Synthetic scene generator: layout, formats, determinism and ground-truth consistency."""

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from spoton.config import load_calibration
from spoton.synth import (
    SceneSpec,
    generate_scene,
    make_cameras,
    make_layout,
    make_people,
    parse_size,
    simulate,
)

TINY = SceneSpec(cameras=2, people=3, seconds=2.0, sub_videos=2, fps=10, size=(320, 180), seed=3)
GT_COLUMNS = ["frame", "id", "x", "y", "w", "h", "conf", "cls", "vis"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    return generate_scene(tmp_path_factory.mktemp("synth") / "tiny", TINY)


def read_gt(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=GT_COLUMNS)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_layout_and_sub_videos(scene):
    assert scene.cameras == ("c01", "c02")
    assert scene.total_frames == 20 and scene.frames_per_sub_video == (10, 10)
    for cam in scene.cameras:
        chunks = sorted((scene.out / "video_demo" / cam).glob("*.mp4"))
        assert [p.name for p in chunks] == ["sub_video_01.mp4", "sub_video_02.mp4"]
        assert chunks == scene.videos[cam]
        for path, n in zip(chunks, scene.frames_per_sub_video, strict=True):
            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
                assert stream.codec_context.pix_fmt == "yuv420p"
            assert len(decode(path)) == n
    doc = json.loads(scene.scene_json.read_text())
    assert SceneSpec(**doc["spec"]) == TINY


def test_gt_files_format(scene):
    ids = set()
    for cam in scene.cameras:
        gt = read_gt(scene.gt[cam])
        assert len(gt) > 0
        assert gt["frame"].between(1, scene.total_frames).all()
        assert gt["id"].between(1, TINY.people).all()
        assert (gt["conf"] == 1).all() and (gt["cls"] == 1).all()
        assert ((gt["vis"] > 0) & (gt["vis"] <= 1)).all()
        assert (gt["x"] >= 0).all() and (gt["y"] >= 0).all()
        assert (gt["x"] + gt["w"] <= 320).all() and (gt["y"] + gt["h"] <= 180).all()
        assert (gt["w"] * gt["h"] >= 20).all()
        keys = list(zip(gt["frame"], gt["id"], strict=True))
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        ids |= set(gt["id"])
    plane = pd.read_csv(scene.ground_plane_csv)
    assert list(plane.columns) == ["frame_idx", "person_id", "x_m", "y_m"]
    assert plane["frame_idx"].between(0, scene.total_frames - 1).all()
    assert plane["x_m"].between(0, 20).all() and plane["y_m"].between(0, 15).all()
    # Every person is somewhere on the floor and seen by at least one camera.
    assert set(plane["person_id"]) == ids == set(range(1, TINY.people + 1))


def test_calibration_file(scene):
    doc = json.loads(scene.calibration.read_text())
    assert doc["ground_plane"] == {"width": 2000.0, "height": 1500.0, "pixels_per_meter": 100}
    plane, geo = load_calibration(scene.calibration, scene.cameras)
    assert (plane.width_m, plane.height_m) == (20.0, 15.0)
    for entry in doc["cameras"]:
        g = geo[entry["id"]]
        assert g.image_size == (320, 180) and g.K is not None and g.R is not None
        src = np.array(entry["source_points"])
        dst = np.array(entry["destination_points"])
        assert len(src) >= 8 and src.shape == dst.shape
        assert ((src >= 0) & (src < [320, 180])).all()
        # The seed-format homography (image px -> map px) reproduces the point pairs.
        hom = np.column_stack([src, np.ones(len(src))]) @ np.array(entry["homography"]).T
        assert (hom[:, 2] > 0).all()
        np.testing.assert_allclose(hom[:, :2] / hom[:, 2:], dst, atol=0.5)
        # So do the full matrices.
        px, _ = cv2.projectPoints(
            np.column_stack([dst / 100, np.zeros(len(dst))]),
            np.array(entry["rvec"]),
            np.array(entry["tvec"]),
            np.array(entry["K"]),
            np.zeros(5),
        )
        np.testing.assert_allclose(px.reshape(-1, 2), src, atol=0.01)


def test_gt_boxes_agree_with_calibration(scene):
    """Ground positions projected into each view sit at the feet of that person's box."""
    doc = json.loads(scene.calibration.read_text())
    plane = pd.read_csv(scene.ground_plane_csv).set_index(["frame_idx", "person_id"])
    for entry in doc["cameras"]:
        gt = read_gt(scene.gt[entry["id"]])
        full = gt[(gt.vis > 0.95) & (gt.x > 0) & (gt.y > 0) & (gt.x + gt.w < 320) & (gt.y + gt.h < 180)]
        assert len(full) > 5
        xy = plane.loc[list(zip(full.frame - 1, full.id, strict=True))][["x_m", "y_m"]].to_numpy()
        px, _ = cv2.projectPoints(
            np.column_stack([xy, np.zeros(len(xy))]),
            np.array(entry["rvec"]),
            np.array(entry["tvec"]),
            np.array(entry["K"]),
            np.zeros(5),
        )
        px = px.reshape(-1, 2)
        assert ((px[:, 0] >= full.x) & (px[:, 0] <= full.x + full.w)).all()
        assert ((px[:, 1] >= full.y + 0.75 * full.h) & (px[:, 1] <= full.y + full.h + 1)).all()
        # Back to the floor: the box bottom-centre lands within foot-size of the true position.
        H = np.array(entry["homography"])
        feet = np.column_stack([full.x + full.w / 2, full.y + full.h - 0.5, np.ones(len(full))]) @ H.T
        err = np.linalg.norm(feet[:, :2] / feet[:, 2:] / 100 - xy, axis=1)
        assert np.median(err) < 0.35 and err.max() < 1.0


def test_deterministic(scene, tmp_path):
    again = generate_scene(tmp_path / "again", TINY)
    for rel in [
        "gt/c01/gt.txt",
        "gt/c02/gt.txt",
        "gt/ground_plane.csv",
        "homography_data/demo.json",
        "scene.json",
    ]:
        assert (scene.out / rel).read_bytes() == (again.out / rel).read_bytes(), rel
    for a, b in zip(scene.videos["c02"], again.videos["c02"], strict=True):
        fa, fb = decode(a), decode(b)
        assert len(fa) == len(fb)
        assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def test_other_seed_differs():
    a, _ = make_cameras(TINY)
    b, _ = make_cameras(TINY.model_copy(update={"seed": 4}))
    assert not np.allclose(a[0].t, b[0].t)


@pytest.mark.parametrize("n", range(1, 9))
def test_camera_rigs(n):
    spec = SceneSpec(cameras=n)
    cams, coverage = make_cameras(spec)
    assert [c.camera_id for c in cams] == [f"c{i:02d}" for i in range(1, n + 1)]
    for c in cams:
        x, y, z = c.centre
        assert 0 <= x <= 20 and 0 <= y <= 15 and 3.0 <= z <= 6.0
        pitch = np.degrees(np.arcsin(-c.R[2, 2]))
        assert 20 - 1e-6 <= pitch <= 45 + 1e-6
        hfov = np.degrees(2 * np.arctan(c.size[0] / 2 / c.K[0, 0]))
        assert 60 <= hfov <= 90
    if n >= 3:
        assert coverage >= 0.85  # most of the floor is seen by two or more cameras


def test_reentry_people_leave_and_come_back():
    spec = SceneSpec(cameras=1, people=6, seconds=40.0, fps=5, seed=2, reentry=True)
    layout = make_layout(spec)
    motion = simulate(spec, layout, make_people(spec))
    present = np.isfinite(motion.pos[:, :, 0])
    returned = [p for p in range(spec.people) if (np.diff(present[:, p].astype(int)) == 1).any() and present[0, p]]
    assert returned, "with reentry some person present at the start must leave and come back"
    for p in returned:  # a re-entry is physically possible: nobody teleports across the hall
        left = int(np.argmax(np.diff(present[:, p].astype(int)) == -1))
        back = left + 1 + int(np.argmax(present[left + 1 :, p]))
        gap_s = (back - left) / spec.fps
        assert np.linalg.norm(motion.pos[back, p] - motion.pos[left, p]) / gap_s < 2.0
    assert present.any(axis=0).all()
    xy = motion.pos[present]
    assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= 20).all() and (xy[:, 1] >= 0).all() and (xy[:, 1] <= 15).all()
    for prop in layout.props:  # nobody walks through a prop
        inside = (xy[:, 0] > prop.x0) & (xy[:, 0] < prop.x1) & (xy[:, 1] > prop.y0) & (xy[:, 1] < prop.y1)
        assert not inside.any()


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size(" 64X64 ") == (64, 64)
    for bad in ["1280", "1280x", "axb", "1280*720", ""]:
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"cameras": 0}, "cameras"),
        ({"cameras": 9}, "cameras"),
        ({"people": 0}, "people"),
        ({"seconds": 0}, "seconds"),
        ({"size": "1281x720"}, "1281x720"),
        ({"size": "12x720"}, "12x720"),
        ({"size": "big"}, "big"),
        ({"plane": (3.0, 15.0)}, "plane"),
        ({"seconds": 0.1, "fps": 10, "sub_videos": 2}, "sub_videos"),
        ({"env": "../x"}, "env"),
    ],
)
def test_bad_specs(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SceneSpec(**kwargs)


def test_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("not a scene")
    with pytest.raises(ValueError, match="refusing"):
        generate_scene(tmp_path, TINY)
    assert (tmp_path / "keep.txt").exists()
