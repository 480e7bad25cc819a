"""Cross-camera association: cost terms, hard constraints, gallery, fusion.

Scenes are built here: pinhole cameras around a 20 m x 15 m floor watch people
walking straight lines; each camera's view of a person becomes a tracklet with
its foot point projected back to the floor, as the per-camera pipeline does.
"""

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoton.associate import (
    AssociationConfig,
    IdentityGallery,
    _agglomerate,
    _foot_sigma,
    associate,
    camera_overlap,
    fuse_positions,
)
from spoton.config import Environment
from spoton.geometry import CameraGeometry, GroundPlane
from spoton.types import Tracklet

PLANE = GroundPlane(20.0, 15.0)
SIZE = (1280, 720)
PERSON_HEIGHT_M = 1.7


def _camera(cid: str, at: tuple[float, float], look: tuple[float, float], height: float = 4.0) -> CameraGeometry:
    centre = np.array([at[0], at[1], height])
    fwd = np.array([look[0], look[1], 0.0]) - centre
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(fwd, right), fwd])  # x right, y down, z forward
    t = -R @ centre
    K = np.array([[800.0, 0, SIZE[0] / 2], [0, 800.0, SIZE[1] / 2], [0, 0, 1]])
    H = np.linalg.inv(K @ np.column_stack([R[:, 0], R[:, 1], t]))
    # Positive scale keeps w > 0 for floor points in front of the camera.
    return CameraGeometry(cid, H / abs(H[2, 2]), SIZE, K, R, t)


def _env(cameras: list[CameraGeometry], fps: float = 10.0) -> Environment:
    return Environment(
        environment_id="test",
        cameras=tuple(c.camera_id for c in cameras),
        plane=PLANE,
        calibration={c.camera_id: c for c in cameras},
        videos_url="/nonexistent",
        video_dir="video_test",
        fps=fps,
    )


CORNERS = [
    _camera("c1", (-1.0, -1.0), (10.0, 7.5)),
    _camera("c2", (21.0, -1.0), (10.0, 7.5)),
    _camera("c3", (21.0, 16.0), (10.0, 7.5)),
    _camera("c4", (-1.0, 16.0), (10.0, 7.5)),
]


def _boxes(cam: CameraGeometry, xy: np.ndarray) -> np.ndarray:
    """Image boxes of people standing at floor points (NaN rows when behind the camera)."""
    pts = np.column_stack([xy, np.zeros(len(xy))])
    head = pts + [0.0, 0.0, PERSON_HEIGHT_M]

    def px(p: np.ndarray) -> np.ndarray:
        c = (cam.K @ (cam.R @ p.T + cam.t[:, None])).T
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(c[:, 2:] > 0, c[:, :2] / c[:, 2:], np.nan)

    foot, top = px(pts), px(head)
    h = foot[:, 1] - top[:, 1]
    return np.column_stack([foot[:, 0] - h / 4, top[:, 1], foot[:, 0] + h / 4, foot[:, 1]])


def _observe(
    cam: CameraGeometry,
    track_id: int,
    frames: np.ndarray,
    xy: np.ndarray,
    rng: np.random.Generator | None = None,
    noise_px: float = 2.0,
    embedding: np.ndarray | None = None,
) -> list[Tracklet]:
    """The camera's tracklets of one person: one per contiguous run of visible frames."""
    box = _boxes(cam, xy)
    if rng is not None:
        box = box + rng.normal(0.0, noise_px, box.shape)
    w, h = SIZE
    vis = np.isfinite(box).all(axis=1) & (box[:, 0] >= 0) & (box[:, 2] < w) & (box[:, 1] >= 0) & (box[:, 3] < h)
    out = []
    runs = np.split(np.flatnonzero(vis), np.flatnonzero(np.diff(np.flatnonzero(vis)) > 1) + 1)
    for k, idx in enumerate(r for r in runs if r.size):
        out.append(
            Tracklet(
                camera_id=cam.camera_id,
                track_id=track_id * 100 + k,
                frame_idx=frames[idx],
                xyxy=box[idx],
                map_xy=cam.boxes_to_map(box[idx], PLANE),
                confidence=np.ones(idx.size),
                embedding=embedding,
            )
        )
    return out


def _walk(
    start: tuple[float, float], velocity: tuple[float, float], frames: np.ndarray, fps: float = 10.0
) -> np.ndarray:
    return np.asarray(start) + np.outer((frames - frames[0]) / fps, velocity)


