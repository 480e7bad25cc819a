"""Live feed of a task: ``/ws/tracking/{task_id}[?from_frame=N][&token=KEY]``.

Messages are ``{"type", "payload"}`` exactly as the seed: ``status_update`` and
``tracking_update`` (one per frame). A client gets the task's history from
``from_frame`` (default 0) and then the live tail, every frame exactly once and
in order, then a clean close (1000) once the task has finished and its feed is
drained.

Each connection reads the task's Redis stream from its own position (see
``api.streams``) into a bounded queue drained by its own sender. History it reads
itself; once caught up it takes new entries from the process's shared tail of
the stream (``api.tail``: one ``XREAD BLOCK`` for all live clients of a task),
and goes back to reading itself whenever it falls behind. So a slow client only
ever delays itself; one whose queue stays full for ``send_timeout_s`` is closed
with 1008 and a reason.

Frames missing from the stream (trimmed by MAXLEN, expired, or lost with a Redis
restart) are read from Postgres, which the publisher always writes first: the
entry ids tell exactly which frames precede each entry, so a reader fills any
gap before sending the entry after it. Keepalive pings are uvicorn's
(``--ws-ping-interval``/``--ws-ping-timeout``): a client that stops answering is
dropped and its reader stops.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, cast

import anyio
import redis.asyncio as aioredis
import redis.exceptions
import sqlalchemy.exc
from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.websockets import WebSocketDisconnect

from api import crud, streams
from api.models import Task
from api.orchestration import FlowRunNotFoundError, Orchestrator, OrchestratorUnavailableError
from api.security import AuthError, check_keys, header_keys
from api.tail import StreamEntry, Subscription, Tails, id_key
from spoton.types import StatusUpdatePayload, TrackingUpdatePayload, status_message, tracking_message

log = logging.getLogger(__name__)

router = APIRouter()

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the client broke the deal: here, not reading its messages
CLOSE_ERROR = 1011
_END = object()  # queued after the last message: close normally once it is reached


@dataclass(frozen=True)
class FeedLimits:
    queue_size: int = 256  # messages waiting per connection
    send_timeout_s: float = 10.0  # a full queue for this long closes the connection
    block_ms: int = 2000  # XREAD BLOCK; also how often an idle feed re-checks its task
    batch: int = 256  # entries per XREAD
    pg_page: int = 200  # frames per Postgres read when filling a gap
    orchestrator_poll_s: float = 15.0  # how often an idle feed asks Prefect whether its run ended
    close_timeout_s: float = 5.0


class SlowClientError(Exception):
    pass


def _load_task(engine: Engine, task_id: uuid.UUID) -> Task | None:
    with Session(engine) as session:
        return crud.get_task(session, task_id=task_id)


async def _deny(websocket: WebSocket, status_code: int, detail: str) -> None:
    """Refuse the handshake with an HTTP answer where the server can send one."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=status_code))
    else:
        await websocket.close(CLOSE_POLICY, detail[:120])


