"""Run artefacts: one folder per run under any fsspec URL, written atomically and reproducibly.

Layout (see docs/architecture.md)::

    <runs_url>/<run_id>/manifest.json
    <runs_url>/<run_id>/<camera_id>/<chunk>/tracks.parquet
    <runs_url>/<run_id>/<camera_id>/<chunk>/embeddings.npz
    <runs_url>/<run_id>/<chunk>/identities.parquet, gallery.npz, map.parquet

Every write is all-or-nothing (local: temp file + ``os.replace``; object stores:
one PUT of the whole object), and the same data always serialises to the same
bytes, so a re-run step can be compared, cached and resumed safely.
"""

import contextlib
import fcntl
import io
import json
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from spoton.sources import errors_naming, filesystem
from spoton.types import FrameTracks, Tracklet

MANIFEST = "manifest.json"
TRACKS_FILE = "tracks.parquet"
EMBEDDINGS_FILE = "embeddings.npz"

# Column order, dtypes and sort of tracks.parquet (docs/architecture.md).
TRACKS_COLUMNS: dict[str, str] = {
    "frame_idx": "int64",
    "track_id": "int64",
    "x1": "float32",
    "y1": "float32",
    "x2": "float32",
    "y2": "float32",
    "confidence": "float32",
    "class_id": "int32",
    "map_x": "float32",
    "map_y": "float32",
}

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip date: a fixed stamp keeps npz bytes stable

# update_manifest is read-modify-write; serialise it per manifest within the process
# (threads running camera tasks), and with flock across processes on local disks.
_manifest_locks: dict[str, threading.Lock] = {}
_manifest_locks_guard = threading.Lock()


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run_id must be 1-128 letters, digits, '.', '_' or '-' and start with a letter "
            f"or digit (no '/' or '..'), got {run_id!r}"
        )
    return run_id