def _owners(result, tracklets: list[Tracklet], person_of: dict) -> dict[int, set[int]]:
    """global id -> set of true persons it holds."""
    out: dict[int, set[int]] = {}
    for t in tracklets:
        out.setdefault(result.global_ids[t.key], set()).add(person_of[t.key])
    return out


# ----------------------------------------------------------------- cost terms


def test_foot_error_grows_with_distance_and_at_the_border() -> None:
    cam = CORNERS[0]
    config = AssociationConfig()
    near, far = _boxes(cam, np.array([[3.0, 3.0], [15.0, 12.0]]))
    sigma = _foot_sigma(np.stack([near, far]), cam, SIZE, config)
    assert config.sigma_floor_m < sigma[0] < sigma[1] <= config.sigma_max_m
    cut = near.copy()
    cut[3] = SIZE[1] - 1  # feet below the image
    assert _foot_sigma(cut[None], cam, SIZE, config)[0] > sigma[0]
    assert _foot_sigma(np.zeros((0, 4)), cam, SIZE, config).shape == (0,)


def test_camera_overlap_comes_from_geometry() -> None:
    left = _camera("l", (2.0, -1.0), (2.0, 2.0))
    right = _camera("r", (18.0, -1.0), (18.0, 2.0))
    env = _env([*CORNERS[:2], left, right])
    ov = camera_overlap(env, ["c1", "c2", "l", "r"], {}, 0.5)
    assert np.allclose(np.diag(ov), 1.0)
    assert ov[0, 1] > 0.3  # two corner cameras facing the centre share most of the floor
    assert ov[2, 3] == 0.0  # narrow views at opposite ends share none
    # Without image sizes the extent of the observed boxes stands in.
    no_size = _env([CameraGeometry("c1", CORNERS[0].H), CameraGeometry("c2", CORNERS[1].H)])
    boxes = {"c1": np.array([[0, 0, 1280, 720.0]]), "c2": np.array([[0, 0, 1280, 720.0]])}
    assert camera_overlap(no_size, ["c1", "c2"], boxes, 0.5)[0, 1] == pytest.approx(ov[0, 1])


def test_agglomeration_respects_cannot_links() -> None:
    none = (np.zeros(0, int), np.zeros(0, int))
    ones = np.ones(2)
    # 0-1 and 1-2 are cheap but 0 and 2 can never be together: only one edge survives.
    edges = (np.array([0, 1]), np.array([1, 2]), np.array([0.1, 0.2]), ones)
    labels = _agglomerate(3, edges, (np.array([0]), np.array([2])), 1.0, lambda a, b: True)
    assert labels[0] == labels[1] != labels[2]
    # A refused merge (callback) behaves like a cannot-link.
    labels = _agglomerate(3, edges, none, 1.0, lambda a, b: len(a) + len(b) < 3)
    assert labels[0] == labels[1] != labels[2]


def test_agglomeration_averages_weighted_pair_costs() -> None:
    none = (np.zeros(0, int), np.zeros(0, int))
    # {0, 1} then 2: mean of 0.2 and 1.9 is above 1, so 2 stays apart ...
    edges = (np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.1, 0.2, 1.9]), np.ones(3))
    assert len(set(_agglomerate(3, edges, none, 1.0, lambda a, b: True))) == 2
    # ... unless the cheap pair rests on far more evidence (common frames).
    heavy = (*edges[:3], np.array([1.0, 9.0, 1.0]))
    assert len(set(_agglomerate(3, heavy, none, 1.0, lambda a, b: True))) == 1


# ------------------------------------------------------------ association


def _crowd(rng: np.random.Generator, n_people: int = 4, frames: int = 60) -> tuple[list[Tracklet], dict]:
    f = np.arange(frames)
    tracklets, person_of = [], {}
    for p in range(n_people):
        start = (rng.uniform(4, 16), rng.uniform(3, 12))
        vel = rng.uniform(-0.8, 0.8, 2)
        xy = _walk(start, vel, f)
        for cam in CORNERS:
            for t in _observe(cam, p + 1, f, xy, rng):
                tracklets.append(t)
                person_of[t.key] = p
    return tracklets, person_of


def test_overlapping_cameras_give_one_id_per_person() -> None:
    tracklets, person_of = _crowd(np.random.default_rng(3))
    res = associate(tracklets, _env(CORNERS))
    owners = _owners(res, tracklets, person_of)
    assert all(len(p) == 1 for p in owners.values())
    assert len(owners) == 4
    assert sorted(owners) == [1, 2, 3, 4]
    assert res.stats["pairs_scored"] > 0 and res.stats["clusters"] == 4


