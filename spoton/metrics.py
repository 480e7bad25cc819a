"""Evaluation and export of a run's results.

- Per camera: CLEAR (MOTA), Identity (IDF1) and HOTA from ``trackeval``, fed in
  memory (boxes matched by IoU, threshold 0.5 as MOTChallenge).
- Multi-camera (MTMC): every camera's frames laid end to end as one sequence,
  so one global id must follow a person across cameras to score (IDF1/IDP/IDR).
- Identities: predicted vs true count; map error: predicted identities matched
  to ground-truth persons on the floor, distances over matched person-frames.
- Exports: MOTChallenge text per camera, AI City MTMC text, identities JSON.

Ground truth is MOTChallenge text (``frame`` 1-based); predictions are
tracks.parquet tables (``frame_idx`` 0-based). GT rows with ``conf`` 0 are
MOTChallenge's "ignore" marks and are dropped.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import trackeval
from scipy.optimize import linear_sum_assignment

from spoton.geometry import box_iou
from spoton.store import RunStore

MOT_COLUMNS = ["frame", "id", "x", "y", "w", "h", "conf"]
# Extra columns by count: MOT16/17 ground truth has class + visibility, results have x/y/z.
_MOT_EXTRA = {9: ["class", "visibility"], 10: ["x_world", "y_world", "z_world"]}
IOU_THRESHOLD = 0.5
_BOX = ["x1", "y1", "x2", "y2"]


def read_mot(path: str | os.PathLike) -> pd.DataFrame:
    """MOTChallenge text (comma-separated, no header) -> frame, id, x, y, w, h, conf, …"""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MOT file not found: {path}")
    if path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in MOT_COLUMNS}).astype(
            {"frame": np.int64, "id": np.int64}
        )
    df = pd.read_csv(path, header=None, sep=r"[,\s]+", engine="python")
    n = df.shape[1]
    if n < 6:
        raise ValueError(f"{path}: MOT rows need at least 6 columns (frame,id,x,y,w,h), got {n}")
    extra = _MOT_EXTRA.get(n, [f"c{i}" for i in range(7, n)]) if n > 7 else []
    df.columns = (MOT_COLUMNS + extra)[:n] if n >= 7 else MOT_COLUMNS[:n]
    if "conf" not in df.columns:
        df["conf"] = 1.0
    return df.astype({"frame": np.int64, "id": np.int64})


def _gt_boxes(gt_df: pd.DataFrame) -> pd.DataFrame:
    """MOT ground truth -> frame_idx (0-based), id, x1..y2; ignore-marked rows dropped."""
    missing = [c for c in ("frame", "id", "x", "y", "w", "h") if c not in gt_df.columns]
    if missing:
        raise ValueError(f"ground truth lacks MOT columns {missing}")
    gt = gt_df[gt_df["conf"] != 0] if "conf" in gt_df.columns else gt_df
    return pd.DataFrame(
        {
            "frame_idx": gt["frame"].to_numpy(np.int64) - 1,
            "id": gt["id"].to_numpy(np.int64),
            "x1": gt["x"].to_numpy(np.float64),
            "y1": gt["y"].to_numpy(np.float64),
            "x2": (gt["x"] + gt["w"]).to_numpy(np.float64),
            "y2": (gt["y"] + gt["h"]).to_numpy(np.float64),
        }
    )


def _pred_boxes(pred_df: pd.DataFrame, id_column: str | None) -> pd.DataFrame:
    col = id_column or ("global_id" if "global_id" in pred_df.columns else "track_id")
    missing = [c for c in ("frame_idx", col, *_BOX) if c not in pred_df.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    out = pred_df[["frame_idx", col, *_BOX]].rename(columns={col: "id"})
    return out.astype({"frame_idx": np.int64, "id": np.int64, **dict.fromkeys(_BOX, np.float64)})


def _sequence(gt: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """trackeval's per-sequence ``data`` dict: ids relabelled 0..n-1, IoU per frame."""
    if gt.empty and pred.empty:
        n_t = 0
    else:
        n_t = (
            int(
                max(
                    gt["frame_idx"].max() if len(gt) else -1,
                    pred["frame_idx"].max() if len(pred) else -1,
                )
            )
            + 1
        )
    if (len(gt) and gt["frame_idx"].min() < 0) or (len(pred) and pred["frame_idx"].min() < 0):
        raise ValueError("frames must be >= 0 (GT frame >= 1, prediction frame_idx >= 0)")
    gt_uid, gt_ids = np.unique(gt["id"].to_numpy(), return_inverse=True)
    pr_uid, pr_ids = np.unique(pred["id"].to_numpy(), return_inverse=True)
    gt_f, pr_f = gt["frame_idx"].to_numpy(), pred["frame_idx"].to_numpy()
    gt_o, pr_o = np.argsort(gt_f, kind="stable"), np.argsort(pr_f, kind="stable")
    gt_cut = np.searchsorted(gt_f[gt_o], np.arange(n_t + 1))
    pr_cut = np.searchsorted(pr_f[pr_o], np.arange(n_t + 1))
    gt_box, pr_box = gt[_BOX].to_numpy(np.float64), pred[_BOX].to_numpy(np.float64)
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for t in range(n_t):
        gi = gt_o[gt_cut[t] : gt_cut[t + 1]]
        pi = pr_o[pr_cut[t] : pr_cut[t + 1]]
        if np.unique(gt_ids[gi]).shape[0] != gi.shape[0] or np.unique(pr_ids[pi]).shape[0] != pi.shape[0]:
            raise ValueError(f"an id appears twice in frame_idx {t}")
        data["gt_ids"].append(gt_ids[gi].astype(int))
        data["tracker_ids"].append(pr_ids[pi].astype(int))
        data["similarity_scores"].append(box_iou(gt_box[gi], pr_box[pi]))
    data.update(
        num_timesteps=n_t,
        num_gt_ids=int(gt_uid.shape[0]),
        num_tracker_ids=int(pr_uid.shape[0]),
        num_gt_dets=len(gt),
        num_tracker_dets=len(pred),
    )
    return data


