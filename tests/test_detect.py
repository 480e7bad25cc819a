"""Detectors on frames synthesised here: textured floors, person-like boxes, calibrated cameras."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from spoton.detect import (
    BgSubDetector,
    CalibratedSize,
    MotDetector,
    fit_linear_size,
    make_detector,
    sample_frames,
    temporal_median,
    uncover_standing,
)
from spoton.geometry import CameraGeometry, GroundPlane, homography_from_calibration
from spoton.types import PERSON_CLASS_ID, Detections

W, H = 640, 360


def look_at_camera(
    eye: tuple[float, float, float], target: tuple[float, float, float], f: float = 500.0
) -> CameraGeometry:
    """A pinhole camera at ``eye`` (metres, z up) looking at ``target``: world -> camera R, t."""
    eye_v, target_v = np.asarray(eye, float), np.asarray(target, float)
    z = target_v - eye_v
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    t = -R @ eye_v
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    return CameraGeometry("c01", homography_from_calibration(K, R, t), (W, H), K, R, t)


def textured_floor(seed: int = 0) -> np.ndarray:
    # Greyish tiles with a little colour, like real floors.
    rng = np.random.default_rng(seed)
    grey = rng.integers(90, 170, (H // 16, W // 16, 1))
    small = np.clip(grey + rng.integers(-12, 12, (H // 16, W // 16, 3)), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR), (0, 0), 2)


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    return np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def person_box(geo: CameraGeometry, x_m: float, y_m: float) -> np.ndarray:
    """Calibrated 1.7 m x 0.5 m box of a person standing at floor point (x_m, y_m)."""
    foot = geo.to_image(np.array([[x_m, y_m]]))[0]
    h, w = CalibratedSize(geo).size_px(np.array([foot[0]]), np.array([foot[1]]))
    return np.array([foot[0] - w[0] / 2, foot[1] - h[0], foot[0] + w[0] / 2, foot[1]])


def draw_person(frame: np.ndarray, box: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Torso / legs / head in different colours, roughly person-shaped."""
    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    head = (int((x1 + x2) / 2), int(y1 + 0.07 * h))
    cv2.ellipse(
        frame, head, (max(1, int(0.18 * w)), max(1, int(0.07 * h))), 0, 0, 360, (150, 180, 220), -1
    )
    cv2.rectangle(frame, (int(x1), int(y1 + 0.14 * h)), (int(x2), int(y1 + 0.55 * h)), colour, -1)
    cv2.rectangle(
        frame,
        (int(x1 + 0.15 * w), int(y1 + 0.55 * h)),
        (int(x2 - 0.15 * w), int(y2)),
        (60, 50, 40),
        -1,
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def camera() -> CameraGeometry:
    return look_at_camera((10.0, -4.0, 5.0), (10.0, 6.0, 0.0))


def walking_frames(
    geo: CameraGeometry, tracks: list[tuple[float, float, float, float]], n: int = 40
):
    """Frames of people walking straight lines (x0, y0, vx, vy in m/frame) over a textured floor."""
    rng = np.random.default_rng(1)
    floor = textured_floor()
    frames, boxes = [], []
    colours = [(40, 40, 200), (40, 160, 40), (200, 80, 40), (30, 200, 220)]
    for k in range(n):
        f = floor.copy()
        bs = [person_box(geo, x0 + vx * k, y0 + vy * k) for x0, y0, vx, vy in tracks]
        # Far to near so nearer people occlude farther ones.
        for i in np.argsort([-(y0 + vy * k) for _, y0, _, vy in tracks]):
            draw_person(f, bs[i], colours[i % len(colours)])
        frames.append(noisy(f, rng))
        boxes.append(np.array(bs))
    return floor, frames, boxes


def test_temporal_median_removes_moving_objects():
    floor = textured_floor()
    frames = []
    for k in range(9):
        f = floor.copy()
        cv2.rectangle(f, (40 * k, 100), (40 * k + 30, 200), (0, 0, 255), -1)
        frames.append(f)
    bg = temporal_median(frames)
    assert bg.dtype == np.uint8
    assert np.abs(bg.astype(int) - floor).max() == 0
    with pytest.raises(ValueError, match="at least one frame"):
        temporal_median([])


@pytest.mark.parametrize("n", [1, 2, 3, 6, 25, 50])
def test_the_counting_medians_equal_numpys(n):
    import warnings

    from spoton.detect import _median_u8, _nanmedian_rows

    rng = np.random.default_rng(n)
    vals = rng.integers(0, 256, (n, 300, 3)).astype(np.float32)
    valid = rng.random((n, 300)) < 0.6
    valid[:, :5] = False  # no deviating sample at all: NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(np.where(valid[..., None], vals, np.nan), axis=0)
    got = _nanmedian_rows(vals, valid)
    assert got.dtype == np.float32 and np.array_equal(got, expected, equal_nan=True)
    u = rng.integers(0, 256, (n, 7 + n % 2), dtype=np.uint8)  # odd and even counts
    assert _median_u8(u) == float(np.median(u))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 24, 25, 26, 50, 61])