def test_ids_do_not_depend_on_input_order() -> None:
    tracklets, _ = _crowd(np.random.default_rng(5))
    a = associate(tracklets, _env(CORNERS)).global_ids
    b = associate(list(reversed(tracklets)), _env(CORNERS)).global_ids
    assert a == b


def test_people_far_apart_at_the_same_time_stay_apart() -> None:
    f = np.arange(30)
    a = _observe(CORNERS[0], 1, f, _walk((6.0, 6.0), (0.3, 0.0), f))[0]
    near = _observe(CORNERS[1], 2, f, _walk((8.0, 6.0), (0.3, 0.0), f))[0]
    far = _observe(CORNERS[2], 3, f, _walk((12.5, 6.0), (0.3, 0.0), f))[0]
    res = associate([a, near, far], _env(CORNERS), AssociationConfig(min_identity_s=0))
    assert len({res.global_ids[t.key] for t in (a, near, far)}) == 3
    # 2 m apart is close enough to be scored and found impossible; 4.5 m is never scored.
    assert res.stats["cannot_link"] == 1


def test_same_camera_tracklets_overlapping_in_time_stay_apart() -> None:
    f = np.arange(30)
    xy = _walk((8.0, 7.0), (0.5, 0.0), f)
    (a,) = _observe(CORNERS[0], 1, f, xy)
    dup = Tracklet("c1", 99, a.frame_idx[5:], a.xyxy[5:] + 1.0, a.map_xy[5:], a.confidence[5:])
    (b,) = _observe(CORNERS[1], 2, f, xy)
    res = associate([a, dup, b], _env(CORNERS), AssociationConfig(min_identity_s=0))
    assert res.global_ids[a.key] != res.global_ids[dup.key]
    assert res.global_ids[b.key] in (res.global_ids[a.key], res.global_ids[dup.key])


def test_id_switch_is_linked_and_impossible_jumps_are_not() -> None:
    f = np.arange(80)
    xy = _walk((5.0, 6.0), (1.0, 0.0), f)
    (whole,) = _observe(CORNERS[0], 1, f, xy)
    first = Tracklet("c1", 1, whole.frame_idx[:40], whole.xyxy[:40], whole.map_xy[:40], whole.confidence[:40])
    # Three frames lost, then a new tracker id continues the same walk.
    second = Tracklet("c1", 2, whole.frame_idx[43:], whole.xyxy[43:], whole.map_xy[43:], whole.confidence[43:])
    # Someone appearing 8 m away one frame later cannot be the same person.
    g = np.arange(41, 70)
    (other,) = _observe(CORNERS[0], 3, g, _walk((13.0, 12.0), (0.0, -1.0), g, 10.0))
    res = associate([first, second, other], _env(CORNERS[:1]))
    assert res.global_ids[first.key] == res.global_ids[second.key]
    assert res.global_ids[other.key] != res.global_ids[first.key]
    assert res.stats["temporal_links"] == 1


def test_long_gap_reentry_needs_appearance() -> None:
    cams = [_camera("l", (2.0, -1.0), (2.0, 2.0)), _camera("r", (18.0, -1.0), (18.0, 2.0))]
    emb_a = np.eye(8)[0]
    emb_b = np.eye(8)[1]
    f1, f2 = np.arange(0, 30), np.arange(300, 330)  # 27 s apart: motion says nothing
    a1 = _observe(cams[0], 1, f1, _walk((2.0, 2.0), (0.0, 0.3), f1), embedding=emb_a)[0]
    b1 = _observe(cams[0], 2, f1, _walk((3.0, 2.5), (0.0, 0.3), f1), embedding=emb_b)[0]
    a2 = _observe(cams[1], 3, f2, _walk((18.0, 2.0), (0.0, 0.3), f2), embedding=emb_a + 0.05)[0]
    res = associate([a1, b1, a2], _env(cams))
    assert res.global_ids[a1.key] == res.global_ids[a2.key] != res.global_ids[b1.key]
    plain = [Tracklet(t.camera_id, t.track_id, t.frame_idx, t.xyxy, t.map_xy, t.confidence) for t in (a1, b1, a2)]
    assert len(set(associate(plain, _env(cams)).global_ids.values())) == 3