def _clear(data: dict) -> dict:
    # trackeval prints its config unless told not to.
    return trackeval.metrics.CLEAR({"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}).eval_sequence(data)


def _identity(data: dict) -> dict:
    return trackeval.metrics.Identity({"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}).eval_sequence(data)


def evaluate_camera(pred_df: pd.DataFrame, gt_df: pd.DataFrame, id_column: str | None = None) -> dict[str, float]:
    """MOTA, IDF1, HOTA and friends of one camera's tracks against MOT ground truth.

    ``id_column`` defaults to ``global_id`` when present, else ``track_id``.
    """
    data = _sequence(_gt_boxes(gt_df), _pred_boxes(pred_df, id_column))
    clear, ident = _clear(data), _identity(data)
    hota = trackeval.metrics.HOTA().eval_sequence(data)
    return {
        "mota": float(clear["MOTA"]),
        "motp": float(clear["MOTP"]),
        "idf1": float(ident["IDF1"]),
        "idp": float(ident["IDP"]),
        "idr": float(ident["IDR"]),
        "hota": float(np.mean(hota["HOTA"])),
        "deta": float(np.mean(hota["DetA"])),
        "assa": float(np.mean(hota["AssA"])),
        "precision": float(clear["CLR_Pr"]),
        "recall": float(clear["CLR_Re"]),
        "id_switches": int(clear["IDSW"]),
        "fragmentations": int(clear["Frag"]),
        "mostly_tracked": int(clear["MT"]),
        "mostly_lost": int(clear["ML"]),
        "tp": int(clear["CLR_TP"]),
        "fp": int(clear["CLR_FP"]),
        "fn": int(clear["CLR_FN"]),
        "gt_ids": int(data["num_gt_ids"]),
        "pred_ids": int(data["num_tracker_ids"]),
    }


def evaluate_mtmc(
    pred: Mapping[str, pd.DataFrame], gt: Mapping[str, pd.DataFrame], id_column: str = "global_id"
) -> dict[str, float]:
    """Cross-camera IDF1/IDP/IDR: all cameras as one sequence, ids = global ids.

    Each camera's frames are offset past the previous camera's last frame, so
    boxes of different cameras never meet in one frame and an identity only
    scores where the same global id follows the person into every camera.
    """
    preds, gts, offset = [], [], 0
    for cam in sorted(set(pred) | set(gt)):
        g = _gt_boxes(gt[cam]) if cam in gt else _gt_boxes(pd.DataFrame(columns=MOT_COLUMNS))
        p = _pred_boxes(pred[cam], id_column) if cam in pred else g.iloc[:0]
        last = max(int(g["frame_idx"].max()) if len(g) else -1, int(p["frame_idx"].max()) if len(p) else -1)
        gts.append(g.assign(frame_idx=g["frame_idx"] + offset))
        preds.append(p.assign(frame_idx=p["frame_idx"] + offset))
        offset += last + 1
    data = _sequence(pd.concat(gts, ignore_index=True), pd.concat(preds, ignore_index=True))
    ident = _identity(data)
    return {
        "idf1": float(ident["IDF1"]),
        "idp": float(ident["IDP"]),
        "idr": float(ident["IDR"]),
        "idtp": int(ident["IDTP"]),
        "idfp": int(ident["IDFP"]),
        "idfn": int(ident["IDFN"]),
    }


def map_error(map_df: pd.DataFrame, ground_df: pd.DataFrame, match_radius_m: float = 1.0) -> dict[str, float]:
    """Floor-position error of predicted identities matched to GT persons.

    Identities and persons are matched one-to-one (Hungarian) maximising the
    frames where they are within ``match_radius_m``; errors are then taken over
    every common frame of a matched pair (so a wrong merge shows up as error).
    ``matched_fraction`` is the share of GT person-frames covered by a match.
    """
    if not match_radius_m > 0:
        raise ValueError(f"match_radius_m must be > 0, got {match_radius_m}")
    pred = map_df.dropna(subset=["map_x", "map_y"])[["frame_idx", "global_id", "map_x", "map_y"]]
    truth = ground_df[["frame_idx", "person_id", "x_m", "y_m"]]
    nan = {"mean": float("nan"), "p90": float("nan"), "matched_pairs": 0, "matched_fraction": 0.0}
    if pred.empty or truth.empty:
        return nan
    both = pred.merge(truth, on="frame_idx")
    both["d"] = np.hypot(both["map_x"] - both["x_m"], both["map_y"] - both["y_m"])
    gid_u, gi = np.unique(both["global_id"].to_numpy(), return_inverse=True)
    pid_u, pi = np.unique(both["person_id"].to_numpy(), return_inverse=True)
    score = np.zeros((gid_u.shape[0], pid_u.shape[0]))
    np.add.at(score, (gi, pi), (both["d"].to_numpy() <= match_radius_m).astype(np.float64))
    rows, cols = linear_sum_assignment(-score)
    keep = score[rows, cols] > 0
    pairs = set(zip(gid_u[rows[keep]].tolist(), pid_u[cols[keep]].tolist(), strict=True))
    if not pairs:
        return nan
    sel = both[[(g, p) in pairs for g, p in zip(both["global_id"], both["person_id"], strict=True)]]
    d = sel["d"].to_numpy()
    return {
        "mean": float(d.mean()),
        "p90": float(np.percentile(d, 90)),
        "matched_pairs": len(pairs),
        "matched_fraction": float(len(sel) / len(truth.drop_duplicates(["frame_idx", "person_id"]))),
    }


# -------------------------------------------------------------- run artefacts


@dataclass(frozen=True)
class RunResults:
    """A run's artefacts joined up: per-camera tracks with their global id, fused map."""

    tracks: dict[str, pd.DataFrame]  # camera_id -> tracks.parquet rows + global_id, all chunks
    identities: pd.DataFrame  # camera_id, track_id, global_id
    map: pd.DataFrame  # frame_idx, global_id, map_x, map_y, n_cameras


def run_store(run: RunStore | str | os.PathLike) -> RunStore:
    """The RunStore of a run given as a store, a run folder or a run URL."""
    if isinstance(run, RunStore):
        return run
    url = os.fspath(run).rstrip("/")
    if "/" not in url:
        url = f"./{url}"
    runs_url, run_id = url.rsplit("/", 1)
    return RunStore(runs_url or "/", run_id)


def load_run(run: RunStore | str | os.PathLike) -> RunResults:
    """Read every chunk's tracks, identities and map of a run (folder, URL or RunStore)."""
    store = run_store(run)
    files = store.list()
    if not files:
        raise FileNotFoundError(f"no artefacts in {store.root_url}")
    track_files = sorted(f for f in files if f.count("/") == 2 and f.endswith("/tracks.parquet"))
    id_files = (
        ["identities.parquet"]
        if "identities.parquet" in files
        else sorted(f for f in files if f.count("/") == 1 and f.endswith("/identities.parquet"))
    )
    identities = (
        pd.concat([store.read_parquet(f) for f in id_files], ignore_index=True)
        if id_files
        else pd.DataFrame({"camera_id": [], "track_id": [], "global_id": []})
    ).astype({"camera_id": str, "track_id": np.int64, "global_id": np.int64})
    identities = identities.drop_duplicates(["camera_id", "track_id"]).reset_index(drop=True)
    per_cam: dict[str, list[pd.DataFrame]] = {}
    for f in track_files:
        per_cam.setdefault(f.split("/")[0], []).append(store.read_parquet(f))
    tracks = {}
    for cam, parts in sorted(per_cam.items()):
        df = pd.concat(parts, ignore_index=True)
        ids = identities[identities["camera_id"] == cam][["track_id", "global_id"]]
        df = df.merge(ids, on="track_id", how="left")
        tracks[cam] = df.sort_values(["frame_idx", "track_id"], kind="stable").reset_index(drop=True)
    map_files = sorted(f for f in files if f.count("/") == 1 and f.endswith("/map.parquet"))
    fused = (
        pd.concat([store.read_parquet(f) for f in map_files], ignore_index=True)
        if map_files
        else pd.DataFrame({"frame_idx": [], "global_id": [], "map_x": [], "map_y": [], "n_cameras": []})
    )
    fused = fused.sort_values(["frame_idx", "global_id"], kind="stable").reset_index(drop=True)
    return RunResults(tracks, identities, fused)


def _with_ids(df: pd.DataFrame, associated: bool) -> pd.DataFrame:
    """Tracks with their global id.

    Once association ran, a track without an id is one it found to be no
    person (an unconfirmed fragment, see ``spoton.associate``): not a result.
    """
    if not associated:
        raise ValueError("run has no identities: run the association step first")
    if "global_id" not in df.columns:
        return df.iloc[0:0].assign(global_id=pd.Series(dtype=np.int64))
    return df[df["global_id"].notna()].astype({"global_id": np.int64})


def evaluate_run(run: RunStore | str | os.PathLike, gt_dir: str | os.PathLike) -> dict:
    """All figures of a run against a ground-truth folder (gt/<camera>/gt.txt, gt/ground_plane.csv).

    Per-camera figures score the global ids (what the platform outputs per
    camera); ``mtmc`` scores them across cameras.
    """
    gt_root = Path(gt_dir)
    gt_root = gt_root / "gt" if (gt_root / "gt").is_dir() else gt_root
    if not gt_root.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {gt_root}")
    results = load_run(run)
    gt = {p.parent.name: read_mot(p) for p in sorted(gt_root.glob("*/gt.txt"))}
    if not gt:
        raise FileNotFoundError(f"no <camera>/gt.txt under {gt_root}")
    associated = not results.identities.empty
    pred = {cam: _with_ids(df, associated) for cam, df in results.tracks.items()}
    empty = pd.DataFrame({c: [] for c in ["frame_idx", "global_id", *_BOX]})
    per_camera = {cam: evaluate_camera(pred.get(cam, empty), gt[cam], "global_id") for cam in sorted(gt)}
    true_ids = set().union(*(set(g.loc[g["conf"] != 0, "id"].tolist()) for g in gt.values()))
    out: dict = {
        "per_camera": {c: {k: v[k] for k in ("mota", "idf1", "hota")} | {"details": v} for c, v in per_camera.items()},
        "mtmc": evaluate_mtmc(pred, gt),
        "identities": {
            "predicted": int(results.identities["global_id"].nunique()),
            "true": len(true_ids),
        },
    }
    ground_path = gt_root / "ground_plane.csv"
    if ground_path.is_file():
        out["map_error_m"] = map_error(results.map, pd.read_csv(ground_path))
    return out


# -------------------------------------------------------------------- exports


def export_mot(run: RunStore | str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """MOTChallenge text per camera: ``<out_dir>/<camera>.txt`` (frame 1-based, id = global id)."""
    results = load_run(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for cam, df in results.tracks.items():
        df = _with_ids(df, not results.identities.empty)
        mot = pd.DataFrame(
            {
                "frame": df["frame_idx"] + 1,
                "id": df["global_id"],
                "x": df["x1"].round(2),
                "y": df["y1"].round(2),
                "w": (df["x2"] - df["x1"]).round(2),
                "h": (df["y2"] - df["y1"]).round(2),
                "conf": df["confidence"].round(4),
                "xw": -1,
                "yw": -1,
                "zw": -1,
            }
        ).sort_values(["frame", "id"], kind="stable")
        path = out / f"{cam}.txt"
        mot.to_csv(path, header=False, index=False)
        written.append(path)
    return written


def _camera_number(camera_id: str) -> str:
    digits = "".join(ch for ch in camera_id if ch.isdigit())
    return str(int(digits)) if digits else camera_id


def export_aicity(run: RunStore | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """AI City MTMC text: ``camera_id obj_id frame_id xmin ymin width height xworld yworld``.

    obj_id is the global id, frame_id 1-based, world = the fused floor position
    of the identity in that frame (the camera's own projection where there is
    none, -1 where neither exists).
    """
    results = load_run(run)
    fused = results.map[["frame_idx", "global_id", "map_x", "map_y"]].rename(columns={"map_x": "fx", "map_y": "fy"})
    parts = []
    for cam, df in results.tracks.items():
        df = _with_ids(df, not results.identities.empty).merge(fused, on=["frame_idx", "global_id"], how="left")
        xw = df["fx"].fillna(df["map_x"]).fillna(-1)
        yw = df["fy"].fillna(df["map_y"]).fillna(-1)
        parts.append(
            pd.DataFrame(
                {
                    "camera_id": _camera_number(cam),
                    "obj_id": df["global_id"],
                    "frame_id": df["frame_idx"] + 1,
                    "xmin": df["x1"].round(2),
                    "ymin": df["y1"].round(2),
                    "width": (df["x2"] - df["x1"]).round(2),
                    "height": (df["y2"] - df["y1"]).round(2),
                    "xworld": xw.round(3),
                    "yworld": yw.round(3),
                }
            )
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not table.empty:
        table = table.sort_values(["camera_id", "frame_id", "obj_id"], kind="stable")
    table.to_csv(out, sep=" ", header=False, index=False)
    return out


def export_identities_json(run: RunStore | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Per identity: cameras, frame ranges per camera and track, floor trajectory."""
    results = load_run(run)
    spans = []
    for cam, df in results.tracks.items():
        people = _with_ids(df, not results.identities.empty)
        g = people.groupby(["global_id", "track_id"])["frame_idx"].agg(["min", "max"]).reset_index()
        spans.append(g.assign(camera_id=cam))
    span = (
        pd.concat(spans, ignore_index=True)
        if spans
        else pd.DataFrame({"global_id": [], "track_id": [], "min": [], "max": [], "camera_id": []})
    )
    traj = results.map.dropna(subset=["map_x", "map_y"])
    traj_by = {int(g): d for g, d in traj.groupby("global_id")}
    identities = []
    for gid, rows in span.sort_values(["global_id", "min", "camera_id"]).groupby("global_id", sort=True):
        t = traj_by.get(int(gid))
        identities.append(
            {
                "global_id": int(gid),
                "cameras": sorted(rows["camera_id"].unique().tolist()),
                "first_frame": int(rows["min"].min()),
                "last_frame": int(rows["max"].max()),
                "segments": [
                    {
                        "camera_id": c,
                        "track_id": int(tk),
                        "first_frame": int(a),
                        "last_frame": int(b),
                    }
                    for c, tk, a, b in zip(rows["camera_id"], rows["track_id"], rows["min"], rows["max"], strict=True)
                ],
                "trajectory": []
                if t is None
                else [
                    [int(f), round(float(x), 3), round(float(y), 3)]
                    for f, x, y in zip(t["frame_idx"], t["map_x"], t["map_y"], strict=True)
                ],
            }
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"identities": identities}, indent=1) + "\n")
    return out