def test_temporal_median_is_the_exact_rank_n_half_value(n):
    # The selection network must give np.partition's answer bit for bit, ties included.
    rng = np.random.default_rng(n)
    frames = [rng.integers(0, 8 if n % 2 else 256, (5, 7, 3), dtype=np.uint8) for _ in range(n)]
    before = [f.copy() for f in frames]
    expected = np.partition(np.stack(frames), n // 2, axis=0)[n // 2]
    got = temporal_median(frames)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    assert all(np.array_equal(a, b) for a, b in zip(frames, before, strict=True))  # inputs untouched
    got[...] = 0
    assert all(np.array_equal(a, b) for a, b in zip(frames, before, strict=True))  # no alias of an input
    with pytest.raises(ValueError, match="one shape"):
        temporal_median([frames[0], np.zeros((5, 8, 3), np.uint8)])


def test_bgsub_finds_a_walking_person_and_nothing_on_an_empty_frame(camera):
    floor, frames, boxes = walking_frames(camera, [(6.0, 5.0, 0.2, 0.0)])
    det = BgSubDetector(camera).fit(frames)
    d = det.detect(frames[20])
    assert isinstance(d, Detections) and len(d) == 1
    assert iou(d.xyxy[0], boxes[20][0]) > 0.75
    assert d.class_id[0] == PERSON_CLASS_ID and 0 < d.confidence[0] <= 1
    empty = det.detect(noisy(floor, np.random.default_rng(5)))
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)


def test_bgsub_splits_people_side_by_side_and_in_depth(camera):
    # Two people walking shoulder to shoulder, a third straight behind one of them.
    people = [(7.0, 4.0, 0.15, 0.0), (7.6, 4.0, 0.15, 0.0), (7.3, 6.5, 0.15, 0.0)]
    _, frames, boxes = walking_frames(camera, people)
    det = BgSubDetector(camera).fit(frames)
    for k in (10, 25):
        d = det.detect(frames[k])
        assert len(d) == 3, d.xyxy
        for truth in boxes[k]:
            assert max(iou(truth, b) for b in d.xyxy) > 0.5


def test_bgsub_batch_matches_single_and_validates(camera):
    _, frames, _ = walking_frames(camera, [(6.0, 5.0, 0.2, 0.0)], n=12)
    det = make_detector("bgsub", geometry=camera, plane=GroundPlane(20, 15))
    with pytest.raises(ValueError, match="no background"):
        det.detect(frames[0])
    det.fit(frames)
    batch = det.detect_batch(frames[:3])
    for f, b in zip(frames[:3], batch, strict=True):
        np.testing.assert_array_equal(det.detect(f).xyxy, b.xyxy)
    with pytest.raises(ValueError, match="frame size"):
        det.detect(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="unknown option"):
        make_detector("bgsub", geometry=camera, tresh=3)
    with pytest.raises(ValueError, match="work_width"):
        make_detector("bgsub", work_width=8)
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        make_detector("yolo")


def test_bgsub_without_calibration_learns_a_size_law(camera):
    # Homography only (no K/R/t): sizes come from the video itself.
    people = [
        (5.0, 3.0, 0.1, 0.05),
        (12.0, 8.0, -0.1, -0.02),
        (9.0, 5.0, 0.0, 0.1),
        (14.0, 2.0, -0.05, 0.1),
    ]
    _, frames, boxes = walking_frames(camera, people, n=40)
    plain = CameraGeometry("c01", camera.H, (W, H))
    det = BgSubDetector(plain).fit(frames)
    assert det.size is not None and det.size.size_px(np.array([0.0]), np.array([300.0]))[0][0] > 0
    d = det.detect(frames[30])
    hits = sum(max((iou(t, b) for b in d.xyxy), default=0) > 0.5 for t in boxes[30])
    assert hits >= 3


def test_fit_linear_size_recovers_the_law_despite_merged_blobs():
    rng = np.random.default_rng(0)
    v = rng.uniform(100, 700, 60)
    h = 0.4 * v - 20 + rng.normal(0, 2, 60)
    h[:15] *= 1.9  # merged pairs
    law = fit_linear_size(v, h, 0.35 * h)
    assert law is not None
    assert law.slope == pytest.approx(0.4, abs=0.03)
    assert law.aspect == pytest.approx(0.35, abs=0.02)
    assert fit_linear_size(v[:3], h[:3], h[:3]) is None


