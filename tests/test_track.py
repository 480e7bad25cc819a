"""Per-camera trackers and the retrospective clean-up."""

import numpy as np
import pandas as pd
import pytest

from spoton.embed import ColorEmbedder
from spoton.track import (
    NATIVE_TRACKERS,
    TRACK_COLUMNS,
    TRACK_ID_STRIDE,
    Appearance,
    CameraTracker,
    PostprocessConfig,
    build_native,
    link_fragments,
    make_tracker,
    native_library,
    postprocess_tracks,
    split_at_appearance_changes,
    split_tracker_options,
)
from spoton.types import PERSON_CLASS_ID, Detections, FrameTracks


def dets(*boxes: tuple[float, float, float, float], conf: float = 0.9) -> Detections:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(xyxy), conf), np.full(len(xyxy), PERSON_CLASS_ID))


def moving_box(k: int, x0: float = 100.0, y0: float = 100.0, v: float = 3.0) -> tuple:
    return (x0 + v * k, y0, x0 + v * k + 40, y0 + 100)


FRAME = np.zeros((360, 640, 3), np.uint8)


@pytest.mark.parametrize("name", ["bytetrack", "ocsort", "botsort", "deepocsort"])
def test_ids_are_stable_for_moving_boxes(name):
    tracker = CameraTracker(name, camera_id="c01")
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for k in range(40):
        out = tracker.update(k, FRAME, dets(moving_box(k), moving_box(k, x0=400, v=-2)))
        assert isinstance(out, FrameTracks) and out.frame_idx == k and out.camera_id == "c01"
        for tid, box in zip(out.track_id, out.xyxy, strict=True):
            seen[0 if box[0] < 300 else 1].add(int(tid))
        if k >= 5:
            assert len(out) == 2
            np.testing.assert_allclose(out.confidence, 0.9, rtol=1e-5)
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]
    assert min(seen[0] | seen[1]) >= 1  # MOTChallenge ids are positive


def test_each_tracker_owns_its_id_space_and_chunks_are_offset():
    a = CameraTracker("bytetrack", camera_id="c01")
    b = CameraTracker("bytetrack", camera_id="c02", chunk_index=2)
    for k in range(10):
        ta = a.update(k, None, dets(moving_box(k)))
        tb = b.update(k, None, dets(moving_box(k), moving_box(k, x0=300)))
    assert set(ta.track_id.tolist()) == {1}
    assert set(tb.track_id.tolist()) == {2 * TRACK_ID_STRIDE + 1, 2 * TRACK_ID_STRIDE + 2}


def test_empty_frames_and_gaps():
    tracker = CameraTracker("bytetrack")
    out = tracker.update(0, FRAME, Detections.empty())
    assert len(out) == 0 and out.xyxy.shape == (0, 4) and out.embedding is None
    ids = set()
    for k in range(1, 30):
        d = dets(moving_box(k)) if not 12 <= k < 15 else Detections.empty()
        ids |= set(tracker.update(k, FRAME, d).track_id.tolist())
    assert len(ids) == 1  # a three-frame dropout keeps the identity


def test_embeddings_are_sampled_for_new_tracks_and_every_kth_frame():
    tracker = CameraTracker("bytetrack", embedder=ColorEmbedder(), embed_every=5)
    img = np.full((360, 640, 3), 120, np.uint8)
    sampled = []
    for k in range(1, 12):
        box = moving_box(k)
        img[:] = 120
        img[100:200, int(box[0]) : int(box[2])] = (0, 0, 200)
        out = tracker.update(k, img, dets(box))
        if out.embedding is not None and len(out):
            assert out.embedding.shape == (len(out), tracker.embedder.dim)
            sampled.append(k)
    # First frame the track is reported, then frames 5 and 10.
    assert sampled[0] <= 2 and 5 in sampled and 10 in sampled and 7 not in sampled


def test_appearance_trackers_use_the_embedder_or_fail_clearly():
    with pytest.raises(ValueError, match="strongsort.*reid_weights"):
        CameraTracker("strongsort")
    tracker = CameraTracker("strongsort", embedder=ColorEmbedder())
    img = np.full((360, 640, 3), 120, np.uint8)
    for k in range(10):
        out = tracker.update(k, img, dets(moving_box(k)))
    assert len(out) == 1 and out.embedding is not None
    with pytest.raises(ValueError, match="needs the frame"):
        tracker.update(10, None, dets(moving_box(10)))
    with pytest.raises(ValueError, match="does not apply"):
        CameraTracker("bytetrack", {"reid_weights": "osnet_x0_25_msmt17.pt"})


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown tracker 'sort'"):
        CameraTracker("sort")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['trak_thresh'\]"):
        make_tracker("bytetrack", trak_thresh=0.3)
    with pytest.raises(ValueError, match="box_source"):
        CameraTracker("bytetrack", {"box_source": "kalman"})
    opts, post = split_tracker_options({"track_buffer": 5, "min_frames": 3, "max_gap": 0})
    assert opts == {"track_buffer": 5} and post.min_frames == 3 and post.max_gap == 0
    with pytest.raises(ValueError, match="min_frames"):
        PostprocessConfig(min_frames=-1)


