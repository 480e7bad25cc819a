"""A task's live feed in Redis (FastAPI-free).

One stream per task, ``spoton:task:<task_id>:stream``; every entry has the fields
``type`` (``tracking_update`` | ``status_update``) and ``data`` (the whole
``WsMessage`` JSON, sent to WebSocket clients verbatim).

Entry ids encode order, so nothing is ever appended twice:

* the tracking_update of frame ``f`` is ``<f+1>-0``. Ids are explicit, so a
  retried publish re-sends the same ids; Redis rejects an id at or below the
  stream's top and the publisher skips it.
* a status_update is ``<m>-<seq>`` (seq assigned by Redis) where ``m`` is the
  first part of the stream's top id: it sorts after the frame it follows and
  before the next one. On a missing stream (new, expired, or lost with a Redis
  restart) ``m`` is a floor the caller supplies (highest frame stored in
  Postgres + 1), so a reader already past earlier frames still sees it; there
  the status may take ``<m>-0``, the id of a frame that is then served from
  Postgres only. Entries are told apart by their ``type`` field, never by id.

Hence an entry ``<m>-<s>`` is always preceded by frame ``m - 1``: a reader that
sees a larger first part than it expects knows exactly which frames to fetch
from Postgres instead (``api.websocket``). The latest status is also kept as a
plain key, ``spoton:task:<task_id>:status``, for the REST status endpoint.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.exceptions import ResponseError

from spoton.types import StatusUpdatePayload, WsMessage

TYPE_FIELD = "type"
DATA_FIELD = "data"
TRACKING = "tracking_update"
STATUS = "status_update"
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})

# KEYS: stream, status key. ARGV: maxlen, ttl_s, floor, data, first ("1": only if no status yet).
# Atomic so no frame can slip in between reading the top id and appending.
_APPEND_STATUS = """
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local m = ARGV[3]
if #top > 0 then m = string.match(top[1][1], '^(%d+)-') end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], m .. '-*', 'type', 'status_update', 'data', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[2])
return id
"""


def stream_key(task_id: object) -> str:
    return f"spoton:task:{task_id}:stream"


def status_key(task_id: object) -> str:
    return f"spoton:task:{task_id}:status"


def frame_entry_id(frame_idx: int) -> str:
    return f"{frame_idx + 1}-0"


def position_before(frame_idx: int) -> str:
    """Exclusive read position that yields frame ``frame_idx`` and the statuses just before it."""
    return f"{frame_idx}-0"


@dataclass(frozen=True)
class Entry:
    entry_id: str
    type: str
    data: str

    @property
    def after_frame(self) -> int:
        """The frame this entry is (tracking_update), or the last frame published before it
        (status_update); -1 when none was."""
        return int(self.entry_id.split("-", 1)[0]) - 1

    @property
    def is_frame(self) -> bool:
        return self.type == TRACKING


def parse_entry(entry_id: str, fields: dict[str, str]) -> Entry:
    return Entry(entry_id, fields[TYPE_FIELD], fields[DATA_FIELD])


def is_final(entry: Entry) -> bool:
    if entry.type != STATUS:
        return False
    message = WsMessage.model_validate_json(entry.data)
    return message.payload.status in FINAL_STATUSES  # type: ignore[union-attr]


@dataclass(frozen=True)
class Appended:
    added: int
    skipped: int  # already in the stream (a retried publish)


def append_frames(
    client: redis.Redis, *, task_id: object, messages: Iterable[tuple[int, str]], maxlen: int, ttl_s: int
) -> Appended:
    """XADD ``(frame_idx, WsMessage JSON)`` pairs in frame order, skipping ids Redis already has."""
    key = stream_key(task_id)
    pipe = client.pipeline(transaction=False)
    n = 0
    for frame_idx, data in messages:
        pipe.xadd(
            key, {TYPE_FIELD: TRACKING, DATA_FIELD: data}, id=frame_entry_id(frame_idx),
            maxlen=maxlen, approximate=True,
        )
        n += 1
    if n == 0:
        return Appended(0, 0)
    pipe.expire(key, ttl_s)
    results = pipe.execute(raise_on_error=False)[:n]
    skipped = 0
    for result in results:
        if isinstance(result, ResponseError):
            if "equal or smaller" not in str(result):
                raise result
            skipped += 1
        elif isinstance(result, Exception):
            raise result
    return Appended(n - skipped, skipped)


def append_status(
    client: redis.Redis, *, task_id: object, message: WsMessage, floor: int, maxlen: int, ttl_s: int,
    first: bool = False,
) -> str | None:
    """Append a status_update after the stream's last frame and keep it as the latest status.

    With ``first``, nothing happens if the task has a status already; returns the
    entry id, or None when nothing was appended.
    """
    entry_id = client.eval(
        _APPEND_STATUS, 2, stream_key(task_id), status_key(task_id),
        maxlen, ttl_s, max(floor, 0), message.model_dump_json(), "1" if first else "0",
    )
    return None if entry_id is None else str(entry_id)


def latest_status(client: redis.Redis, *, task_id: object) -> StatusUpdatePayload | None:
    raw = client.get(status_key(task_id))
    if raw is None:
        return None
    payload = WsMessage.model_validate_json(raw).payload
    return payload if isinstance(payload, StatusUpdatePayload) else None