def test_sample_frames_from_video_and_folder(tmp_path: Path):
    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for k in range(30):
        writer.write(np.full((48, 64, 3), k * 8, np.uint8))
    writer.release()
    frames = sample_frames(video, 5)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    assert frames[0].mean() < frames[-1].mean()
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"{k:04d}.png"), np.full((8, 8, 3), 50 * k, np.uint8))
    assert [int(f.mean()) for f in sample_frames(folder, 10)] == [0, 50, 100, 150]
    with pytest.raises(FileNotFoundError):
        sample_frames(tmp_path / "missing.mp4", 3)


def test_mot_detector_reads_det_and_gt_files(tmp_path: Path):
    det_txt = tmp_path / "c07" / "det.txt"
    det_txt.parent.mkdir()
    det_txt.write_text(
        "1,-1,10,20,30,60,0.9,-1,-1,-1\n"
        "1,-1,100,20,30,60,0.4,-1,-1,-1\n"
        "3,-1,12,22,30,60,95,-1,-1,-1\n"
    )
    geo = CameraGeometry("c07", np.eye(3))
    det = make_detector("mot", geometry=geo, path=str(tmp_path / "{camera_id}" / "det.txt"))
    frame = np.zeros((4, 4, 3), np.uint8)
    first, second, third = det.detect_batch([frame, frame, frame])
    np.testing.assert_allclose(first.xyxy, [[10, 20, 40, 80], [100, 20, 130, 80]])
    assert len(second) == 0
    assert third.confidence[0] == 1.0  # scores above 1 are clipped for the trackers
    # A later chunk starts at its frame offset.
    det.prepare(None, frame_offset=2)
    assert len(det.detect(frame)) == 1
    gt_txt = tmp_path / "gt.txt"
    gt_txt.write_text("1,5,10,20,30,60,1,1,1.0\n1,6,50,20,30,60,0,1,1.0\n1,7,90,20,30,60,1,7,1.0\n")
    gt = MotDetector(gt_txt)
    assert len(gt.at(0)) == 1  # ignored row (conf 0) and static person (class 7) dropped
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        make_detector("mot", path=str(tmp_path / "nowhere.txt"))
    with pytest.raises(ValueError, match="needs option path"):
        make_detector("mot")


def test_torchvision_detector_loads_a_local_state_dict(tmp_path: Path):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    with pytest.raises(FileNotFoundError, match="tiny.pth"):
        make_detector(
            "torchvision", weights_dir=tmp_path, model=name, weights="tiny.pth", device="cpu"
        )
    torch.manual_seed(0)
    net = tv.models.get_model(name, weights=None, weights_backbone=None)
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    det = make_detector(
        "torchvision",
        weights_dir=tmp_path,
        model=name,
        weights="tiny.pth",
        device="cpu",
        score_threshold=0.0,
        batch_size=2,
    )
    frames = [
        np.random.default_rng(i).integers(0, 255, (120, 160, 3)).astype(np.uint8) for i in range(3)
    ]
    out = det.detect_batch(frames)
    assert len(out) == 3
    for d in out:
        assert isinstance(d, Detections)
        assert np.all(d.class_id == PERSON_CLASS_ID)
        assert d.xyxy.shape[1] == 4
    # A state dict of another architecture is refused with the file named.
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        make_detector(
            "torchvision", weights_dir=tmp_path, model=name, weights="other.pth", device="cpu"
        )
    with pytest.raises(ValueError, match="unknown torchvision detection model"):
        make_detector("torchvision", weights_dir=tmp_path, model="resnet50", weights="tiny.pth")


def _write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f)
    return folder


def test_bgsub_background_from_neighbouring_sub_videos_finds_someone_standing_still(camera, tmp_path: Path):
    rng = np.random.default_rng(3)
    floor = textured_floor()
    standing = person_box(camera, 10.0, 5.0)

    def frames(stand: bool, light: float = 1.0) -> list[np.ndarray]:
        out = []
        for _ in range(12):
            f = (floor * light).astype(np.uint8)
            if stand:
                draw_person(f, standing, (40, 40, 200))
            out.append(noisy(f, rng))
        return out

    current = _write_folder(tmp_path / "sub_video_02", frames(True))  # stands still the whole sub-video
    before = _write_folder(tmp_path / "sub_video_01", frames(False))
    after = _write_folder(tmp_path / "sub_video_03", frames(False))
    darker = _write_folder(tmp_path / "lights_off", frames(False, light=0.6))
    probe = cv2.imread(str(current / "0005.png"))

    alone = BgSubDetector(camera, bg_samples=12)
    alone.prepare(current)
    assert len(alone.detect(probe)) == 0  # the median of this sub-video alone takes them for floor

    cache = tmp_path / "cache"
    with_context = BgSubDetector(camera, bg_samples=12, sample_cache=cache)
    with_context.prepare(current, context=[before, after])
    assert with_context.context_used == 2
    found = with_context.detect(probe)
    assert len(found) == 1 and iou(found.xyxy[0], standing) > 0.6
    assert len(list(cache.glob("*.npz"))) == 3  # each sub-video sampled once, reused by its neighbours
    again = BgSubDetector(camera, bg_samples=12, sample_cache=cache)
    again.prepare(current, context=[before, after])
    assert np.array_equal(again.background, with_context.background)

    # A neighbour under other lighting (or a moved camera) does not join the background.
    relit = BgSubDetector(camera, bg_samples=12)
    relit.prepare(current, context=[darker, tmp_path / "missing"])
    assert relit.context_used == 0
    assert np.array_equal(relit.background, alone.background)