def noisy_crowd(seed: int, frames: int = 120) -> list[Detections]:
    """People walking and crossing, with box jitter, missed detections and false positives."""
    rng = np.random.default_rng(seed)
    people = [(rng.uniform(50, 550), rng.uniform(60, 250), rng.uniform(-3, 3), rng.uniform(-1, 1)) for _ in range(7)]
    out = []
    for k in range(frames):
        boxes, confs = [], []
        for x, y, vx, vy in people:
            if rng.random() < 0.1:
                continue  # missed
            cx, cy = x + vx * k + rng.normal(0, 2), y + vy * k + rng.normal(0, 2)
            boxes.append((cx - 15, cy - 40, cx + 15, cy + 40))
            confs.append(rng.uniform(0.55, 1.0))
        for _ in range(rng.integers(0, 3)):  # clutter
            cx, cy = rng.uniform(0, 640), rng.uniform(0, 360)
            boxes.append((cx - 10, cy - 25, cx + 10, cy + 25))
            confs.append(rng.uniform(0.1, 0.6))
        xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        out.append(Detections(xyxy, np.array(confs, np.float32), np.full(len(xyxy), PERSON_CLASS_ID)))
    return out


@pytest.mark.parametrize("name", NATIVE_TRACKERS)
def test_the_cpp_trackers_give_the_python_trackers_tracks(name):
    # `make venv` builds them (spoton build-native); a machine that cannot must say so here.
    assert native_library(name) is not None, (
        f"boxmot's C++ {name} is not built: run `.venv/bin/spoton build-native` and read its error"
    )
    assert build_native((name,)) == {name: native_library(name)}  # built once, then kept
    seq = noisy_crowd(seed=len(name))
    fast = CameraTracker(name, {"backend": "auto"}, camera_id="c01", chunk_index=1)
    slow = CameraTracker(name, {"backend": "python"}, camera_id="c01", chunk_index=1)
    assert (fast.backend, slow.backend) == ("cpp", "python")
    rows = 0
    for k, d in enumerate(seq):
        a, b = fast.update(k, FRAME, d), slow.update(k, FRAME, d)
        np.testing.assert_array_equal(a.track_id, b.track_id)  # same ids, numbered alike
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_array_equal(a.confidence, b.confidence)
        rows += len(a)
    assert rows > 3 * len(seq)  # the sequence really was tracked (7 people, some leave the view)


def test_the_tracker_backend_is_validated():
    with pytest.raises(ValueError, match="backend must be one of"):
        make_tracker("bytetrack", backend="rust")
    with pytest.raises(ValueError, match="'strongsort' has no C\\+\\+ backend"):
        make_tracker("strongsort", backend="cpp")
    with pytest.raises(ValueError, match=r"\['max_age'\] exist only in boxmot's Python"):
        make_tracker("bytetrack", backend="cpp", max_age=30)
    # auto takes Python where an option exists only there, and for trackers without C++.
    assert make_tracker("bytetrack", max_age=30).spoton_backend == "python"
    assert make_tracker("botsort").spoton_backend == "python"
    with pytest.raises(ValueError, match="no C\\+\\+ backend here"):
        build_native(("botsort",))