def test_tiny_tracklets_still_get_an_id() -> None:
    f = np.arange(2)
    (t,) = _observe(CORNERS[0], 1, f, _walk((8.0, 8.0), (0.0, 0.0), f))
    res = associate([t], _env(CORNERS), AssociationConfig(min_identity_s=0))
    assert res.global_ids == {t.key: 1}


def test_a_brief_track_no_other_camera_confirms_is_no_person() -> None:
    f = np.arange(20)  # 2 s at 10 fps
    person = _walk((8.0, 8.0), (0.4, 0.0), np.arange(60))
    seen = [t for cam in CORNERS for t in _observe(cam, 1, np.arange(60), person)]
    (ghost,) = _observe(CORNERS[0], 9, f, _walk((14.0, 4.0), (0.0, 0.0), f))  # where all four cameras look
    res = associate([*seen, ghost], _env(CORNERS))
    assert ghost.key not in res.global_ids and res.stats["noise_tracklets"] == 1
    assert {res.global_ids[t.key] for t in seen} == {1} and res.gallery.next_id == 2
    # Where no other camera looks, a brief track is all the evidence there is: it stays.
    alone = associate([ghost], _env(CORNERS[:1]))
    assert alone.global_ids == {ghost.key: 1}
    # Long enough, it is someone (a camera may see a person the others' views miss).
    assert ghost.key in associate([*seen, ghost], _env(CORNERS), AssociationConfig(min_identity_s=1.0)).global_ids


def test_bad_inputs_are_rejected() -> None:
    f = np.arange(5)
    (t,) = _observe(CORNERS[0], 1, f, _walk((8.0, 8.0), (0.0, 0.0), f))
    with pytest.raises(ValueError, match="duplicate"):
        associate([t, t], _env(CORNERS))
    with pytest.raises(ValueError, match="gate_z"):
        AssociationConfig.model_validate({"gate_z": -1})
    with pytest.raises(ValueError, match="not_a_knob"):
        AssociationConfig.model_validate({"not_a_knob": 1})
    empty = associate([], _env(CORNERS))
    assert empty.global_ids == {} and empty.stats["clusters"] == 0