def test_someone_standing_most_of_the_time_is_uncovered_from_the_background(camera):
    rng = np.random.default_rng(4)
    floor = textured_floor()
    box = person_box(camera, 9.0, 6.0)
    samples = []
    for k in range(30):
        f = floor.copy()
        if k >= 9:  # walks in after 30 % of the recording and stays
            draw_person(f, box, (40, 40, 200))
        samples.append(noisy(f, rng))
    median = temporal_median(samples)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inside = (slice(y1 + 3, y2 - 3), slice(x1 + 3, x2 - 3))

    def err(img: np.ndarray) -> float:
        return float(np.abs(img[inside].astype(int) - floor[inside]).mean())

    assert err(median) > 30  # the median took them for floor
    fixed, regions = uncover_standing(samples, median, threshold=10.0)
    assert regions >= 1 and err(fixed) < 6
    # Elsewhere nothing changes.
    outside = np.ones(floor.shape[:2], bool)
    outside[y1 - 8 : y2 + 8, x1 - 8 : x2 + 8] = False
    assert np.array_equal(fixed[outside], median[outside])

    # People of all colours passing one spot leave no stable alternative: nothing to uncover.
    passing = []
    for k in range(30):
        f = floor.copy()
        if k % 3 == 0:
            draw_person(f, box, tuple(int(c) for c in rng.integers(0, 255, 3)))
        passing.append(noisy(f, rng))
    median = temporal_median(passing)
    unchanged, regions = uncover_standing(passing, median, threshold=10.0)
    assert regions == 0 and np.array_equal(unchanged, median)


def test_bgsub_box_ends_at_feet_seen_with_their_shadow_and_below_a_prop_that_hides_them(camera):
    """Someone shorter than the prior, in grey trousers, keeps their box at their
    feet when their shadow shows the floor they stand on; someone whose legs a prop hides gets
    the box down to where the calibration puts their feet."""
    rng = np.random.default_rng(3)
    floor = textured_floor(2)
    short = person_box(camera, 8.0, 5.0)
    short[1] = short[3] - 0.8 * (short[3] - short[1])  # 1.36 m tall, feet where the prior says
    hidden = person_box(camera, 12.5, 6.0)
    prop_top = int(hidden[1] + 0.6 * (hidden[3] - hidden[1]))

    def draw_prop(img: np.ndarray) -> None:
        cv2.rectangle(img, (int(hidden[0]) - 15, prop_top), (int(hidden[2]) + 15, H - 1), (30, 110, 200), -1)

    bg = floor.copy()
    draw_prop(bg)
    frames = []
    for k in range(30):
        f = bg.copy()
        if k % 3 == 0:  # present in a third of the frames: the background stays clean
            sx, sw = (short[0] + short[2]) / 2, short[2] - short[0]
            shadow = np.zeros(f.shape[:2], np.uint8)
            cv2.ellipse(shadow, (int(sx), int(short[3])), (int(0.8 * sw), int(0.15 * sw)), 0, 0, 360, 1, -1)
            f[shadow > 0] = (f[shadow > 0] * 0.6).astype(np.uint8)
            draw_person(f, short, (40, 40, 200))
            # Grey trousers: the colour of the floor in shadow, so not "solid" foreground.
            x1, y1, x2, y2 = short
            legs = (  # draw_person's legs
                slice(int(y1 + 0.55 * (y2 - y1)), int(y2)),
                slice(int(x1 + 0.15 * (x2 - x1)), int(x2 - 0.15 * (x2 - x1))),
            )
            f[legs] = (bg[legs].mean(axis=(0, 1)) * 0.6).astype(np.uint8)
            draw_person(f, hidden, (40, 160, 40))
            draw_prop(f)
        frames.append(noisy(f, rng))
    det = BgSubDetector(camera).fit(frames)
    d = det.detect(frames[0])
    assert len(d) == 2, d.xyxy
    by_x = d.xyxy[np.argsort(d.xyxy[:, 0])]
    got_short, got_hidden = by_x[0], by_x[1]
    h_short, h_hidden = short[3] - short[1], hidden[3] - hidden[1]
    assert abs(got_short[3] - short[3]) < 0.08 * h_short, (got_short, short)
    assert iou(got_short, short) > 0.7
    # Well below what shows above the prop, near the calibrated foot row.
    assert prop_top + 0.25 * h_hidden < got_hidden[3] < hidden[3] + 0.2 * h_hidden, (got_hidden, hidden)


