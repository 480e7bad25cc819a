"""Metrics on tiny hand-made sequences whose answers are known, and the exports."""

import json

import numpy as np
import pandas as pd
import pytest

from spoton import metrics
from spoton.store import RunStore


def _gt(rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """MOT ground truth rows (frame 1-based, id, x, y) of 10 x 20 px boxes."""
    return pd.DataFrame([(f, i, x, y, 10.0, 20.0, 1) for f, i, x, y in rows], columns=metrics.MOT_COLUMNS)


def _pred(rows: list[tuple[int, int, float, float]], id_column: str = "track_id") -> pd.DataFrame:
    """Predictions (frame_idx 0-based, id, x, y) of 10 x 20 px boxes."""
    df = pd.DataFrame(rows, columns=["frame_idx", id_column, "x1", "y1"])
    return df.assign(x2=df["x1"] + 10.0, y2=df["y1"] + 20.0, confidence=0.9)


def _two_people(frames: int = 10) -> list[tuple[int, int, float, float]]:
    return [(f, pid, 100.0 * pid + f, 50.0) for f in range(1, frames + 1) for pid in (1, 2)]


def test_perfect_tracker_scores_one() -> None:
    gt = _two_people()
    pred = _pred([(f - 1, pid + 10, x, y) for f, pid, x, y in gt])
    res = metrics.evaluate_camera(pred, _gt(gt))
    assert res["mota"] == pytest.approx(1.0)
    assert res["idf1"] == pytest.approx(1.0)
    assert res["hota"] == pytest.approx(1.0)
    assert res["id_switches"] == 0
    assert (res["tp"], res["fp"], res["fn"]) == (20, 0, 0)


def test_one_id_switch_costs_the_expected_idf1() -> None:
    gt = _two_people()
    # Person 2 is tracked as id 20 for frames 1-5, then as id 21: IDTP = 10 + 5 of 20.
    pred = _pred([(f - 1, (pid if pid == 1 else (20 if f <= 5 else 21)), x, y) for f, pid, x, y in gt])
    res = metrics.evaluate_camera(pred, _gt(gt))
    assert res["idf1"] == pytest.approx(2 * 15 / (2 * 15 + 5 + 5))
    assert res["mota"] == pytest.approx(1 - 1 / 20)
    assert res["id_switches"] == 1


def test_misses_and_false_positives_lower_mota() -> None:
    gt = _two_people(4)
    pred_rows = [(f - 1, pid, x, y) for f, pid, x, y in gt if not (pid == 2 and f == 4)]
    pred_rows.append((0, 99, 900.0, 900.0))  # nowhere near any person
    res = metrics.evaluate_camera(_pred(pred_rows), _gt(gt))
    assert (res["fn"], res["fp"]) == (1, 1)
    assert res["mota"] == pytest.approx(1 - 2 / 8)
    assert res["precision"] == pytest.approx(7 / 8)
    assert res["recall"] == pytest.approx(7 / 8)


def test_empty_prediction_scores_zero() -> None:
    res = metrics.evaluate_camera(_pred([]), _gt(_two_people(3)))
    assert res["fn"] == 6 and res["idf1"] == 0.0 and res["mota"] == 0.0


def test_duplicate_id_in_one_frame_is_rejected() -> None:
    pred = _pred([(0, 1, 0.0, 0.0), (0, 1, 50.0, 0.0)])
    with pytest.raises(ValueError, match="frame_idx 0"):
        metrics.evaluate_camera(pred, _gt([(1, 1, 0.0, 0.0)]))


def test_mtmc_needs_one_global_id_across_cameras() -> None:
    gt = {
        "c1": _gt([(f, 7, 10.0, 10.0) for f in range(1, 6)]),
        "c2": _gt([(f, 7, 40.0, 10.0) for f in range(1, 6)]),
    }
    same = {
        "c1": _pred([(f, 3, 10.0, 10.0) for f in range(5)], "global_id"),
        "c2": _pred([(f, 3, 40.0, 10.0) for f in range(5)], "global_id"),
    }
    assert metrics.evaluate_mtmc(same, gt)["idf1"] == pytest.approx(1.0)
    split = dict(same, c2=_pred([(f, 4, 40.0, 10.0) for f in range(5)], "global_id"))
    res = metrics.evaluate_mtmc(split, gt)
    assert res["idf1"] == pytest.approx(0.5)
    assert (res["idtp"], res["idfp"], res["idfn"]) == (5, 5, 5)


def test_read_mot_names_columns(tmp_path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("1,3,10,20,30,40,1,1,0.5\n2,3,11,20,30,40,0,1,0.5\n")
    df = metrics.read_mot(path)
    assert list(df.columns) == [*metrics.MOT_COLUMNS, "class", "visibility"]
    assert df["frame"].tolist() == [1, 2] and df["id"].dtype == np.int64
    # conf 0 marks "ignore" in MOTChallenge ground truth: the second row does not count.
    pred = _pred([(0, 1, 10.0, 20.0)]).assign(x2=40.0, y2=60.0)
    assert metrics.evaluate_camera(pred, df)["fn"] == 0
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert metrics.read_mot(empty).empty
    with pytest.raises(FileNotFoundError):
        metrics.read_mot(tmp_path / "missing.txt")


def test_map_error_matches_identities_to_people() -> None:
    frames = np.arange(10)
    truth = pd.concat(
        [
            pd.DataFrame({"frame_idx": frames, "person_id": 1, "x_m": 1.0, "y_m": 1.0}),
            pd.DataFrame({"frame_idx": frames, "person_id": 2, "x_m": 5.0, "y_m": 5.0}),
        ]
    )
    pred = pd.concat(
        [
            pd.DataFrame({"frame_idx": frames, "global_id": 8, "map_x": 1.1, "map_y": 1.0}),
            pd.DataFrame({"frame_idx": frames, "global_id": 9, "map_x": 5.0, "map_y": 5.3}),
        ]
    )
    res = metrics.map_error(pred, truth)
    assert res["mean"] == pytest.approx(0.2)
    assert res["p90"] == pytest.approx(0.3)
    assert res["matched_pairs"] == 2 and res["matched_fraction"] == pytest.approx(1.0)


def _write_run(tmp_path, shift_c2: float = 0.0) -> RunStore:
    store = RunStore(tmp_path / "runs", "r1")
    for cam, x0 in (("c01", 10.0), ("c02", 40.0)):
        rows = [(f, 5, x0 + f, 10.0) for f in range(4)]
        df = _pred(rows).assign(class_id=1, map_x=2.0 + shift_c2 * (cam == "c02"), map_y=3.0)
        store.write_parquet(f"{cam}/sub_video_01/tracks.parquet", df.astype({"confidence": np.float32}))
    ids = pd.DataFrame({"camera_id": ["c01", "c02"], "track_id": [5, 5], "global_id": [1, 1]})
    store.write_parquet("sub_video_01/identities.parquet", ids)
    store.write_parquet("identities.parquet", ids)
    fused = pd.DataFrame({"frame_idx": range(4), "global_id": 1, "map_x": 2.0, "map_y": 3.0, "n_cameras": 2})
    store.write_parquet("sub_video_01/map.parquet", fused)
    gt = tmp_path / "scene" / "gt"
    for cam, x0 in (("c01", 10.0), ("c02", 40.0)):
        (gt / cam).mkdir(parents=True)
        _gt([(f + 1, 1, x0 + f, 10.0) for f in range(4)]).to_csv(gt / cam / "gt.txt", header=False, index=False)
    pd.DataFrame({"frame_idx": range(4), "person_id": 1, "x_m": 2.0, "y_m": 3.5}).to_csv(
        gt / "ground_plane.csv", index=False
    )
    return store


def test_evaluate_run_reports_every_figure(tmp_path) -> None:
    store = _write_run(tmp_path)
    for run in (store, store.root_url):
        res = metrics.evaluate_run(run, tmp_path / "scene")
        assert res["per_camera"]["c01"]["mota"] == pytest.approx(1.0)
        assert res["per_camera"]["c02"]["idf1"] == pytest.approx(1.0)
        assert res["per_camera"]["c02"]["hota"] == pytest.approx(1.0)
        assert res["mtmc"]["idf1"] == pytest.approx(1.0)
        assert res["identities"] == {"predicted": 1, "true": 1}
        assert res["map_error_m"]["mean"] == pytest.approx(0.5)
        json.dumps(res)


def test_exports(tmp_path) -> None:
    store = _write_run(tmp_path)
    files = metrics.export_mot(store, tmp_path / "mot")
    assert [f.name for f in files] == ["c01.txt", "c02.txt"]
    first = files[0].read_text().splitlines()[0].split(",")
    assert first[:2] == ["1", "1"] and first[-3:] == ["-1", "-1", "-1"]
    assert metrics.read_mot(files[0])["frame"].tolist() == [1, 2, 3, 4]

    aic = metrics.export_aicity(store, tmp_path / "aic.txt").read_text().splitlines()
    assert len(aic) == 8
    assert aic[0].split() == ["1", "1", "1", "10.0", "10.0", "10.0", "20.0", "2.0", "3.0"]
    assert aic[-1].split()[0] == "2"

    doc = json.loads(metrics.export_identities_json(store, tmp_path / "ids.json").read_text())
    (ident,) = doc["identities"]
    assert ident["global_id"] == 1 and ident["cameras"] == ["c01", "c02"]
    assert (ident["first_frame"], ident["last_frame"]) == (0, 3)
    assert ident["trajectory"][0] == [0, 2.0, 3.0]


def test_run_without_association_is_reported(tmp_path) -> None:
    store = _write_run(tmp_path)
    empty = pd.DataFrame({"camera_id": pd.Series(dtype=str), "track_id": pd.Series(dtype=np.int64)})
    for rel in ("identities.parquet", "sub_video_01/identities.parquet"):
        store.write_parquet(rel, empty.assign(global_id=pd.Series(dtype=np.int64)))
    with pytest.raises(ValueError, match="association"):
        metrics.export_mot(store, tmp_path / "mot")


def test_tracks_association_found_no_person_are_not_results(tmp_path) -> None:
    store = _write_run(tmp_path)
    ids = pd.DataFrame({"camera_id": ["c01"], "track_id": [5], "global_id": [1]})  # c02's track: noise
    for rel in ("identities.parquet", "sub_video_01/identities.parquet"):
        store.write_parquet(rel, ids)
    res = metrics.evaluate_run(store, tmp_path / "scene")
    assert res["per_camera"]["c01"]["mota"] == pytest.approx(1.0)
    assert res["per_camera"]["c02"]["mota"] == pytest.approx(0.0)  # nothing reported there
    (path,) = [p for p in metrics.export_mot(store, tmp_path / "mot") if "c02" in p.name]
    assert path.read_text() == ""
