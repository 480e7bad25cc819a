"""spoton.store on a local folder: atomic, reproducible artefacts and the tracks table."""

import io
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spoton import store as store_module
from spoton.store import (
    TRACKS_COLUMNS,
    RunStore,
    embeddings_path,
    frames_from_tracks_df,
    read_tracklets,
    tracks_df_from_frames,
    tracks_path,
)
from spoton.types import FrameTracks


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs", "run-1")


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------- run ids, paths


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "../x", "..\\x", ".hidden", "a b", None, 7])
def test_run_id_rejects_traversal_and_junk(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="run_id"):
        RunStore(tmp_path, bad)  # type: ignore[arg-type]


def test_run_id_accepts_flow_run_ids(tmp_path: Path) -> None:
    run_id = "0b7e6c3e-5f0a-4a57-9a51-2d1f3c0e9b11"
    run = RunStore(str(tmp_path) + "/", run_id)
    assert run.url("manifest.json") == f"{tmp_path}/{run_id}/manifest.json"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../other/x", "a/../../x", "a//b", "a/./b"])
def test_artefact_paths_stay_inside_the_run(store: RunStore, bad: str) -> None:
    with pytest.raises(ValueError, match="artefact path"):
        store.write_bytes(bad, b"x")


def test_url_keeps_the_runs_url_form() -> None:
    assert RunStore("s3://bucket/runs", "r1").url("c01/x/tracks.parquet") == (
        "s3://bucket/runs/r1/c01/x/tracks.parquet"
    )


# -------------------------------------------------------------------- writes


def test_write_bytes_is_atomic_and_leaves_no_temp_files(store: RunStore, tmp_path: Path) -> None:
    url = store.write_bytes("c01/a.bin", b"first")
    assert url == f"{tmp_path}/runs/run-1/c01/a.bin"
    store.write_bytes("c01/a.bin", b"second")
    assert store.read_bytes("c01/a.bin") == b"second"
    assert files_under(tmp_path / "runs") == ["run-1/c01/a.bin"]
    assert oct((tmp_path / "runs/run-1/c01/a.bin").stat().st_mode & 0o777) == "0o644"


def test_failed_write_keeps_the_old_bytes(
    store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_bytes("a.bin", b"old")

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("a.bin", b"new")
    monkeypatch.undo()
    assert store.read_bytes("a.bin") == b"old"
    assert files_under(tmp_path / "runs") == ["run-1/a.bin"]


def test_write_bytes_rejects_non_bytes(store: RunStore) -> None:
    with pytest.raises(TypeError, match="needs bytes"):
        store.write_bytes("a.bin", "text")  # type: ignore[arg-type]


def test_missing_artefact_names_its_url(store: RunStore) -> None:
    with pytest.raises(FileNotFoundError, match=r"run-1/c01/nope\.parquet"):
        store.read_parquet("c01/nope.parquet")
    assert not store.exists("c01/nope.parquet")


def test_json_is_sorted_and_deterministic(store: RunStore) -> None:
    store.write_json("a.json", {"b": 1, "a": {"z": [1, 2], "y": "é"}})
    store.write_json("b.json", {"a": {"y": "é", "z": [1, 2]}, "b": 1})
    assert store.read_bytes("a.json") == store.read_bytes("b.json")
    assert store.read_bytes("a.json").decode().startswith('{\n  "a": {\n    "y": "é"')
    assert store.read_json("a.json") == {"a": {"y": "é", "z": [1, 2]}, "b": 1}
    with pytest.raises(ValueError, match=r"run-1/nan.json as JSON"):
        store.write_json("nan.json", {"x": float("nan")})
    with pytest.raises(TypeError, match=r"run-1/set.json as JSON"):
        store.write_json("set.json", {"x": {1, 2}})
    store.write_bytes("bad.json", b"{nope")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        store.read_json("bad.json")


def sample_df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "camera_id": ["c01", "c02", "c01"],
            "track_id": np.array([3, 1, 2], np.int64),
            "global_id": np.array([0, 0, 1], np.int64),
            "score": np.array([0.5, np.nan, 1.25], np.float32),
        }
    )


def test_parquet_bytes_are_reproducible(tmp_path: Path) -> None:
    a, b = RunStore(tmp_path, "a"), RunStore(tmp_path, "b")
    a.write_parquet("identities.parquet", sample_df())
    b.write_parquet("identities.parquet", sample_df().copy())
    assert a.read_bytes("identities.parquet") == b.read_bytes("identities.parquet")
    back = a.read_parquet("identities.parquet")
    pd.testing.assert_frame_equal(back, sample_df())