@st.composite
def _tracklet_sets(draw) -> list[Tracklet]:
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        cam = draw(st.sampled_from(["c1", "c2", "c3"]))
        start = draw(st.integers(0, 40))
        length = draw(st.integers(1, 20))
        x0, y0 = draw(st.floats(0, 20)), draw(st.floats(0, 15))
        vx, vy = draw(st.floats(-0.3, 0.3)), draw(st.floats(-0.3, 0.3))
        k = np.arange(length)
        xy = np.column_stack([x0 + vx * k, y0 + vy * k])
        if draw(st.booleans()):
            xy[draw(st.integers(0, length - 1))] = np.nan  # an off-plane frame
        box = np.column_stack([k * 0 + 600.0, k * 0 + 300.0, k * 0 + 640.0, k * 0 + 400.0])
        out.append(Tracklet(cam, i, start + k, box, xy, np.ones(length)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tracklet_sets())
def test_no_identity_holds_overlapping_tracklets_of_one_camera(tracklets: list[Tracklet]) -> None:
    env = _env(CORNERS[:3])
    # A generous config makes merging tempting, so the constraints do the work.
    config = AssociationConfig(
        gate_z=50.0, max_match_distance_m=25.0, link_tolerance_m=20.0, max_speed_mps=100.0, min_identity_s=0
    )
    res = associate(tracklets, env, config)
    # Every tracklet gets an id but the duplicates of a person pass 1 left out (reported as noise).
    keys = {t.key for t in tracklets}
    assert set(res.global_ids) <= keys and len(keys - set(res.global_ids)) == res.stats["noise_tracklets"]
    assert min(res.global_ids.values()) >= 1
    by_id: dict[int, list[Tracklet]] = {}
    for t in tracklets:
        if t.key in res.global_ids:
            by_id.setdefault(res.global_ids[t.key], []).append(t)
    for members in by_id.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if a.camera_id == b.camera_id:
                    assert a.last_frame < b.first_frame or b.last_frame < a.first_frame


# ------------------------------------------------------------------ gallery


def test_gallery_round_trips_through_npz() -> None:
    tracklets, _ = _crowd(np.random.default_rng(9), n_people=3, frames=20)
    emb = np.random.default_rng(1).normal(size=(len(tracklets), 16))
    tracklets = [
        Tracklet(
            t.camera_id,
            t.track_id,
            t.frame_idx,
            t.xyxy,
            t.map_xy,
            t.confidence,
            e / np.linalg.norm(e),
        )
        for t, e in zip(tracklets, emb, strict=True)
    ]
    gallery = associate(tracklets, _env(CORNERS)).gallery
    buf = io.BytesIO()
    np.savez(buf, **gallery.to_npz())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        back = IdentityGallery.from_npz(dict(npz))
    assert len(back) == len(gallery) == 3 and back.next_id == gallery.next_id == 4
    for name in (
        "global_id",
        "embedding",
        "last_xy",
        "last_velocity",
        "last_frame",
        "last_cameras",
    ):
        np.testing.assert_array_equal(getattr(back, name), getattr(gallery, name))
    one = {k: v[:1] for k, v in gallery.to_npz().items() if k != "next_id"}
    with pytest.raises(ValueError, match="next_id"):
        IdentityGallery(**one, next_id=int(one["global_id"][0]))
    with pytest.raises(ValueError, match="last_xy"):
        IdentityGallery(**dict(one, last_xy=np.zeros((0, 2))))


def test_identities_continue_across_chunks() -> None:
    rng = np.random.default_rng(11)
    f = np.arange(100)
    walks = [_walk((4.0, 4.0), (0.6, 0.2), f), _walk((15.0, 11.0), (-0.5, -0.1), f)]
    chunks = []
    for lo, hi in ((0, 50), (50, 100)):
        part = []
        for p, xy in enumerate(walks):
            for cam in CORNERS:
                # Track ids restart per chunk, as the pipeline numbers them.
                part += _observe(cam, lo * 1000 + p, f[lo:hi], xy[lo:hi], rng)
        chunks.append(part)
    first = associate(chunks[0], _env(CORNERS))
    g = np.arange(60, 100)
    newcomer = _observe(CORNERS[0], 77777, g, _walk((10.0, 2.0), (0.0, 0.5), g), rng)
    second = associate(chunks[1] + newcomer, _env(CORNERS), gallery=first.gallery)
    ids_before = {(t.camera_id, t.track_id % 1000): first.global_ids[t.key] for t in chunks[0]}
    ids_after = {(t.camera_id, t.track_id % 1000): second.global_ids[t.key] for t in chunks[1]}
    assert ids_before == ids_after
    assert second.stats["gallery_matches"] == 2
    assert {second.global_ids[t.key] for t in newcomer} == {3}
    assert second.gallery.next_id == 4


# ------------------------------------------------------------------- fusion


def test_fuse_positions_of_nothing_is_an_empty_table() -> None:
    cols = ["camera_id", "frame_idx", "track_id", "x1", "y1", "x2", "y2", "map_x", "map_y"]
    out = fuse_positions(pd.DataFrame({c: [] for c in cols}), {}, _env(CORNERS))
    assert list(out.columns) == ["frame_idx", "global_id", "map_x", "map_y", "n_cameras"]
    assert out.empty and out["n_cameras"].dtype == np.int32
    with pytest.raises(ValueError, match="map_x"):
        fuse_positions(pd.DataFrame({"camera_id": []}), {}, _env(CORNERS))


def test_fuse_positions_trusts_near_cameras_and_drops_outliers() -> None:
    truth = np.array([[4.0, 4.0]])
    rows = []
    for cam, offset in zip(CORNERS, ([0.05, 0.0], [0.3, 0.0], [-0.3, 0.0], [4.0, 4.0]), strict=True):
        box = _boxes(cam, truth)[0]
        x, y = truth[0] + offset
        rows.append((cam.camera_id, 7, 1, *box, x, y))
    rows.append(("c1", 8, 1, *_boxes(CORNERS[0], truth)[0], np.nan, np.nan))
    df = pd.DataFrame(
        rows,
        columns=["camera_id", "frame_idx", "track_id", "x1", "y1", "x2", "y2", "map_x", "map_y"],
    )
    ids = {(c.camera_id, 1): 5 for c in CORNERS}
    out = fuse_positions(df, ids, _env(CORNERS))
    assert out["frame_idx"].tolist() == [7, 8]
    seen, lost = out.iloc[0], out.iloc[1]
    # c4's point is 5.7 m off and dropped; c1 (closest to the person) dominates the mean.
    assert seen["n_cameras"] == 3
    assert abs(seen["map_x"] - 4.0) < 0.1 and abs(seen["map_y"] - 4.0) < 1e-6
    assert lost["n_cameras"] == 0 and np.isnan(lost["map_x"])


def test_a_cameras_track_cut_by_the_chunk_border_keeps_its_identity() -> None:
    """Boxes continuing in the same camera decide, even when the floor positions after the border are off."""
    rng = np.random.default_rng(5)
    f = np.arange(100)
    walks = [_walk((6.0, 5.0), (0.5, 0.0), f), _walk((12.0, 9.0), (-0.4, 0.1), f)]
    cam = CORNERS[0]
    first_part, second_part = [], []
    for p, xy in enumerate(walks):
        first_part += _observe(cam, p, f[:50], xy[:50], rng)
        for t in _observe(cam, 1000 + p, f[50:], xy[50:], rng):
            # Feet mis-placed after the border (hidden behind a prop, say): 3 m off on the floor.
            second_part.append(replace_map(t, t.map_xy + np.float32(3.0)))
    first = associate(first_part, _env([cam]))
    plain = associate(second_part, _env([cam]), gallery=replace_tails(first.gallery))
    assert plain.stats["handoffs"] == 0 and plain.stats["gallery_matches"] == 0  # the floor says: new people
    second = associate(second_part, _env([cam]), gallery=first.gallery)
    assert second.stats["handoffs"] == 2
    before = {t.track_id % 1000: first.global_ids[t.key] for t in first_part}
    after = {t.track_id % 1000: second.global_ids[t.key] for t in second_part}
    assert before == after and len(set(after.values())) == 2
    assert second.gallery.tail_camera.tolist() == ["c1", "c1"]
    assert sorted(second.gallery.tail_frame.tolist()) == [99, 99]


def replace_map(t: Tracklet, map_xy: np.ndarray) -> Tracklet:
    return Tracklet(t.camera_id, t.track_id, t.frame_idx, t.xyxy, map_xy, t.confidence, t.embedding)


def replace_tails(gallery: IdentityGallery) -> IdentityGallery:
    """The gallery without its handoff boxes (as galleries written before they existed)."""
    arrays = {k: v for k, v in gallery.to_npz().items() if not k.startswith("tail_")}
    return IdentityGallery.from_npz(arrays)


def test_a_long_tracklet_ending_on_someone_else_keeps_its_person() -> None:
    """c1's tracker follows P for 8 s, then hands P's track to Q (an id swap) and
    starts a new track on P. P's long view must keep P's id, not the 2 s one."""
    rng = np.random.default_rng(4)
    f = np.arange(100)
    p_xy = _walk((6.0, 6.0), (0.3, 0.0), f)
    q_xy = _walk((6.0, 8.0), (0.3, 0.0), f)
    (a,) = _observe(CORNERS[1], 1, f, p_xy, rng)  # c2 sees P
    (b,) = _observe(CORNERS[1], 2, f, q_xy, rng)  # ... and Q
    swapped = np.where((f < 80)[:, None], p_xy, q_xy)
    (long,) = _observe(CORNERS[0], 1, f, swapped, rng)
    (short,) = _observe(CORNERS[0], 2, f[80:], p_xy[80:], rng)
    (q1,) = _observe(CORNERS[0], 3, f[:80], q_xy[:80], rng)
    res = associate([a, b, long, short, q1], _env(CORNERS[:2]), AssociationConfig(min_identity_s=0))
    ids = res.global_ids
    assert ids[long.key] == ids[a.key] != ids[b.key]
    assert ids[short.key] != ids[a.key]
    assert ids[q1.key] == ids[b.key]


def test_a_handoff_against_the_floor_yields_to_one_the_floor_confirms() -> None:
    """Two clusters after the border both continue P's boxes (in two cameras); one also continues P on the floor."""
    rng = np.random.default_rng(8)
    f = np.arange(100)
    path = _walk((6.0, 5.0), (0.5, 0.0), f)
    c1, c2 = CORNERS[0], CORNERS[1]
    first = associate(_observe(c1, 1, f[:50], path[:50], rng) + _observe(c2, 2, f[:50], path[:50], rng), _env([c1, c2]))
    (pid,) = set(first.global_ids.values())
    on_floor = _observe(c1, 1001, f[50:], path[50:], rng)
    # c2's track after the border starts on P's box, but its feet land 4 m away (a
    # mis-placed box): a cluster of its own, which the floor says cannot be P.
    off_floor = [replace_map(t, t.map_xy + np.float32(4.0)) for t in _observe(c2, 1002, f[50:], path[50:], rng)]
    second = associate(on_floor + off_floor, _env([c1, c2]), gallery=first.gallery)
    assert {second.global_ids[t.key] for t in on_floor} == {pid}
    assert {second.global_ids[t.key] for t in off_floor} != {pid}


def test_clusters_split_by_a_duplicate_box_are_reunited() -> None:
    """c3's tracker follows P all along and, for 2 s, also gives P a second box.

    The duplicate fits c1's brief view exactly, so the two form a cluster that
    can never merge with P's long views (two c3 boxes at once). Everything else
    says one person: the duplicate is left out and P keeps one identity.
    """
    rng = np.random.default_rng(11)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.4, 0.1), f)
    c1, c2, c3 = CORNERS[0], CORNERS[1], CORNERS[2]
    (brief,) = _observe(c1, 1, f[40:60], path[40:60] + 0.3)
    (dup,) = _observe(c3, 9, f[40:60], path[40:60] + 0.3)
    (long2,) = _observe(c2, 2, f, path, rng)
    (long3,) = _observe(c3, 3, f, path, rng)
    tracklets = [brief, dup, long2, long3]
    off = associate(tracklets, _env([c1, c2, c3]), AssociationConfig(min_identity_s=0, reunite_max_cost=0))
    assert off.global_ids[brief.key] != off.global_ids[long2.key]  # the split this is about
    res = associate(tracklets, _env([c1, c2, c3]), AssociationConfig(min_identity_s=0))
    ids = res.global_ids
    assert ids[brief.key] == ids[long2.key] == ids[long3.key]
    assert res.stats["reunited"] == 1
    # The duplicate is P again, not someone new: it opens no identity, however long it is.
    assert dup.key not in ids and res.gallery.next_id == 2


