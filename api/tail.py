"""One shared reader of each task's live tail per process (FastAPI-free, asyncio).

Feeds read their history on their own; once a feed has caught up with the end of
its stream it subscribes here, so a hundred clients of one live task cost one
``XREAD BLOCK`` per batch instead of a hundred. A tail keeps the last entries it
read in a ring: a feed subscribing at a position the ring still covers gets the
entries after it first, so nothing falls between its last own read and the tail.

A subscriber's inbox is bounded. When it is full (the feed's client is not
keeping up) the tail drops the subscription instead of waiting: the feed finishes
what its inbox holds and goes back to reading from its own position, so a slow
client never delays the others and never loses an entry.
"""

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger(__name__)

StreamEntry = tuple[str, dict[str, str]]


def id_key(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence) pairs, not as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    inbox: asyncio.Queue[StreamEntry]
    dropped: bool = False


@dataclass(eq=False)
class StreamTail:
    client: aioredis.Redis
    key: str
    position: str  # last id read
    batch: int
    block_ms: int
    ring_size: int = 1024
    ring: deque[StreamEntry] = field(default_factory=deque)
    floor: tuple[int, int] = (0, 0)  # entries after this id are all in the ring
    subscribers: set[Subscription] = field(default_factory=set)
    task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.floor = id_key(self.position)

    def subscribe(self, position: str, queue_size: int) -> Subscription | None:
        """Follow the tail from ``position`` (exclusive); None if the ring no longer covers it."""
        after = id_key(position)
        if after < self.floor:
            return None
        sub = Subscription(asyncio.Queue(queue_size))
        for entry in self.ring:
            if id_key(entry[0]) > after:
                try:
                    sub.inbox.put_nowait(entry)
                except asyncio.QueueFull:
                    return None  # further behind than an inbox holds: keep reading on its own
        self.subscribers.add(sub)
        return sub

    async def run(self) -> None:
        backoff = 0.1
        while self.subscribers:
            try:
                reply = cast(list[Any], await self.client.xread(
                    {self.key: self.position}, count=self.batch, block=self.block_ms
                ))
                backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning("tail of %s: Redis unavailable (%s); retrying in %.1f s", self.key, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for entry in (reply[0][1] if reply else []):
                self.position = entry[0]
                if len(self.ring) == self.ring_size:
                    self.floor = id_key(self.ring.popleft()[0])
                self.ring.append(entry)
                for sub in list(self.subscribers):
                    try:
                        sub.inbox.put_nowait(entry)
                    except asyncio.QueueFull:
                        sub.dropped = True
                        self.subscribers.discard(sub)


class Tails:
    """The live tails of this process, one per stream with subscribers."""

    def __init__(self, client: aioredis.Redis, *, batch: int, block_ms: int) -> None:
        self.client = client
        self.batch = batch
        self.block_ms = block_ms
        self._tails: dict[str, StreamTail] = {}

    def subscribe(self, key: str, position: str, queue_size: int) -> Subscription | None:
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tails[key] = StreamTail(self.client, key, position, self.batch, self.block_ms)
        sub = tail.subscribe(position, queue_size)
        if sub is not None and tail.task is None:
            tail.task = asyncio.create_task(self._run(tail))
        return sub

    async def _run(self, tail: StreamTail) -> None:
        try:
            await tail.run()
        finally:
            # the last subscriber left: a new one starts a new tail at its own position
            if self._tails.get(tail.key) is tail:
                del self._tails[tail.key]

    def unsubscribe(self, key: str, sub: Subscription) -> None:
        tail = self._tails.get(key)
        if tail is not None:
            tail.subscribers.discard(sub)

    async def close(self) -> None:
        tasks = [t.task for t in self._tails.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
