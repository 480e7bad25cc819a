"""MultiviewX reader: calibration, ground truth and the checks they allow.

MultiviewX (Hou, Zheng, Gould: "Multiview Detection with Feature Perspective
Transformation", ECCV 2020) is a synthetic multi-view pedestrian set in the
WILDTRACK layout: ``Image_subsets/C<n>/*.jpg``, OpenCV FileStorage calibration
``calibrations/{intrinsic,extrinsic}/{intr,extr}_Camera<n>.xml`` and per-frame
``annotations_positions/<frame+1>.json`` whose ``personID`` is the cross-view
identity and whose ``positionID`` is a cell of a 1000 x 640 grid of 2.5 cm
cells: the world x/y of the extrinsics, in metres.

The extrinsics are written in a left-handed world (the set is rendered in
Unity): visible floor points come out at negative depth. The converter mirrors
the world's z axis, which leaves every floor point (z = 0), hence x/y, as it
is and turns (R, t) into a proper camera with positive depth, as the
calibration JSON contract expects (``spoton.config.load_calibration``).

``python -m spoton.multiviewx --data DIR`` writes ``homography_data/multiviewx.json``
and ``environments/multiviewx.json``; ``--gt OUT`` also writes MOT ground truth
(``gt/<camera>/gt.txt``, ``gt/ground_plane.csv``), ``--check`` prints the figures.
"""

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from spoton.associate import AssociationConfig, associate
from spoton.config import PROJECT_ROOT, Environment, get_settings, load_environment
from spoton.geometry import (
    foot_points,
    homography_from_calibration,
    homography_from_points,
    project,
)
from spoton.types import Tracklet

ENVIRONMENT_ID = "multiviewx"
GRID_CELLS = (1000, 640)  # positionID grid, x by y
CELL_M = 0.025
FPS = 2.0  # annotated frames per second, as WILDTRACK: people move ~0.6 m per frame
PIXELS_PER_METER = 40  # one map pixel per grid cell
CITATION = "Hou, Zheng, Gould: Multiview Detection with Feature Perspective Transformation, ECCV 2020"


@dataclass(frozen=True)
class CameraCalibration:
    camera_id: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray  # proper rotation, world -> camera
    tvec: np.ndarray
    image_size: tuple[int, int]