def test_write_parquet_argument_order_is_checked(store: RunStore) -> None:
    with pytest.raises(TypeError, match=r"write_parquet\(rel, df\)"):
        store.write_parquet(sample_df(), "x.parquet")  # type: ignore[arg-type]


def test_npz_bytes_are_reproducible_and_load_with_numpy(store: RunStore) -> None:
    arrays = {
        "track_id": np.arange(3, dtype=np.int64),
        "embedding": np.random.default_rng(0).random((3, 8), dtype=np.float32),
        "n_samples": np.array([1, 5, 2]),
    }
    store.write_npz("x/embeddings.npz", **arrays)
    first = store.read_bytes("x/embeddings.npz")
    # np.savez stamps members with the current time; ours carry one fixed date.
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert {m.date_time for m in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    store.write_npz("y/embeddings.npz", **dict(reversed(list(arrays.items()))))
    assert store.read_bytes("y/embeddings.npz") == first
    back = store.read_npz("x/embeddings.npz")
    assert sorted(back) == sorted(arrays)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(back[name], arr)
        assert back[name].dtype == arr.dtype
    with np.load(store.url("x/embeddings.npz")) as npz:  # plain numpy reads it too
        np.testing.assert_array_equal(npz["embedding"], arrays["embedding"])


def test_npz_rejects_objects_and_bad_names(store: RunStore) -> None:
    with pytest.raises(ValueError, match="'tags' has dtype object"):
        store.write_npz("a.npz", tags=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="identifiers"):
        store.write_npz("a.npz", **{"../x": np.zeros(1)})
    assert not store.exists("a.npz")


def test_list_exists_and_skips_temp_files(store: RunStore, tmp_path: Path) -> None:
    assert store.list() == []
    store.write_bytes("c01/s1/tracks.parquet", b"1")
    store.write_bytes("c02/s1/tracks.parquet", b"2")
    store.update_manifest(stage="x")
    (tmp_path / "runs/run-1/c01/s1/.tmp-abc").write_bytes(b"partial")
    assert store.list() == ["c01/s1/tracks.parquet", "c02/s1/tracks.parquet", "manifest.json"]
    assert store.list("c01") == ["c01/s1/tracks.parquet"]
    assert store.list("c09/") == []
    assert store.exists("c01/s1/tracks.parquet") and store.exists("c01")


# ------------------------------------------------------------------ manifest


def test_update_manifest_merges_nested_fields(store: RunStore) -> None:
    store.update_manifest(inputs={"environment_id": "demo"}, timings={"download": 1.5})
    merged = store.update_manifest(timings={"track": {"c01": 2.0}}, status="COMPLETED")
    assert merged == store.read_json("manifest.json") == {
        "inputs": {"environment_id": "demo"},
        "status": "COMPLETED",
        "timings": {"download": 1.5, "track": {"c01": 2.0}},
    }
    store.update_manifest(timings={"track": {"c02": 3.0}})
    assert store.read_json("manifest.json")["timings"]["track"] == {"c01": 2.0, "c02": 3.0}


def test_concurrent_manifest_updates_lose_nothing(store: RunStore, tmp_path: Path) -> None:
    cameras = [f"c{i:02d}" for i in range(12)]

    def update(camera: str) -> None:
        # A separate RunStore per thread, as separate tasks would have.
        RunStore(tmp_path / "runs", "run-1").update_manifest(cameras={camera: "done"})

    threads = [threading.Thread(target=update, args=(c,)) for c in cameras]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read_json("manifest.json")["cameras"] == dict.fromkeys(cameras, "done")


def test_manifest_must_be_an_object(store: RunStore) -> None:
    store.write_json("manifest.json", [1, 2])
    with pytest.raises(ValueError, match="holds a JSON list"):
        store.update_manifest(a=1)


# --------------------------------------------------------------- tracks table


def frame(idx: int, ids: list[int], camera: str = "c01", with_map: bool = True) -> FrameTracks:
    n = len(ids)
    xyxy = np.array([[10 * t, idx, 10 * t + 5, idx + 20] for t in ids], np.float32).reshape(n, 4)
    map_xy = np.array([[t, idx] for t in ids], np.float32).reshape(n, 2) if with_map else ()
    return FrameTracks(
        camera_id=camera, frame_idx=idx, track_id=np.array(ids), xyxy=xyxy,
        confidence=np.full(n, 0.9), class_id=np.ones(n), map_xy=map_xy,
    )


def test_empty_frames_give_an_empty_typed_table() -> None:
    for frames in ([], [frame(0, [])]):
        df = tracks_df_from_frames(frames)
        assert list(df.columns) == list(TRACKS_COLUMNS) and len(df) == 0
        assert {c: str(t) for c, t in df.dtypes.items()} == TRACKS_COLUMNS


def test_tracks_table_columns_dtypes_and_sort() -> None:
    df = tracks_df_from_frames([frame(5, [7, 2]), frame(1, [9]), frame(3, [2], with_map=False)])
    assert {c: str(t) for c, t in df.dtypes.items()} == TRACKS_COLUMNS
    assert list(zip(df.frame_idx, df.track_id, strict=True)) == [(1, 9), (3, 2), (5, 2), (5, 7)]
    assert np.isnan(df.loc[1, "map_x"]) and df.loc[3, "map_x"] == 7
    assert df.loc[3, ["x1", "y1", "x2", "y2"]].tolist() == [70, 5, 75, 25]


def test_tracks_table_rejects_duplicates_and_mixed_cameras() -> None:
    with pytest.raises(ValueError, match="track 2 appears twice in frame 4"):
        tracks_df_from_frames([frame(4, [2, 2])])
    with pytest.raises(ValueError, match="one camera"):
        tracks_df_from_frames([frame(0, [1]), frame(1, [1], camera="c02")])


def test_frames_round_trip_through_the_store(store: RunStore) -> None:
    frames = [frame(1, [9]), frame(3, [2, 4]), frame(5, [2])]
    store.write_parquet(tracks_path("c01", "sub_video_01"), tracks_df_from_frames(frames))
    back = frames_from_tracks_df(store.read_parquet(tracks_path("c01", "sub_video_01")), "c01")
    assert [f.frame_idx for f in back] == [1, 3, 5]
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(a.track_id, b.track_id)
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.map_xy, b.map_xy)
    with pytest.raises(ValueError, match="lacks tracks columns"):
        frames_from_tracks_df(pd.DataFrame({"frame_idx": [1]}), "c01")