def _validate_rel(rel: object) -> str:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise ValueError(f"artefact path must be a relative 'a/b/c' path, got {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"artefact path must not contain empty, '.' or '..' parts, got {rel!r}")
    return rel


class RunStore:
    """Artefacts of one run at ``<runs_url>/<run_id>`` (local folder, s3://, any fsspec URL)."""

    def __init__(self, runs_url: str | os.PathLike, run_id: str) -> None:
        self.run_id = validate_run_id(run_id)
        runs = os.fspath(runs_url)
        if not isinstance(runs, str) or not runs.strip():
            raise ValueError(f"runs_url must be a path or fsspec URL, got {runs_url!r}")
        self.root_url = f"{runs.rstrip('/')}/{self.run_id}"
        self._fs, self._root = filesystem(self.root_url)
        self._local = isinstance(self._fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"RunStore({self.root_url!r})"

    def url(self, rel: str) -> str:
        """The artefact's URL, in the same form as ``runs_url`` (path, s3://, …)."""
        return f"{self.root_url}/{_validate_rel(rel)}"

    def _path(self, rel: str) -> str:
        return f"{self._root}/{_validate_rel(rel)}"

    # ------------------------------------------------------------------ bytes

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write atomically; return the artefact's URL."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write_bytes({rel!r}) needs bytes, got {type(data).__name__}")
        path = self._path(rel)
        with errors_naming(self.url(rel)):
            if self._local:
                _atomic_local_write(path, bytes(data))
            else:
                self._fs.pipe_file(path, bytes(data))  # one PUT: readers see all or nothing
        return self.url(rel)

    def read_bytes(self, rel: str) -> bytes:
        with errors_naming(self.url(rel)):
            return self._fs.cat_file(self._path(rel))

    def exists(self, rel: str) -> bool:
        with errors_naming(self.url(rel)):
            return bool(self._fs.exists(self._path(rel)))

    # ------------------------------------------------------------------- json

    def write_json(self, rel: str, obj: Any) -> str:
        try:
            # NaN and Infinity are not JSON: other readers (browsers, jq) reject them.
            text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise type(e)(f"cannot write {self.url(rel)} as JSON: {e}") from None
        return self.write_bytes(rel, (text + "\n").encode())

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.url(rel)} is not valid JSON: {e}") from None

    def update_manifest(self, **fields: Any) -> dict:
        """Merge ``fields`` into manifest.json (nested dicts merge key by key); return it."""
        with self._manifest_lock():
            manifest = self.read_json(MANIFEST) if self.exists(MANIFEST) else {}
            if not isinstance(manifest, dict):
                kind = type(manifest).__name__
                raise ValueError(f"{self.url(MANIFEST)} holds a JSON {kind}, not an object")
            merged = _deep_merge(manifest, fields)
            self.write_json(MANIFEST, merged)
        return merged

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        key = self.url(MANIFEST)
        with _manifest_locks_guard:
            lock = _manifest_locks.setdefault(key, threading.Lock())
        with lock:
            if not self._local:
                # Object stores have no cross-process lock: one process (the flow)
                # should own manifest updates there.
                yield
                return
            os.makedirs(self._root, exist_ok=True)
            with open(os.path.join(self._root, ".manifest.lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- parquet

    def write_parquet(self, rel: str, df: pd.DataFrame) -> str:
        if not isinstance(rel, str) or not isinstance(df, pd.DataFrame):
            raise TypeError(
                f"call write_parquet(rel, df) with a str and a DataFrame, "
                f"got ({type(rel).__name__}, {type(df).__name__})"
            )
        return self.write_bytes(rel, parquet_bytes(df))

    def read_parquet(self, rel: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(rel)))

    # -------------------------------------------------------------------- npz

    def write_npz(self, rel: str, **arrays: np.ndarray) -> str:
        return self.write_bytes(rel, npz_bytes(**arrays))

    def read_npz(self, rel: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.read_bytes(rel)), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    # Last in the class body: once defined, ``list`` names this method there.
    def list(self, rel_prefix: str = "") -> list[str]:
        """Relative paths of the run's artefacts under ``rel_prefix`` (all when empty), sorted."""
        base = self._root if not rel_prefix else self._path(rel_prefix.rstrip("/"))
        with errors_naming(self.root_url):
            found = self._fs.find(base) if self._fs.isdir(base) else []
        root = self._root.rstrip("/") + "/"
        names = (p[len(root):] if p.startswith(root) else p for p in found)
        # Dot-files are temp files of writes in flight and the manifest lock, not artefacts.
        return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith("."))


def _atomic_local_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # Same directory as the target, so os.replace is a rename on one filesystem.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artefacts are shared files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Parquet of ``df`` (index dropped): the same bytes for the same data and library versions."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    # Parquet stores no write time; compression and statistics are deterministic.
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """``np.load``-compatible npz with fixed zip timestamps and sorted members (no pickles)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            if not _ARRAY_NAME.fullmatch(name):
                raise ValueError(f"npz array names must be identifiers, got {name!r}")
            arr = np.asanyarray(arrays[name])
            if arr.dtype.hasobject:
                raise ValueError(f"npz array {name!r} has dtype object; store numbers or strings")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=arr.nbytes >= 2**31) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)
    return buf.getvalue()


# ------------------------------------------------------------------ tracks table


def tracks_path(camera_id: str, chunk: str) -> str:
    return f"{camera_id}/{chunk}/{TRACKS_FILE}"


def embeddings_path(camera_id: str, chunk: str) -> str:
    return f"{camera_id}/{chunk}/{EMBEDDINGS_FILE}"


def _empty_tracks_df() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in TRACKS_COLUMNS.items()})


def tracks_df_from_frames(frames: list[FrameTracks]) -> pd.DataFrame:
    """tracks.parquet rows of one camera: TRACKS_COLUMNS dtypes, sorted by (frame_idx, track_id)."""
    cameras = sorted({f.camera_id for f in frames})
    if len(cameras) > 1:
        raise ValueError(f"tracks of one camera expected, got cameras {cameras}")
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty_tracks_df()
    xyxy = np.concatenate([f.xyxy for f in frames])
    map_xy = np.concatenate([f.map_xy for f in frames])
    columns = {
        "frame_idx": np.concatenate([np.full(len(f), f.frame_idx, np.int64) for f in frames]),
        "track_id": np.concatenate([f.track_id for f in frames]),
        "x1": xyxy[:, 0], "y1": xyxy[:, 1], "x2": xyxy[:, 2], "y2": xyxy[:, 3],
        "confidence": np.concatenate([f.confidence for f in frames]),
        "class_id": np.concatenate([f.class_id for f in frames]),
        "map_x": map_xy[:, 0], "map_y": map_xy[:, 1],
    }
    order = np.lexsort((columns["track_id"], columns["frame_idx"]))
    df = pd.DataFrame({c: np.asarray(columns[c], t)[order] for c, t in TRACKS_COLUMNS.items()})
    dup = df.duplicated(["frame_idx", "track_id"])
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(
            f"track {int(first.track_id)} appears twice in frame {int(first.frame_idx)} "
            f"of camera {cameras[0]!r}"
        )
    return df


def _check_tracks_columns(df: pd.DataFrame, source: str) -> None:
    missing = [c for c in TRACKS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source} lacks tracks columns {missing}")


def frames_from_tracks_df(df: pd.DataFrame, camera_id: str) -> list[FrameTracks]:
    """One FrameTracks per frame present in ``df`` (frames without tracks have no rows)."""
    _check_tracks_columns(df, "tracks table")
    df = df.sort_values(["frame_idx", "track_id"], kind="stable")
    out = []
    for frame_idx, g in df.groupby("frame_idx", sort=True):
        out.append(
            FrameTracks(
                camera_id=camera_id,
                frame_idx=int(frame_idx),
                track_id=g["track_id"].to_numpy(np.int64),
                xyxy=g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32),
                confidence=g["confidence"].to_numpy(np.float32),
                class_id=g["class_id"].to_numpy(np.int32),
                map_xy=g[["map_x", "map_y"]].to_numpy(np.float32),
            )
        )
    return out


def read_tracklets(store: RunStore, camera_id: str, chunk: str) -> list[Tracklet]:
    """Tracklets of one camera chunk, sorted by track_id, with their mean appearance.

    ``embedding`` is None when no embedder ran (D = 0) or the track has no entry.
    """
    rel = tracks_path(camera_id, chunk)
    df = store.read_parquet(rel)
    _check_tracks_columns(df, store.url(rel))
    npz = store.read_npz(embeddings_path(camera_id, chunk))
    emb_ids = np.asarray(npz.get("track_id", np.zeros(0, np.int64)), np.int64)
    embeddings = np.asarray(npz.get("embedding", np.zeros((len(emb_ids), 0), np.float32)))
    if embeddings.ndim != 2 or embeddings.shape[0] != len(emb_ids):
        raise ValueError(
            f"{store.url(embeddings_path(camera_id, chunk))}: embedding shape {embeddings.shape} "
            f"does not match {len(emb_ids)} track ids"
        )
    row_of = {int(t): i for i, t in enumerate(emb_ids)} if embeddings.shape[1] else {}
    df = df.sort_values(["track_id", "frame_idx"], kind="stable")
    out = []
    for track_id, g in df.groupby("track_id", sort=True):
        row = row_of.get(int(track_id))
        out.append(
            Tracklet(
                camera_id=camera_id,
                track_id=int(track_id),
                frame_idx=g["frame_idx"].to_numpy(np.int64),
                xyxy=g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32),
                map_xy=g[["map_x", "map_y"]].to_numpy(np.float32),
                confidence=g["confidence"].to_numpy(np.float32),
                embedding=None if row is None else embeddings[row],
            )
        )
    return out