def test_a_conflict_that_would_leave_out_much_of_the_evidence_stays() -> None:
    """Two simultaneous c3 tracks that are each a large part of what two clusters hold are two people
    (walking side by side, say), however close the floor puts them: nothing is left out."""
    rng = np.random.default_rng(12)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.4, 0.1), f)
    c1, c2, c3 = CORNERS[0], CORNERS[1], CORNERS[2]
    (a1,) = _observe(c1, 1, f[:60], path[:60] + 0.3)
    (a3,) = _observe(c3, 9, f, path + 0.3)
    (b2,) = _observe(c2, 2, f[40:], path[40:], rng)
    (b3,) = _observe(c3, 3, f, path, rng)
    tracklets = [a1, a3, b2, b3]
    res = associate(tracklets, _env([c1, c2, c3]), AssociationConfig(min_identity_s=0))
    assert res.global_ids[a3.key] != res.global_ids[b3.key] and res.global_ids[a1.key] != res.global_ids[b2.key]
    assert res.stats["reunited"] == 0
    # Allowed to leave out that much, the shorter (equal: the later key) of the two c3 views goes.
    loose = associate(tracklets, _env([c1, c2, c3]), AssociationConfig(min_identity_s=0, reunite_max_loss=0.5))
    assert loose.stats["reunited"] == 1