def test_read_tracklets_joins_tracks_and_embeddings(store: RunStore) -> None:
    frames = [frame(0, [1, 2]), frame(1, [1]), frame(2, [1, 3])]
    store.write_parquet(tracks_path("c01", "s1"), tracks_df_from_frames(frames))
    emb = np.eye(4, dtype=np.float32)[:2]
    store.write_npz(
        embeddings_path("c01", "s1"), track_id=np.array([3, 1]), embedding=emb,
        n_samples=np.array([1, 2]),
    )
    tracklets = read_tracklets(store, "c01", "s1")
    assert [t.track_id for t in tracklets] == [1, 2, 3]
    one = tracklets[0]
    assert one.camera_id == "c01" and one.frame_idx.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(one.embedding, emb[1])
    assert tracklets[1].embedding is None  # track 2 has no appearance entry
    np.testing.assert_array_equal(tracklets[2].embedding, emb[0])
    np.testing.assert_array_equal(one.map_xy[:, 0], [1, 1, 1])


def test_read_tracklets_without_an_embedder(store: RunStore) -> None:
    store.write_parquet(tracks_path("c01", "s1"), tracks_df_from_frames([frame(0, [1])]))
    store.write_npz(
        embeddings_path("c01", "s1"), track_id=np.array([1]),
        embedding=np.zeros((1, 0), np.float32), n_samples=np.array([0]),
    )
    assert read_tracklets(store, "c01", "s1")[0].embedding is None


def test_read_tracklets_of_an_empty_chunk(store: RunStore) -> None:
    store.write_parquet(tracks_path("c01", "s1"), tracks_df_from_frames([]))
    store.write_npz(
        embeddings_path("c01", "s1"), track_id=np.zeros(0, np.int64),
        embedding=np.zeros((0, 16), np.float32), n_samples=np.zeros(0, np.int64),
    )
    assert read_tracklets(store, "c01", "s1") == []


def test_store_accepts_pathlike_runs_url(tmp_path: Path) -> None:
    run = RunStore(tmp_path, "r")
    run.write_json("m.json", {})
    assert os.path.isfile(tmp_path / "r" / "m.json")