def position_to_xy(position_id: np.ndarray) -> np.ndarray:
    """Ground-grid cell ids -> (N, 2) metres (cell corner, as the dataset's own tools)."""
    pos = np.asarray(position_id, np.int64).reshape(-1)
    if pos.size and (pos.min() < 0 or pos.max() >= GRID_CELLS[0] * GRID_CELLS[1]):
        raise ValueError(f"positionID out of the {GRID_CELLS} grid: {pos.min()}..{pos.max()}")
    return np.stack([(pos % GRID_CELLS[0]) * CELL_M, (pos // GRID_CELLS[0]) * CELL_M], axis=1)


def _read_matrix(path: Path, node: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"MultiviewX calibration file not found: {path}")
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        mat = fs.getNode(node).mat()
    finally:
        fs.release()
    if mat is None:
        raise ValueError(f"{path} has no matrix {node!r}")
    return np.asarray(mat, np.float64)


def camera_ids(root: Path | str) -> list[str]:
    """Cameras with images (``Image_subsets/C<n>``), else every calibrated camera."""
    root = Path(root)
    images = root / "Image_subsets"
    found = sorted((p.name for p in images.glob("C*") if p.is_dir()), key=lambda c: int(c[1:]))
    if found:
        return found
    intr = sorted((root / "calibrations" / "intrinsic").glob("intr_Camera*.xml"))
    return sorted((f"C{p.stem.removeprefix('intr_Camera')}" for p in intr), key=lambda c: int(c[1:]))


def _image_size(root: Path, camera_id: str) -> tuple[int, int]:
    frames = sorted((root / "Image_subsets" / camera_id).glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"no images in {root / 'Image_subsets' / camera_id}: cannot tell image size")
    img = cv2.imread(str(frames[0]))
    if img is None:
        raise ValueError(f"cannot decode {frames[0]}")
    return (int(img.shape[1]), int(img.shape[0]))


def read_calibration(root: Path | str, camera_id: str) -> CameraCalibration:
    """One camera's intrinsics and extrinsics, made right-handed (see the module doc)."""
    root = Path(root)
    n = int(camera_id.removeprefix("C"))
    calib = root / "calibrations"
    K = _read_matrix(calib / "intrinsic" / f"intr_Camera{n}.xml", "camera_matrix")
    dist = _read_matrix(calib / "intrinsic" / f"intr_Camera{n}.xml", "distortion_coefficients").reshape(-1)
    rvec = _read_matrix(calib / "extrinsic" / f"extr_Camera{n}.xml", "rvec").reshape(3)
    tvec = _read_matrix(calib / "extrinsic" / f"extr_Camera{n}.xml", "tvec").reshape(3)
    size = _image_size(root, camera_id)
    R = cv2.Rodrigues(rvec)[0]
    # The bottom-centre pixel sees the floor; its depth sign tells the world's handedness.
    ground_to_image = K @ np.column_stack([R[:, 0], R[:, 1], tvec])
    inv_depth = (np.linalg.inv(ground_to_image) @ np.array([size[0] / 2.0, size[1] - 1.0, 1.0]))[2]
    if inv_depth < 0:
        R, tvec = -R @ np.diag([1.0, 1.0, -1.0]), -tvec
    return CameraCalibration(camera_id, K, dist, R, tvec, size)


def calibration_document(root: Path | str, cameras: Sequence[str] | None = None) -> dict:
    """The calibration JSON of ``homography_data/`` (seed format plus full matrices)."""
    root = Path(root)
    cams = list(cameras or camera_ids(root))
    entries = []
    for cam in cams:
        c = read_calibration(root, cam)
        H_m = homography_from_calibration(c.K, c.R, c.tvec)
        H_px = np.diag([PIXELS_PER_METER, PIXELS_PER_METER, 1.0]) @ H_m
        entries.append(
            {
                "id": cam,
                "image_size": list(c.image_size),
                "K": c.K.round(9).tolist(),
                "dist": c.dist.round(12).tolist(),
                "rvec": cv2.Rodrigues(c.R)[0].reshape(3).round(12).tolist(),
                "tvec": c.tvec.round(12).tolist(),
                "homography": (H_px / H_px[2, 2]).round(12).tolist(),
                "frame_path": f"Image_subsets/{cam}/0000.jpg",
            }
        )
    return {
        "source": f"MultiviewX ({CITATION}); world z mirrored to a right-handed frame",
        "ground_plane": {
            "width": GRID_CELLS[0],
            "height": GRID_CELLS[1],
            "pixels_per_meter": PIXELS_PER_METER,
        },
        "cameras": entries,
    }


def environment_document(cameras: Sequence[str], videos_url: str) -> dict:
    return {
        "environment_id": ENVIRONMENT_ID,
        "description": f"MultiviewX subset ({CITATION}): synchronised synthetic views, 25 m x 16 m",
        "cameras": list(cameras),
        "video_dir": "Image_subsets",
        "videos_url": videos_url,
        "calibration": f"{ENVIRONMENT_ID}.json",
        "fps": FPS,
        "frames_glob": "*.jpg",
    }


def _videos_url(root: Path) -> str:
    """Data location relative to the project when it can be (config resolves it from there)."""
    try:
        return os.path.relpath(root.resolve(), PROJECT_ROOT)
    except ValueError:
        return str(root.resolve())


def write_environment(root: Path | str, environments_dir: Path | str, homography_dir: Path | str) -> tuple[Path, Path]:
    """Write ``<environments_dir>/multiviewx.json`` and ``<homography_dir>/multiviewx.json``."""
    root = Path(root)
    cams = camera_ids(root)
    if not cams:
        raise FileNotFoundError(f"{root} holds no MultiviewX cameras (Image_subsets/C*/ or calibrations/)")
    calib_path = Path(homography_dir) / f"{ENVIRONMENT_ID}.json"
    env_path = Path(environments_dir) / f"{ENVIRONMENT_ID}.json"
    for path, doc in (
        (calib_path, calibration_document(root, cams)),
        (env_path, environment_document(cams, _videos_url(root))),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return env_path, calib_path


# ------------------------------------------------------------- ground truth


def read_annotations(root: Path | str, cameras: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(boxes, ground) ground truth.

    boxes: frame_idx, person_id, camera_id, x1, y1, x2, y2 (visible views of
    ``cameras`` only); ground: frame_idx, person_id, x_m, y_m. ``frame_idx`` is
    0-based (file ``00001.json`` annotates image ``0000.jpg``); ``person_id`` is
    the dataset's personID + 1, so MOT ids start at 1.
    """
    root = Path(root)
    cams = list(cameras or camera_ids(root))
    view_of = {int(c.removeprefix("C")) - 1: c for c in cams}
    files = sorted((root / "annotations_positions").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no annotations in {root / 'annotations_positions'}")
    box_rows, ground_rows = [], []
    for path in files:
        frame = int(path.stem) - 1
        for person in json.loads(path.read_text()):
            pid = int(person["personID"]) + 1
            ground_rows.append((frame, pid, int(person["positionID"])))
            for view in person["views"]:
                cam = view_of.get(int(view["viewNum"]))
                box = (view["xmin"], view["ymin"], view["xmax"], view["ymax"])
                if cam is not None and min(box) >= 0 and box[2] > box[0] and box[3] > box[1]:
                    box_rows.append((frame, pid, cam, *map(float, box)))
    boxes = pd.DataFrame(box_rows, columns=["frame_idx", "person_id", "camera_id", "x1", "y1", "x2", "y2"])
    ground = pd.DataFrame(ground_rows, columns=["frame_idx", "person_id", "position_id"])
    xy = position_to_xy(ground["position_id"].to_numpy())
    ground["x_m"], ground["y_m"] = xy[:, 0], xy[:, 1]
    boxes = boxes.sort_values(["camera_id", "frame_idx", "person_id"], kind="stable").reset_index(drop=True)
    ground = ground.sort_values(["frame_idx", "person_id"], kind="stable").reset_index(drop=True)
    return boxes, ground[["frame_idx", "person_id", "x_m", "y_m"]]


def write_gt(root: Path | str, out_dir: Path | str, cameras: Sequence[str] | None = None) -> Path:
    """MOT ground truth in the synthetic scenes' layout: gt/<camera>/gt.txt, gt/ground_plane.csv."""
    boxes, ground = read_annotations(root, cameras)
    gt = Path(out_dir) / "gt"
    for cam in list(cameras or camera_ids(root)):
        rows = boxes[boxes["camera_id"] == cam].sort_values(["frame_idx", "person_id"])
        mot = pd.DataFrame(
            {
                "frame": rows["frame_idx"] + 1,
                "id": rows["person_id"],
                "x": rows["x1"],
                "y": rows["y1"],
                "w": rows["x2"] - rows["x1"],
                "h": rows["y2"] - rows["y1"],
                "conf": 1,
                "class": 1,
                "visibility": 1.0,
            }
        )
        (gt / cam).mkdir(parents=True, exist_ok=True)
        mot.to_csv(gt / cam / "gt.txt", header=False, index=False)
    ground.to_csv(gt / "ground_plane.csv", index=False)
    return gt


def gt_tracklets(boxes: pd.DataFrame, env: Environment) -> list[Tracklet]:
    """One tracklet per person per camera from GT boxes, feet projected with the calibration."""
    out = []
    for (cam, pid), rows in boxes.groupby(["camera_id", "person_id"], sort=True):
        rows = rows.sort_values("frame_idx")
        xyxy = rows[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
        out.append(
            Tracklet(
                camera_id=str(cam),
                track_id=int(pid),
                frame_idx=rows["frame_idx"].to_numpy(np.int64),
                xyxy=xyxy,
                map_xy=env.calibration[str(cam)].boxes_to_map(xyxy, env.plane).astype(np.float32),
                confidence=np.ones(len(rows), np.float32),
            )
        )
    return out


# ------------------------------------------------------------------- checks


def projection_errors(boxes: pd.DataFrame, ground: pd.DataFrame, env: Environment) -> pd.DataFrame:
    """Per visible box: distance (m) of its projected foot point to the person's positionID."""
    df = boxes.merge(ground, on=["frame_idx", "person_id"], how="left")
    err = np.full(len(df), np.nan)
    for cam, idx in df.groupby("camera_id").indices.items():
        xy = env.calibration[str(cam)].boxes_to_map(df.loc[idx, ["x1", "y1", "x2", "y2"]].to_numpy(), None)
        err[idx] = np.linalg.norm(xy - df.loc[idx, ["x_m", "y_m"]].to_numpy(), axis=1)
    return df.assign(error_m=err)


def homography_agreement(boxes: pd.DataFrame, ground: pd.DataFrame, env: Environment) -> dict[str, dict]:
    """Exact H (K, R, t) against an H fitted to the GT feet <-> positionID pairs, per camera.

    ``fit_error_m``: the fitted H's error on its own pairs; ``agreement_m``: mean
    distance between the two homographies' projections of the observed feet.
    """
    df = boxes.merge(ground, on=["frame_idx", "person_id"], how="left")
    out = {}
    for cam, rows in df.groupby("camera_id"):
        feet = foot_points(rows[["x1", "y1", "x2", "y2"]].to_numpy())
        fit = homography_from_points(feet, rows[["x_m", "y_m"]].to_numpy())
        exact = project(env.calibration[str(cam)].H, feet)
        fitted = project(fit.H, feet)
        out[str(cam)] = {
            "pairs": int(len(rows)),
            "fit_error_m": float(fit.reprojection_error_m),
            "agreement_m": float(np.nanmean(np.linalg.norm(exact - fitted, axis=1))),
        }
    return out


def _gt_ids(boxes: pd.DataFrame, global_ids: Mapping[tuple[str, int], int]) -> pd.DataFrame:
    if boxes.empty:
        raise ValueError("no visible boxes to score")
    keys = zip(boxes["camera_id"], boxes["person_id"], strict=True)
    gid = np.array([global_ids.get((str(c), int(p)), -1) for c, p in keys], np.int64)
    return boxes[["frame_idx", "person_id"]].assign(gid=gid)


def cross_view_consistency(boxes: pd.DataFrame, global_ids: Mapping[tuple[str, int], int]) -> float:
    """Fraction of GT person-frames whose views all carry one global id that no other
    person holds in that frame.

    ``global_ids`` maps (camera_id, track_id) to global ids, with GT tracklets'
    track_id = person_id (``gt_tracklets``).
    """
    df = _gt_ids(boxes, global_ids)
    per_person = df.groupby(["frame_idx", "person_id"])["gid"].agg(["nunique", "first"])
    owners = df.groupby(["frame_idx", "gid"])["person_id"].nunique().rename("owners")
    per_person = per_person.join(owners, on=["frame_idx", "first"])
    ok = (per_person["nunique"] == 1) & (per_person["owners"] == 1) & (per_person["first"] >= 1)
    return float(ok.mean())


def identity_consistency(boxes: pd.DataFrame, global_ids: Mapping[tuple[str, int], int]) -> float:
    """Stricter, over time too: fraction of GT person-frames whose views all carry the
    person's own id (the id it holds most, which in turn holds this person most)."""
    df = _gt_ids(boxes, global_ids)
    counts = df.groupby(["person_id", "gid"]).size().rename("n").reset_index()
    gid_of = counts.sort_values(["n", "gid"], ascending=[False, True]).drop_duplicates("person_id")
    person_of = counts.sort_values(["n", "person_id"], ascending=[False, True]).drop_duplicates("gid")
    mutual = set(zip(gid_of["person_id"], gid_of["gid"], strict=True)) & set(
        zip(person_of["person_id"], person_of["gid"], strict=True)
    )
    hit = np.array([(p, g) in mutual for p, g in zip(df["person_id"], df["gid"], strict=True)])
    ok = df.assign(hit=hit).groupby(["frame_idx", "person_id"])["hit"].all()
    return float(ok.mean())


def check(root: Path | str, env: Environment | None = None) -> dict:
    """The MultiviewX figures: projection error, H agreement, cross-view association accuracy."""
    env = env or load_environment(ENVIRONMENT_ID)
    boxes, ground = read_annotations(root, env.cameras)
    errors = projection_errors(boxes, ground, env)["error_m"].to_numpy()
    result = associate(gt_tracklets(boxes, env), env, AssociationConfig())
    return {
        "projection_error_m": {
            "mean": float(np.nanmean(errors)),
            "p90": float(np.nanpercentile(errors, 90)),
            "off_plane": int(np.isnan(errors).sum()),
        },
        "homography": homography_agreement(boxes, ground, env),
        "association": {
            "accuracy": cross_view_consistency(boxes, result.global_ids),
            "identity_accuracy": identity_consistency(boxes, result.global_ids),
            "identities": len(set(result.global_ids.values())),
            "true_identities": int(boxes["person_id"].nunique()),
            "seconds": result.stats["seconds"],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spoton.multiviewx", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "multiviewx")
    parser.add_argument("--environments", type=Path, default=PROJECT_ROOT / "environments")
    parser.add_argument("--homography", type=Path, default=PROJECT_ROOT / "homography_data")
    parser.add_argument("--gt", type=Path, default=None, help="also write MOT ground truth under this folder")
    parser.add_argument("--check", action="store_true", help="print projection and association figures")
    args = parser.parse_args(argv)
    env_path, calib_path = write_environment(args.data, args.environments, args.homography)
    print(f"wrote {env_path} and {calib_path}")
    if args.gt is not None:
        print(f"wrote {write_gt(args.data, args.gt)}")
    if args.check:
        settings = get_settings().model_copy(
            update={"environments_dir": args.environments, "homography_dir": args.homography}
        )
        print(json.dumps(check(args.data, load_environment(ENVIRONMENT_ID, settings=settings)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