class Feed:
    """One connection's reader (Redis, gaps from Postgres) and sender, joined by a bounded queue."""

    def __init__(
        self, websocket: WebSocket, task: Task, from_frame: int, *, redis_client: aioredis.Redis,
        engine: Engine, orchestrator: Orchestrator, tails: Tails, limits: FeedLimits,
    ) -> None:
        self.ws = websocket
        self.task = task
        self.redis = redis_client
        self.engine = engine
        self.orchestrator = orchestrator
        self.limits = limits
        self.queue: asyncio.Queue[object] = asyncio.Queue(limits.queue_size)
        self.next_frame = from_frame
        self.key = streams.stream_key(task.task_id)
        self.position = streams.position_before(from_frame)
        self.tails = tails
        self.sub: Subscription | None = None
        self._asked_orchestrator = 0.0

    async def run(self) -> None:
        producer = asyncio.create_task(self.produce())
        sender = asyncio.create_task(self.send())
        receiver = asyncio.create_task(self.receive())
        running = {producer, sender, receiver}
        try:
            while True:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if producer in done and producer.exception() is None:
                    running.discard(producer)  # all queued: let the sender finish and close
                    continue
                break
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            await self.close_for(producer.exception())

    async def close_for(self, error: BaseException | None) -> None:
        if isinstance(error, SlowClientError):
            code, reason = CLOSE_POLICY, str(error)
        elif isinstance(error, sqlalchemy.exc.OperationalError):
            log.warning("feed of task %s: Postgres unavailable: %s", self.task.task_id, error)
            code, reason = CLOSE_ERROR, f"results database unavailable; reconnect with from_frame={self.next_frame}"
        else:
            log.error("feed of task %s failed", self.task.task_id, exc_info=error)
            code, reason = CLOSE_ERROR, "internal error"
        with contextlib.suppress(Exception):  # the client may be gone already
            await asyncio.wait_for(self.ws.close(code, reason), self.limits.close_timeout_s)

    # ------------------------------------------------------------ sender side

    async def send(self) -> None:
        while True:
            item = await self.queue.get()
            if item is _END:
                await self.ws.close(CLOSE_NORMAL)
                return
            await self.ws.send_text(item)  # type: ignore[arg-type]

    async def receive(self) -> None:
        """Clients send nothing that matters; this only notices that one went away."""
        with contextlib.suppress(WebSocketDisconnect):
            while (await self.ws.receive())["type"] != "websocket.disconnect":
                pass

    async def put(self, item: object) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(item)  # the common case, without a timer
            return
        try:
            async with asyncio.timeout(self.limits.send_timeout_s):
                await self.queue.put(item)
        except TimeoutError:
            raise SlowClientError(
                f"client too slow: {self.queue.qsize()} messages waited over "
                f"{self.limits.send_timeout_s:g} s"
            ) from None

    # ------------------------------------------------------------ reader side

    async def produce(self) -> None:
        final = False  # the task's final status came through the stream
        ended: StatusUpdatePayload | None = None  # the task ended as far as its row or Prefect know
        backoff = 0.1
        try:
            while True:
                try:
                    entries, caught_up = await self.next_entries(draining=final or ended is not None)
                    backoff = 0.1
                    if not entries:
                        if final:
                            break
                        if ended is not None:
                            # the stream is drained and never told: the rest from Postgres, then the end
                            await self.fill(None)
                            await self.put(status_message(ended).model_dump_json())
                            break
                        ended = await self.idle()
                        continue
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                    # keep our position; the stream resumes (or is rebuilt) when Redis is back
                    log.warning("task %s feed: Redis unavailable (%s); retrying in %.1f s",
                                self.task.task_id, e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                for entry_id, fields in entries:
                    if id_key(entry_id) <= id_key(self.position):
                        continue  # handed over twice (own read, then the tail's ring)
                    self.position = entry_id
                    final = await self.deliver(streams.parse_entry(entry_id, fields)) or final
                if final or ended is not None:
                    self.leave_tail()  # drain the rest with own reads, then close
                elif caught_up and self.sub is None:
                    self.sub = self.tails.subscribe(self.key, self.position, self.limits.queue_size)
        finally:
            self.leave_tail()
        await self.put(_END)

    async def next_entries(self, draining: bool) -> tuple[list[StreamEntry], bool]:
        """The next entries after our position: from the shared tail once subscribed, else read
        ourselves (without blocking when draining). True when that read reached the end."""
        if self.sub is not None and (not self.sub.dropped or not self.sub.inbox.empty()):
            inbox = self.sub.inbox
            if inbox.empty():
                try:
                    async with asyncio.timeout(self.limits.block_ms / 1000):  # a timer, not wait_for's task
                        first = await inbox.get()
                except TimeoutError:
                    return [], False
            else:
                first = inbox.get_nowait()
            handed = [first]
            while not inbox.empty():
                handed.append(inbox.get_nowait())
            return handed, False
        self.sub = None  # dropped by the tail (our client lagged): read on our own again
        reply = cast(list[Any], await self.redis.xread(
            {self.key: self.position}, count=self.limits.batch, block=None if draining else self.limits.block_ms
        ))  # [[key, [(entry_id, fields), …]]], strings decoded
        entries: list[StreamEntry] = reply[0][1] if reply else []
        return entries, len(entries) < self.limits.batch

    def leave_tail(self) -> None:
        if self.sub is not None:
            self.tails.unsubscribe(self.key, self.sub)
            self.sub = None

    async def deliver(self, entry: streams.Entry) -> bool:
        """Send one stream entry after any frames it follows; True if it ends the task."""
        bound = entry.after_frame
        if entry.is_frame:
            if bound < self.next_frame:
                return False  # already sent (from Postgres, or before a reconnect)
            await self.fill(bound - 1)
            await self.put(entry.data)
            self.next_frame = bound + 1
            return False
        await self.fill(bound)
        await self.put(entry.data)
        return streams.is_final(entry)

    async def fill(self, last: int | None) -> None:
        """Frames ``next_frame..last`` (None: all stored) from Postgres, in pages."""
        while last is None or self.next_frame <= last:
            payloads, following = await anyio.to_thread.run_sync(self._read_frames, self.next_frame, last)
            for p in payloads:
                await self.put(tracking_message(p).model_dump_json())
                self.next_frame = p.frame_index + 1
            if following is None:
                if last is not None:
                    self.next_frame = last + 1  # frames not stored do not exist
                return

    def _read_frames(self, start: int, end: int | None) -> tuple[list[TrackingUpdatePayload], int | None]:
        with Session(self.engine) as session:
            return crud.frame_payloads(
                session, run_id=self.task.task_id, scene_id=self.task.environment_id, start=start, end=end,
                limit=self.limits.pg_page,
            )

    async def idle(self) -> StatusUpdatePayload | None:
        """Nothing new in the stream: catch up from Postgres if the stream is gone; the task's
        final status if it is over (its end may never reach the stream: lost, or a crash)."""
        if not await self.redis.exists(self.key):
            await self.fill(None)
        return await self.ended()

    async def ended(self) -> StatusUpdatePayload | None:
        """The final status, if the task is over: from its row, or from Prefect now and then."""
        task = await anyio.to_thread.run_sync(_load_task, self.engine, self.task.task_id)
        if task is not None and task.status in streams.FINAL_STATUSES:
            return StatusUpdatePayload(status=task.status, progress=task.progress,  # type: ignore[arg-type]
                                       current_step=task.current_step, details=task.details)
        now = time.monotonic()
        if now - self._asked_orchestrator < self.limits.orchestrator_poll_s:
            return None
        self._asked_orchestrator = now
        try:
            state = await anyio.to_thread.run_sync(self.orchestrator.state, self.task.task_id)
        except (FlowRunNotFoundError, OrchestratorUnavailableError):
            return None
        if not state.is_final:
            return None
        return StatusUpdatePayload(status=state.status, progress=100.0 if state.status == "COMPLETED" else 0.0,
                                   current_step=state.name, details=state.message)


@router.websocket("/ws/tracking/{task_id}", name="tracking_feed")
async def tracking_feed(
    websocket: WebSocket,
    task_id: uuid.UUID,
    from_frame: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    token: Annotated[str | None, Query()] = None,
) -> None:
    state = websocket.app.state
    try:
        # browsers cannot set headers on a WebSocket, hence ?token=; other clients should
        # prefer the headers, which stay out of access logs
        check_keys([token, *header_keys(websocket.headers)], state.settings.api_keys,
                   how="pass ?token=<key> or send 'X-API-Key: <key>'")
    except AuthError as e:
        await _deny(websocket, e.status_code, e.detail)
        return
    task = await anyio.to_thread.run_sync(_load_task, state.engine, task_id)
    if task is None:
        await _deny(websocket, 404, f"task {task_id} not found")
        return
    await websocket.accept()
    feed = Feed(
        websocket, task, from_frame, redis_client=state.aredis, engine=state.engine,
        orchestrator=state.orchestrator, tails=state.tails, limits=state.feed_limits,
    )
    await feed.run()