def slanted_person(geo: CameraGeometry, x_m: float, y_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Image quadrilateral of an upright 1.7 m x 0.45 m person at (x_m, y_m), and its bounding box."""
    side = geo.R[0] * 0.225
    feet = np.array([x_m, y_m, 0.0])
    head = feet + [0.0, 0.0, 1.7]
    world = np.stack([feet - side, feet + side, head + side, head - side])
    cam = world @ geo.R.T + geo.t
    px = cam @ geo.K.T
    quad = px[:, :2] / px[:, 2:]
    return quad, np.concatenate([quad.min(axis=0), quad.max(axis=0)])


def draw_slanted(frame: np.ndarray, quad: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Legs (lower half) and torso in two colours, following the person's slant."""
    feet_l, feet_r, head_r, head_l = quad
    mid_l, mid_r = (feet_l + head_l) / 2, (feet_r + head_r) / 2
    cv2.fillPoly(frame, [np.round([feet_l, feet_r, mid_r, mid_l]).astype(np.int32)], (60, 50, 40))
    cv2.fillPoly(frame, [np.round([mid_l, mid_r, head_r, head_l]).astype(np.int32)], colour)


def test_bgsub_fits_people_seen_slanted_by_a_wide_camera_looking_down():
    # A wide lens looking down: at the sides of the image people lean outwards
    # by about a body width from feet to head.
    geo = look_at_camera((0.0, -6.0, 4.0), (0.0, 2.0, 0.0), f=320.0)
    rng = np.random.default_rng(3)
    floor = textured_floor(3)
    spots = [(-4.5, 1.5), (4.5, 1.0), (-5.0, 3.0), (4.0, 4.0)]
    frames, truths = [], []
    for k in range(12):
        img = floor.copy()
        x, y = spots[k % len(spots)]
        quad, box = slanted_person(geo, x + 0.1 * k, y)
        draw_slanted(img, quad, (40, 40, 200))
        frames.append(noisy(img, rng))
        truths.append(box)
    quad, _ = slanted_person(geo, *spots[1])
    lean = abs((quad[2, 0] + quad[3, 0]) - (quad[0, 0] + quad[1, 0])) / 2 / abs(quad[1, 0] - quad[0, 0])
    assert lean > 0.9  # the scene does test slant

    upright = BgSubDetector(geo, rectify=False).fit(frames)
    rectified = BgSubDetector(geo).fit(frames)
    assert upright.rectifier is None and rectified.rectifier is not None
    scores = {"upright": [], "rectified": []}
    for frame, truth in zip(frames[:8], truths[:8], strict=True):
        for name, det in (("upright", upright), ("rectified", rectified)):
            boxes = det.detect(frame).xyxy
            assert len(boxes) == 1, (name, boxes)
            scores[name].append(iou(boxes[0], truth))
    assert min(scores["rectified"]) > 0.85, scores
    assert np.mean(scores["rectified"]) > np.mean(scores["upright"]) + 0.02, scores


def test_vertical_rectifier_turns_world_verticals_into_columns():
    from spoton.detect import VerticalRectifier

    geo = look_at_camera((0.0, -8.0, 4.5), (0.0, 2.0, 0.0), f=260.0)
    r = VerticalRectifier.for_camera(geo.vertical_vp, (H, W), 1.0)
    assert r is not None
    for x_m, y_m in [(-5.0, 1.0), (0.0, 0.0), (4.0, 3.0), (2.0, -2.0)]:
        world = np.array([[x_m, y_m, 0.0], [x_m, y_m, 1.7]])
        cam = world @ geo.R.T + geo.t
        px = (cam @ geo.K.T)[:, :2] / (cam @ geo.K.T)[:, 2:]
        rect = cv2.perspectiveTransform(px.reshape(-1, 1, 2), r.H).reshape(-1, 2)
        assert abs(rect[0, 0] - rect[1, 0]) < 1e-6 * max(1.0, abs(rect[0, 0]))
    # The image centre keeps its place and scale; the canvas holds the whole view.
    centre = cv2.perspectiveTransform(np.array([[[W / 2, H / 2]]], np.float64), r.H)[0, 0]
    assert r.warp(np.ones((H, W), bool)).sum() > 0.8 * H * W
    assert 0 <= centre[0] < r.size[0] and 0 <= centre[1] < r.size[1]
    # A level camera already sees verticals as columns; one looking straight down sees them all meet.
    assert VerticalRectifier.for_camera(look_at_camera((0, -8, 1.5), (0, 10, 1.5)).vertical_vp, (H, W), 1.0) is None
    assert VerticalRectifier.for_camera(look_at_camera((0, -0.1, 8.0), (0, 0, 0)).vertical_vp, (H, W), 1.0) is None


def test_warping_only_the_foregrounds_part_of_the_canvas_changes_no_pixel():
    from spoton.detect import VerticalRectifier

    geo = look_at_camera((0.0, -8.0, 4.5), (0.0, 2.0, 0.0), f=260.0)
    r = VerticalRectifier.for_camera(geo.vertical_vp, (H, W), 1.0)
    assert r is not None
    rng = np.random.default_rng(7)
    for k in range(30):
        mask = np.zeros((H, W), np.uint8)
        for _ in range(k % 4 + 1):  # blobs anywhere, the image borders included
            x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
            mask[max(y - 20, 0) : y + int(rng.integers(1, 40)), max(x - 5, 0) : x + int(rng.integers(1, 12))] = 1
        mask |= (rng.random((H, W)) < 0.5).astype(np.uint8) * mask << 1  # a second bit, as the detector packs it
        assert np.array_equal(r.warp(mask, cv2.boundingRect(mask)), r.warp(mask))
    empty = np.zeros((H, W), np.uint8)
    assert r.warp(empty, cv2.boundingRect(empty)).shape == r.warp(empty).shape
    assert not r.warp(empty, cv2.boundingRect(empty)).any()


def test_the_cpp_boxes_back_gives_the_python_boxes_bit_for_bit():
    from spoton.compiled import native_boxes_back
    from spoton.detect import VerticalRectifier

    assert native_boxes_back() is not None, "SpotOn's C++ parts are not built: run `.venv/bin/spoton build-native`"
    rng = np.random.default_rng(11)
    compared = 0
    for eye, f in (((0.0, -8.0, 4.5), 260.0), ((3.0, -6.0, 6.0), 400.0), ((-5.0, -4.0, 3.0), 320.0)):
        geo = look_at_camera(eye, (0.0, 2.0, 0.0), f=f)
        r = VerticalRectifier.for_camera(geo.vertical_vp, (H, W), 1.0)
        assert r is not None
        cw, ch = r.size
        for k in range(25):
            body = np.zeros((ch, cw), bool)
            for _ in range(k % 5 + 1):  # slanted strips, ragged rows, holes; some at the canvas border
                x, y = int(rng.integers(-10, cw)), int(rng.integers(-10, ch))
                bh = int(rng.integers(1, 80))
                for row in range(max(y, 0), min(y + bh, ch)):
                    a = x + (row - y) // 3 + int(rng.integers(-2, 3))
                    body[row, max(a, 0) : max(a + int(rng.integers(0, 15)), 0)] = True
            body &= rng.random(body.shape) > 0.1
            n = int(rng.integers(0, 7))
            x1, y1 = rng.uniform(-20, cw, n), rng.uniform(-20, ch, n)
            boxes = np.stack([x1, y1, x1 + rng.uniform(0.5, 60, n), y1 + rng.uniform(0.5, 120, n)], 1)
            if k % 7 == 0:
                boxes = np.round(boxes)  # whole-pixel edges: floor and ceil agree
            fast = r.boxes_back(boxes, body, (H, W))
            slow = r.boxes_back(boxes, body, (H, W), native=False)
            np.testing.assert_array_equal(fast, slow)
            compared += n
    assert compared > 150


def test_the_cpp_shadow_test_gives_the_python_pixels_bit_for_bit(camera):
    from spoton.compiled import native_shadow_candidates

    assert native_shadow_candidates() is not None, "SpotOn's C++ parts are not built: run `spoton build-native`"
    _, frames, _ = walking_frames(camera, [(6.0, 5.0, 0.2, 0.0), (12.0, 4.0, -0.1, 0.05)], n=8)
    fast = BgSubDetector(camera, native=True).fit(frames)
    slow = BgSubDetector(camera, native=False).fit(frames)
    bg = fast.background.astype(np.float64)
    rng = np.random.default_rng(5)
    compared = cleared = shadowish = 0
    for k in range(12):
        # Shadows (the floor times one factor, 0.3-1.05: both limits crossed), grey and
        # coloured clothes, noise; the foreground mask covers some of each.
        coarse = rng.uniform(0.3, 1.05, (bg.shape[0] // 16 + 1, bg.shape[1] // 16 + 1))
        factor = coarse.repeat(16, 0).repeat(16, 1)[: bg.shape[0], : bg.shape[1], None]  # flat shadows
        frame = np.clip(bg * factor + rng.normal(0, 1.5 * (k % 3), bg.shape), 0, 255)
        patch = (rng.random(coarse.shape) < 0.3).repeat(16, 0).repeat(16, 1)[: bg.shape[0], : bg.shape[1]]
        frame[patch] = rng.integers(0, 256, (int(patch.sum()), 3))
        frame = frame.astype(np.uint8)
        mask = (rng.random(bg.shape[:2]) < 0.4 + 0.05 * k).astype(np.uint8)
        if k == 0:
            mask[:] = 0  # nothing to test
        a, b = mask.copy(), mask.copy()
        kept = fast._shadows(frame, a)
        np.testing.assert_array_equal(kept, slow._shadows(frame, b))
        np.testing.assert_array_equal(a, b)  # the same cast shadows cleared
        compared += int(mask.sum())
        cleared += int(mask.sum() - a.sum())
        shadowish += int(kept.sum())
    assert compared > 500_000 and cleared > 10_000 and shadowish > 10_000, (compared, cleared, shadowish)


def test_the_cpp_group_fitting_gives_the_python_boxes_bit_for_bit(camera):
    from spoton.compiled import native_fit_groups

    # `make venv` builds it (spoton build-native); a machine that cannot must say so here.
    assert native_fit_groups() is not None, "the C++ group fitting is not built: run `.venv/bin/spoton build-native`"
    # Crossings, people side by side and in depth, someone leaving the view: merged
    # groups exercise the greedy fit, the re-placing and the widening checks.
    people = [
        (5.0, 4.0, 0.15, 0.02),
        (5.6, 4.1, 0.15, 0.0),
        (9.0, 6.5, -0.1, -0.03),
        (12.0, 3.0, -0.12, 0.05),
        (7.3, 8.0, 0.05, -0.08),
        (15.5, 5.0, 0.12, 0.0),
    ]
    _, frames, _ = walking_frames(camera, people, n=40)
    slanted = look_at_camera((0.0, -6.0, 4.0), (0.0, 2.0, 0.0), f=320.0)
    _, wide, _ = walking_frames(slanted, [(-4.0, 1.5, 0.1, 0.0), (-3.6, 1.6, 0.1, 0.02), (3.5, 2.5, -0.1, 0.0)], n=30)
    compared = 0
    for geo, seq in ((camera, frames), (slanted, wide)):
        for rectify in (True, False):
            fast = BgSubDetector(geo, rectify=rectify, native=True).fit(seq)
            slow = BgSubDetector(geo, rectify=rectify, native=False).fit(seq)
            for f in seq:
                a, b = fast.detect(f), slow.detect(f)
                np.testing.assert_array_equal(a.xyxy, b.xyxy)
                np.testing.assert_array_equal(a.confidence, b.confidence)
                compared += len(a)
    assert compared > 300


def test_the_cpp_group_fitting_is_optional_and_says_what_it_needs(camera, monkeypatch, tmp_path):
    import spoton.compiled as compiled

    with pytest.raises(RuntimeError, match="cannot build SpotOn's C\\+\\+ parts"):
        compiled.build(compiler=str(tmp_path / "no-such-c++"))
    monkeypatch.setattr(compiled, "library", lambda: None)
    with pytest.raises(RuntimeError, match="spoton build-native"):
        compiled.area_down(np.zeros((6, 6, 3), np.uint8), 3)
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8)
    np.testing.assert_array_equal(  # OpenCV's own resize then
        compiled.resize_area(image, (40, 30)), cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="spoton build-native"):
        BgSubDetector(camera, native=True)
    _, frames, boxes = walking_frames(camera, [(6.0, 5.0, 0.2, 0.0)], n=12)
    det = BgSubDetector(camera).fit(frames)  # auto: the Python path when it is not built
    assert max(iou(boxes[6][0], b) for b in det.detect(frames[6]).xyxy) > 0.5


def test_the_cpp_library_is_rebuilt_not_trusted_when_a_source_is_newer(tmp_path, monkeypatch):
    import os
    import shutil

    import spoton.compiled as compiled

    sources = []
    for src in compiled.SOURCES:
        sources.append(tmp_path / src.name)
        shutil.copy(src, sources[-1])
    monkeypatch.setattr(compiled, "SOURCES", tuple(sources))
    monkeypatch.setattr(compiled, "LIBRARY", tmp_path / "_spoton.so")
    monkeypatch.setattr(compiled, "_lib", None)
    assert compiled.library() is None  # not built here yet
    monkeypatch.setattr(compiled, "_lib", None)
    assert compiled.build() == tmp_path / "_spoton.so"
    assert compiled.library() is not None and compiled.native_area_down() is not None
    # A source edited after the build: the old library is not used until rebuilt.
    later = compiled.LIBRARY.stat().st_mtime + 10
    os.utime(sources[1], (later, later))
    monkeypatch.setattr(compiled, "_lib", None)
    assert compiled.library() is None and compiled.native_fit_groups() is None
    image = np.random.default_rng(2).integers(0, 256, (30, 60, 3), np.uint8)
    np.testing.assert_array_equal(  # OpenCV's own resize meanwhile
        compiled.resize_area(image, (20, 10)), cv2.resize(image, (20, 10), interpolation=cv2.INTER_AREA))


def test_the_cpp_area_downscale_gives_opencvs_pixels_bit_for_bit():
    from spoton.compiled import area_down, native_area_down, resize_area

    assert native_area_down() is not None, "SpotOn's C++ parts are not built: run `.venv/bin/spoton build-native`"
    rng = np.random.default_rng(7)
    for k, (h, w), cn in [(3, (1080, 1920), 3), (3, (33, 48), 3), (4, (64, 96), 3), (5, (50, 35), 1),
                          (16, (32, 48), 3), (3, (9, 9), 4)]:
        image = rng.integers(0, 256, (h, w, cn), np.uint8).squeeze(-1 if cn == 1 else ())
        want = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(area_down(image, k), want, err_msg=f"k={k} {w}x{h}x{cn}")
        np.testing.assert_array_equal(resize_area(image, (w // k, h // k)), want)
    # every sum a block can have (all 255 for the top ones), and views: a crop, a flipped copy
    ramp = np.minimum(np.arange(9 * 300).reshape(9, 300, 1) // 5, 255).astype(np.uint8).repeat(3, 2)
    np.testing.assert_array_equal(area_down(ramp, 3), cv2.resize(ramp, (100, 3), interpolation=cv2.INTER_AREA))
    big = rng.integers(0, 256, (120, 180, 3), np.uint8)
    for view in (big[3:93, 6:156], big[::-1], big[:, ::-1]):
        h, w = view.shape[:2]
        want = cv2.resize(np.ascontiguousarray(view), (w // 3, h // 3), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(area_down(view, 3), want)
    for size in ((60, 40), (36, 24), (50, 30)):  # factors 3 and 5 go native, 3.6 to OpenCV: all its pixels
        np.testing.assert_array_equal(resize_area(big, size), cv2.resize(big, size, interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="dividing the image size"):
        area_down(big, 7)
    with pytest.raises(ValueError, match="uint8"):
        area_down(big.astype(np.float32), 3)


def test_bgsub_shrinks_1080p_frames_natively_with_the_same_detections(camera):
    # The detector's work image of a 1920x1080 frame comes from area_down; the Python
    # path (native=False) uses cv2.resize. Same pixels, so the same boxes.
    people = [(5.0, 4.0, 0.15, 0.02), (9.0, 6.5, -0.1, -0.03), (12.0, 3.0, -0.12, 0.05)]
    _, frames, boxes = walking_frames(camera, people, n=12)
    hd = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_LINEAR) for f in frames]
    K = np.diag([3.0, 3.0, 1.0]) @ camera.K  # the same camera with three times the pixels
    hd_camera = CameraGeometry("c01", homography_from_calibration(K, camera.R, camera.t), (1920, 1080), K,
                               camera.R, camera.t)
    fast = BgSubDetector(hd_camera, native=True).fit(hd)
    slow = BgSubDetector(hd_camera, native=False).fit(hd)
    np.testing.assert_array_equal(fast._to_work(hd[3]), cv2.resize(hd[3], (640, 360), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(fast.background, slow.background)
    found = 0
    for f, truth in zip(hd, boxes, strict=True):
        a, b = fast.detect(f), slow.detect(f)
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.confidence, b.confidence)
        found += sum(max((iou(3 * np.asarray(t), d) for d in a.xyxy), default=0) > 0.5 for t in truth)
    assert found >= 0.8 * sum(len(t) for t in boxes)


@pytest.mark.parametrize("bframes", [3, 0])
def test_background_samples_skip_undecoded_frames_yet_match_a_full_decode(tmp_path, monkeypatch, bframes):
    import av

    import spoton.detect as detect

    rng = np.random.default_rng(bframes)
    path = tmp_path / f"b{bframes}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"bframes": str(bframes), "g": "12"}
        for k in range(60):  # a moving gradient with noise: every frame differs
            img = np.clip(np.indices((96, 160)).sum(0)[..., None] + 3 * k + rng.integers(0, 40, (96, 160, 3)), 0, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    fast = detect.sample_frames(path, 9)
    assert detect._sample_skipping(path, set(range(0, 60, 7))) is not None  # the skipping path itself ran
    monkeypatch.setattr(detect, "_sample_skipping", lambda *a: None)  # OpenCV, every frame decoded
    full = detect.sample_frames(path, 9)
    assert len(fast) == len(full) == 9
    assert all(np.array_equal(a, b) for a, b in zip(fast, full, strict=True))
    # A truncated file: the frames before the damage, as a full decode gives them.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    monkeypatch.undo()
    partial = detect.sample_frames(cut, 9)
    monkeypatch.setattr(detect, "_sample_skipping", lambda *a: None)
    assert all(np.array_equal(a, b) for a, b in zip(partial, detect.sample_frames(cut, 9), strict=True))
