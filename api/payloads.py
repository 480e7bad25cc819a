"""Stored rows -> wire ``TrackingUpdatePayload``s (FastAPI-free).

The one place a tracking_update is assembled: the publisher builds the Redis
messages from the rows it has just stored, and the results endpoints and the
WebSocket's Postgres fallback build theirs from the same rows, so a frame reads
the same whichever way a client gets it.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from spoton.types import TrackingUpdatePayload

# Column order of a track row as crud reads it.
TRACK_COLUMNS = (
    "frame_idx", "camera_id", "track_id", "global_id", "x1", "y1", "x2", "y2",
    "confidence", "class_id", "map_x", "map_y",
)


@dataclass(frozen=True)
class FrameRow:
    frame_idx: int
    processed_at: datetime
    cameras: Sequence[str]


def utc_timestamp(at: datetime) -> str:
    """``2023-10-27T10:30:05.456Z``, the seed's format (stored times are whole milliseconds)."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def image_source(frame_idx: int) -> str:
    return f"{frame_idx:06d}.jpg"


def _map_coords(x: float | None, y: float | None) -> list[float] | None:
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return None
    return [x, y]


def tracking_payloads(
    frames: Sequence[FrameRow], tracks: Iterable[Sequence], *, scene_id: str, camera_id: str | None = None
) -> list[TrackingUpdatePayload]:
    """One payload per frame; ``tracks`` rows (``TRACK_COLUMNS``) sorted by frame, camera, track.

    Every camera the frame was published with appears, with an empty track list
    when nobody was seen there; ``camera_id`` keeps only that camera.
    """
    by_frame: dict[int, dict[str, list[dict]]] = {}
    for f, cam, tid, gid, x1, y1, x2, y2, conf, cls, mx, my in tracks:
        by_frame.setdefault(f, {}).setdefault(cam, []).append({
            "track_id": tid,
            "global_id": None if gid is None else str(gid),
            "bbox_xyxy": [x1, y1, x2, y2],
            "confidence": conf,
            "class_id": cls,
            "map_coords": _map_coords(mx, my),
        })
    out = []
    for fr in frames:
        seen = by_frame.get(fr.frame_idx, {})
        src = image_source(fr.frame_idx)
        # validating plain dicts in one call is faster than constructing models box by box
        out.append(TrackingUpdatePayload.model_validate({
            "frame_index": fr.frame_idx,
            "scene_id": scene_id,
            "timestamp_processed_utc": utc_timestamp(fr.processed_at),
            "cameras": {
                c: {"image_source": src, "tracks": seen.get(c, [])}
                for c in fr.cameras if camera_id is None or c == camera_id
            },
        }))
    return out
