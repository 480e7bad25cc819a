"""Start a processing task over REST and print its live feed, as the seed's test client did.

    python scripts/ws_client.py                               # factory, http://localhost:8000
    python scripts/ws_client.py --environment demo --videos data/demo --max-frames 50
    python scripts/ws_client.py --task-id <id> --from-frame 500  # follow an existing task

With API keys configured on the server pass ``--api-key`` (or set SPOTON_API_KEY).
Exits 0 when the task completed, 1 when it failed or was cancelled, 2 on errors.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

log = logging.getLogger("websocket_client")


def start_task(http: httpx.Client, args: argparse.Namespace) -> dict:
    body: dict = {"environment_id": args.environment}
    if args.videos:
        # the server resolves paths on its own machine: send local paths absolute
        body["videos"] = args.videos if "://" in args.videos else str(Path(args.videos).resolve())
    if args.chunks:
        body["chunks"] = args.chunks
    if args.max_frames:
        body["max_frames"] = args.max_frames
    log.info("Starting processing task: %s", json.dumps(body))
    resp = http.post("/api/v1/processing-tasks/start", json=body)
    if resp.status_code != 202:
        raise SystemExit(f"start failed: HTTP {resp.status_code} {resp.text}")
    started = resp.json()
    log.info("Task %s started: %s", started["task_id"], started["message"])
    log.info("  Status URL: %s", started["status_url"])
    log.info("  WebSocket URL: %s", started["websocket_url"])
    return started


def log_status(task_id: str, payload: dict) -> None:
    log.info("[TASK %s][STATUS_UPDATE]", task_id)
    log.info("  Status: %s", payload["status"])
    log.info("  Progress: %.2f%%", payload["progress"])
    log.info("  Current Step: %s", payload["current_step"])
    if payload.get("details"):
        log.info("  Details: %s", payload["details"])


def log_tracking(task_id: str, payload: dict, tracks: bool) -> None:
    cameras = payload["cameras"]
    counts = ", ".join(f"{cam}: {len(frame['tracks'])}" for cam, frame in cameras.items())
    log.info("[TASK %s][TRACKING_UPDATE] Frame %d (%s) at %s - tracks per camera: %s", task_id,
             payload["frame_index"], payload["scene_id"], payload["timestamp_processed_utc"], counts)
    if not tracks:
        return
    for cam, frame in cameras.items():
        for t in frame["tracks"]:
            where = "off-map" if t["map_coords"] is None else "map [{:.2f}, {:.2f}] m".format(*t["map_coords"])
            conf = "n/a" if t["confidence"] is None else f"{t['confidence']:.2f}"
            log.info("    %s %s: track %d, person %s, bbox %s, conf %s, %s", cam, frame["image_source"],
                     t["track_id"], t["global_id"], [round(v, 1) for v in t["bbox_xyxy"]], conf, where)


async def follow(ws_url: str, task_id: str, tracks: bool, headers: dict[str, str]) -> str | None:
    """Print every message until the server closes the feed; returns the last status."""
    last = None
    async with connect(ws_url, max_size=None, additional_headers=headers) as ws:
        log.info("Connected to %s", ws_url)
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "status_update":
                    last = message["payload"]["status"]
                    log_status(task_id, message["payload"])
                else:
                    log_tracking(task_id, message["payload"], tracks)
        except ConnectionClosed:
            pass
        log.info("Feed closed: code %s %s", ws.close_code, ws.close_reason or "")
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://localhost:8000")
    parser.add_argument("--environment", default="factory")
    parser.add_argument("--videos", help="where the sub-videos are (path or fsspec URL)")
    parser.add_argument("--chunks", nargs="+", help="sub-video names, e.g. sub_video_01")
    parser.add_argument("--max-frames", type=int, help="at most this many frames per sub-video")
    parser.add_argument("--task-id", help="follow this task instead of starting one")
    parser.add_argument("--from-frame", type=int, default=0)
    parser.add_argument("--api-key", default=os.environ.get("SPOTON_API_KEY"))
    parser.add_argument("--no-tracks", action="store_true", help="one line per frame, no per-track lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    try:
        with httpx.Client(base_url=args.base_url, headers=headers, timeout=60) as http:
            if args.task_id:
                task_id, ws_path = args.task_id, f"/ws/tracking/{args.task_id}"
            else:
                started = start_task(http, args)
                task_id, ws_path = started["task_id"], started["websocket_url"]
        ws_url = args.base_url.replace("http", "ws", 1).rstrip("/") + ws_path
        if args.from_frame:
            ws_url += "?" + urlencode({"from_frame": args.from_frame})
        # the key as a header (not ?token=, which browsers need): it stays out of access logs
        last = asyncio.run(follow(ws_url, task_id, tracks=not args.no_tracks, headers=headers))
    except (httpx.HTTPError, OSError, InvalidStatus) as e:
        log.error("%s", e)
        return 2
    return 0 if last == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