def test_a_fragment_does_not_take_the_identity_of_the_person_every_camera_sees() -> None:
    """After the border, P's boxes continue in c1 and c2, and a 1 s duplicate in c2 continues P's c2 box
    most closely. The confirmed two-camera cluster keeps P's id; the duplicate is no person."""
    rng = np.random.default_rng(13)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.4, 0.1), f)
    c1, c2 = CORNERS[0], CORNERS[1]
    env = _env([c1, c2])
    first = associate(_observe(c1, 1, f[:50], path[:50], rng) + _observe(c2, 2, f[:50], path[:50], rng), env)
    (pid,) = set(first.global_ids.values())
    (p1,) = _observe(c1, 1001, f[52:], path[52:], rng, noise_px=4.0)
    (p2,) = _observe(c2, 1002, f[58:], path[58:], rng, noise_px=4.0)
    (dup,) = _observe(c2, 1009, f[50:60], path[50:60])
    res = associate([p1, p2, dup], env, gallery=first.gallery)
    assert res.global_ids[p1.key] == res.global_ids[p2.key] == pid
    assert dup.key not in res.global_ids


def test_a_cluster_whose_first_view_starts_on_someone_else_still_continues_its_identity() -> None:
    """After the border, P's c1 track begins 2 m away (its first second is on a passer-by, then swaps
    onto P); c2 sees P from the border on, c3 a few frames later. The fused start is nobody's; the
    majority of the cluster's first tracklets continues P."""
    rng = np.random.default_rng(14)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.5, 0.0), f)
    c1, c2, c3 = CORNERS[0], CORNERS[1], CORNERS[2]
    env = _env([c1, c2, c3])
    before = [t for k, cam in enumerate((c1, c2, c3)) for t in _observe(cam, k + 1, f[:50], path[:50], rng)]
    first = associate(before, env)
    (pid,) = set(first.global_ids.values())
    swapped = path[50:].copy()
    swapped[:10] += [0.0, 2.0]  # the passer-by, 2 m to the side
    (a,) = _observe(c1, 1001, f[50:], swapped, rng)
    (b,) = _observe(c2, 1002, f[50:], path[50:], rng)
    (c,) = _observe(c3, 1003, f[53:], path[53:], rng)
    no_tails = replace_tails(first.gallery)  # floor continuity only, no box handoff
    res = associate([a, b, c], env, gallery=no_tails)
    assert {res.global_ids[t.key] for t in (a, b, c)} == {pid}