def table(rows: list[tuple[int, int, float, float, float, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["frame_idx", "track_id", "x1", "y1", "x2", "y2"])
    return df.assign(confidence=np.float32(0.9), class_id=np.int32(PERSON_CLASS_ID))


def walk(track_id: int, frames: range, x0: float = 100.0, v: float = 2.0) -> list[tuple]:
    return [(f, track_id, x0 + v * f, 100.0, x0 + v * f + 40, 200.0) for f in frames]


def test_postprocess_relinks_fragments_interpolates_and_drops_noise():
    df = table(walk(1, range(0, 30)) + walk(2, range(36, 60)) + walk(7, range(10, 13), x0=500))
    out, _ = postprocess_tracks(df, PostprocessConfig(min_frames=5, max_gap=10, link_gap=20))
    assert list(out.columns) == list(TRACK_COLUMNS)
    assert set(out["track_id"]) == {1}  # fragment 2 continues 1; 7 is too short
    assert out["frame_idx"].tolist() == list(range(60))  # the 6-frame gap is filled
    filled = out[(out.frame_idx > 29) & (out.frame_idx < 36)]
    np.testing.assert_allclose(filled["x1"], 100 + 2.0 * filled["frame_idx"], atol=1e-3)
    assert (filled["confidence"] < 0.9).all()  # interpolated rows are marked by a lower score
    assert out.dtypes["x1"] == np.float32 and out.dtypes["class_id"] == np.int32


def test_relinking_respects_motion_and_appearance():
    df = table(walk(1, range(0, 30)) + walk(2, range(36, 60), x0=400))  # jumps 300 px
    assert link_fragments(df, PostprocessConfig(link_gap=20)) == {}
    near = table(walk(1, range(0, 30)) + walk(2, range(36, 60)))
    e1, e2 = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    assert link_fragments(near, PostprocessConfig(link_gap=20), {1: e1, 2: e1}) == {2: 1}
    assert link_fragments(near, PostprocessConfig(link_gap=20), {1: e1, 2: e2}) == {}


def test_identity_swaps_are_cut_where_appearance_changes():
    df = table(walk(1, range(0, 80)))
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    frames = np.arange(0, 80, 5)
    samples = Appearance(frames, np.ones_like(frames), np.stack([a if f < 40 else b for f in frames]))
    out, relabelled = split_at_appearance_changes(df, samples, min_similarity=0.6)
    assert out["track_id"].nunique() == 2
    assert set(out.loc[out.frame_idx < 38, "track_id"]) == {1}
    assert set(out.loc[out.frame_idx >= 40, "track_id"]) == {2}
    ids, means, counts = relabelled.means()
    assert ids.tolist() == [1, 2] and counts.tolist() == [8, 8]
    np.testing.assert_allclose(means, [a, b])


def test_hidden_feet_are_completed_from_the_tracks_own_height():
    class Flat:  # a fronto-parallel camera: every person is 100 px tall
        def size_px(self, u, v):
            return np.full(np.shape(u), 100.0), np.full(np.shape(u), 40.0)

    rows = walk(1, range(0, 40))
    rows += [(f, 1, 100 + 2.0 * f, 100.0, 140 + 2.0 * f, 150.0) for f in range(40, 50)]  # legs hidden
    out, _ = postprocess_tracks(table(rows), PostprocessConfig(max_gap=0), size=Flat())
    hidden = out[out.frame_idx >= 40]
    np.testing.assert_allclose(hidden["y2"], 200.0, atol=3)
    assert (out[out.frame_idx < 40]["y2"] == 200.0).all()


def test_postprocess_of_nothing():
    empty = table([])
    out, samples = postprocess_tracks(empty, PostprocessConfig())
    assert out.empty and list(out.columns) == list(TRACK_COLUMNS)
    with pytest.raises(ValueError, match="lacks columns"):
        postprocess_tracks(pd.DataFrame({"frame_idx": [1]}), PostprocessConfig())


def test_a_track_restarted_while_the_old_one_coasted_is_relinked_but_neighbours_are_not():
    # The tracker opened track 2 on the same person three frames before track 1 ended.
    df = table(walk(1, range(0, 30)) + walk(2, range(27, 60)))
    cfg = PostprocessConfig(min_frames=5, max_gap=10, link_gap=20, link_overlap=10)
    assert link_fragments(df, cfg) == {2: 1}
    out, _ = postprocess_tracks(df, cfg)
    assert set(out["track_id"]) == {1}
    assert out["frame_idx"].tolist() == list(range(60))  # one row per frame where both existed
    # Someone walking alongside (30 px away, a third of a box height) overlaps in time too: not one person.
    side = table(walk(1, range(0, 30)) + walk(2, range(27, 60), x0=130.0))
    assert link_fragments(side, cfg) == {}
    # Nor does a track that starts before the other and outlives it.
    nested = table(walk(1, range(10, 30)) + walk(2, range(0, 60)))
    assert link_fragments(nested, cfg) == {}
    assert link_fragments(df, PostprocessConfig(link_gap=20, link_overlap=0)) == {}


def test_a_stale_tail_overlapping_its_successor_is_trimmed():
    # Track 2 took over the person at frame 25; track 1 lingered, drifting, until 31.
    stale = [
        (f, 1, 100 + 2.0 * f + 3 * max(0, f - 24), 100.0, 140 + 2.0 * f + 3 * max(0, f - 24), 200.0) for f in range(32)
    ]
    df = table(stale + walk(2, range(25, 60)))
    from spoton.track import trim_handovers

    out = trim_handovers(df, max_overlap=12)
    assert out.loc[out.track_id == 1, "frame_idx"].max() == 24
    assert out.loc[out.track_id == 2, "frame_idx"].tolist() == list(range(25, 60))
    # Someone else far away, or a long overlap (two people side by side), is left alone.
    far = table(walk(1, range(0, 32)) + walk(2, range(25, 60), x0=400.0))
    assert trim_handovers(far, max_overlap=12).equals(far)
    long = table(walk(1, range(0, 60)) + walk(2, range(10, 80), x0=110.0))
    assert trim_handovers(long, max_overlap=12).equals(long)
