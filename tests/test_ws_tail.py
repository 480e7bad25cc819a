"""api.tail against real Redis: one reader per stream, ring hand-over, lagging subscribers
dropped without blocking the others, and the reader gone with its last subscriber."""

import asyncio
import uuid

import redis.asyncio as aioredis
from api_fixtures import REDIS_DB

from api import streams
from api.tail import Tails, id_key


async def append(client: aioredis.Redis, key: str, frames: range) -> None:
    for f in frames:
        await client.xadd(key, {"type": "tracking_update", "data": f"frame {f}"}, id=streams.frame_entry_id(f))


async def take(sub, n: int) -> list[str]:
    out = []
    async with asyncio.timeout(10):
        while len(out) < n:
            out.append((await sub.inbox.get())[1]["data"])
    return out


def test_ids_compare_numerically() -> None:
    assert id_key("10-0") > id_key("9-5") > id_key("9-0") > id_key("0-1")


def test_shared_tail_hands_over_without_gaps_and_drops_laggards(redis_server: str) -> None:
    key = streams.stream_key(uuid.uuid4())

    async def main() -> None:
        client = aioredis.Redis.from_url(f"{redis_server}/{REDIS_DB}", decode_responses=True)
        tails = Tails(client, batch=100, block_ms=100)
        try:
            await append(client, key, range(0, 3))  # entries 1-0 .. 3-0
            first = tails.subscribe(key, "3-0", queue_size=100)
            assert first is not None
            await append(client, key, range(3, 6))
            assert await take(first, 3) == ["frame 3", "frame 4", "frame 5"]

            # a feed that read up to frame 3 itself joins: the ring gives it 4 and 5 first
            second = tails.subscribe(key, "4-0", queue_size=100)
            third = tails.subscribe(key, "1-0", queue_size=100)  # before the tail began: not covered
            assert second is not None and third is None
            assert await take(second, 2) == ["frame 4", "frame 5"]

            laggard = tails.subscribe(key, "6-0", queue_size=2)
            await append(client, key, range(6, 10))
            assert await take(first, 4) == ["frame 6", "frame 7", "frame 8", "frame 9"]
            assert await take(second, 4) == ["frame 6", "frame 7", "frame 8", "frame 9"]
            # the laggard's inbox filled: dropped, holding what it had, the others unaffected
            assert laggard is not None and laggard.dropped
            assert await take(laggard, 2) == ["frame 6", "frame 7"]

            tail = tails._tails[key]
            for sub in (first, second):
                tails.unsubscribe(key, sub)
            async with asyncio.timeout(5):
                await tail.task  # no subscribers left: the reader stops and leaves the registry
            assert key not in tails._tails
        finally:
            await tails.close()
            await client.delete(key)
            await client.aclose()

    asyncio.run(main())