def test_the_view_several_cameras_confirm_claims_an_identity_before_a_single_view() -> None:
    """Two clusters continue P after the border: P's two-camera cluster, and a long single view
    of someone starting right where P was last seen. The identity goes to the confirmed one."""
    rng = np.random.default_rng(15)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.5, 0.0), f)
    c1, c2, c3 = CORNERS[0], CORNERS[1], CORNERS[2]
    env = _env([c1, c2, c3])
    first = associate(_observe(c1, 1, f[:50], path[:50], rng) + _observe(c2, 2, f[:50], path[:50], rng), env)
    (pid,) = set(first.global_ids.values())
    late = path[50:] + [0.0, 0.6]  # P's cameras put P 0.6 m off after the border (a bias)
    (a,) = _observe(c1, 1001, f[50:], late, rng)
    (b,) = _observe(c2, 1002, f[50:], late, rng)
    other = _walk(tuple(path[50]), (0.0, -0.5), f[50:])  # starts where P was, walks away
    (q,) = _observe(c3, 1003, f[50:], other, rng)
    res = associate([a, b, q], env, AssociationConfig(min_identity_s=0), gallery=replace_tails(first.gallery))
    assert res.global_ids[a.key] == res.global_ids[b.key] == pid != res.global_ids[q.key]


def test_brief_views_one_after_another_confirm_no_one() -> None:
    """A 1 s box in c1, then another in c2 that continues it: two cameras, but never at the same
    time, where both (and others) look. Nobody confirms anybody: no identity. Seen by both at
    once, the same boxes are a person."""
    f = np.arange(100)
    person = _walk((8.0, 8.0), (0.4, 0.0), f)
    seen = [t for cam in CORNERS for t in _observe(cam, 1, f, person)]
    ghost = _walk((14.0, 4.0), (0.3, 0.0), f)
    (a,) = _observe(CORNERS[0], 8, f[20:30], ghost[20:30])
    (b,) = _observe(CORNERS[1], 9, f[31:41], ghost[31:41])
    res = associate([*seen, a, b], _env(CORNERS))
    assert a.key not in res.global_ids and b.key not in res.global_ids
    (b2,) = _observe(CORNERS[1], 9, f[20:30], ghost[20:30])
    together = associate([*seen, a, b2], _env(CORNERS))
    assert together.global_ids[a.key] == together.global_ids[b2.key] != together.global_ids[seen[0].key]


def test_a_view_left_out_for_one_biased_camera_rejoins_its_person() -> None:
    """c3 puts P's feet 2.5 m off for the last 4 s (trousers the floor's colour): far from c1's
    second track, which the other cameras all confirm. The merge leaves that track out to
    respect the floor; as its own camera holds nothing else of P then, it rejoins P."""
    rng = np.random.default_rng(0)
    f = np.arange(100)
    path = _walk((7.0, 6.0), (0.4, 0.1), f)
    c1, c2, c3, c4 = CORNERS
    (t1a,) = _observe(c1, 1, f[:50], path[:50], rng)
    (t1b,) = _observe(c1, 2, f[50:], path[50:], rng)
    (l2,) = _observe(c2, 3, f, path, rng)
    biased = path.copy()
    biased[60:] += [0.0, 2.5]
    (l3,) = _observe(c3, 4, f, biased, rng)
    (l4,) = _observe(c4, 5, f, path, rng)
    tracklets = [t1a, t1b, l2, l3, l4]
    res = associate(tracklets, _env(CORNERS), AssociationConfig(min_identity_s=0))
    assert {res.global_ids.get(t.key) for t in tracklets} == {1}
    assert res.stats["cannot_link"] >= 1 and res.stats["reunited"] == 1
