"""spoton.sources on real files written here: discovery, cache, probe, FrameReader, damage."""

import hashlib
import json
import pickle
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from spoton import sources
from spoton.config import Environment
from spoton.geometry import GroundPlane
from spoton.sources import (
    CorruptVideoError,
    FrameReader,
    chunk_name,
    discover_location,
    fetch,
    list_chunks,
    probe,
)

SIZE = (96, 64)  # width, height


def frame_of(i: int, rng: np.random.Generator) -> np.ndarray:
    """Frame ``i``: mean brightness 20 + 8 i (readable back through lossy codecs) plus noise."""
    w, h = SIZE
    base = np.full((h, w, 3), 20 + 8 * i, np.int16)
    return np.clip(base + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)


def write_video(path: Path, n: int = 24, fps: float = 25.0) -> Path:
    """mp4v via OpenCV (moov index at the end of the file, as most recorders write it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    rng = np.random.default_rng(0)
    for i in range(n):
        writer.write(frame_of(i, rng))
    writer.release()
    return path


def write_pyav(path: Path, n: int = 24, fmt: str | None = None, faststart: bool = False) -> Path:
    """MPEG-4 via PyAV: ``faststart`` puts the index first; mkv stores no frame count."""
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt, options=options) as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frame_of(i, rng), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def brightness_index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 20) / 8)


def reader_threads(path: Path) -> list[threading.Thread]:
    """Live decode threads of ``path`` (other tests' readers are none of our business)."""
    return [t for t in threading.enumerate() if t.name == f"FrameReader[{path}]"]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    for name in ("sub_video_2.mp4", "sub_video_10.mp4", "sub_video_1.mp4"):
        write_video(root / "video_demo" / "c01" / name, n=4)
    (root / "video_demo" / "c01" / "._sub_video_1.mp4").write_bytes(b"AppleDouble junk")
    frames = root / "video_demo" / "c2"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:04d}.png"), frame_of(i, rng))
    (root / "video_demo" / ".DS_Store").write_bytes(b"")
    (root / "homography_data").mkdir()
    (root / "homography_data" / "demo.json").write_text("{}")
    return root


# ----------------------------------------------------------------- discovery


def test_discover_location_finds_cameras_chunks_and_calibration(layout: Path) -> None:
    loc = discover_location(str(layout), "demo")
    assert loc.video_dir == "video_demo"
    assert loc.cameras == ["c01", "c2"]
    cam = f"{layout}/video_demo/c01"
    # Natural order: sub_video_2 before sub_video_10; dot-files are ignored.
    assert loc.chunks["c01"] == [f"{cam}/sub_video_{k}.mp4" for k in (1, 2, 10)]
    assert loc.chunks["c2"] == [f"{layout}/video_demo/c2"]
    assert loc.calibration_file == layout / "homography_data" / "demo.json"
    assert loc.fps == pytest.approx(25.0)


def test_discover_location_accepts_file_urls_and_other_video_dirs(layout: Path) -> None:
    (layout / "video_demo").rename(layout / "video_s14")
    loc = discover_location(f"file://{layout}", "demo", video_dir="video_s14")
    assert loc.chunks["c01"][0] == f"{layout}/video_s14/c01/sub_video_1.mp4"
    local = fetch(loc.chunks["c01"][0], layout / "cache").path
    assert local == layout / "video_s14" / "c01" / "sub_video_1.mp4"


def test_local_chunk_urls_are_absolute(layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks may run in another working directory than the one that discovered the chunks."""
    monkeypatch.chdir(layout.parent)
    loc = discover_location(layout.name, "demo")
    assert loc.chunks["c2"] == [f"{layout}/video_demo/c2"]
    assert list_chunks(make_env(layout.name), "c2") == [f"{layout}/video_demo/c2"]


def test_discover_location_without_calibration(layout: Path) -> None:
    (layout / "homography_data" / "demo.json").unlink()
    assert discover_location(str(layout), "demo").calibration_file is None


def test_discover_location_errors_say_what_is_wrong(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_location(str(tmp_path / "nowhere"), "demo")
    with pytest.raises(FileNotFoundError, match=r"no video_lab/ folder .*video_demo"):
        discover_location(str(layout), "lab")
    (layout / "video_empty").mkdir()
    with pytest.raises(ValueError, match="no camera folders"):
        discover_location(str(layout), "empty")
    (layout / "video_demo" / "c03").mkdir()
    (layout / "video_demo" / "c03" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"camera folder .*c03 holds no videos"):
        discover_location(str(layout), "demo")
    with pytest.raises(ValueError, match="environment_id"):
        discover_location(str(layout), "")


def make_env(videos_url: str, sub_videos: tuple[str, ...] = ()) -> Environment:
    return Environment(
        environment_id="demo",
        cameras=("c01", "c2"),
        plane=GroundPlane(10.0, 10.0),
        calibration={},
        videos_url=videos_url,
        video_dir="video_demo",
        sub_videos=sub_videos,
    )


def test_list_chunks_discovers_or_follows_sub_videos(layout: Path, tmp_path: Path) -> None:
    cam = f"{layout}/video_demo/c01"
    env = make_env(str(layout))
    assert list_chunks(env, "c01") == [f"{cam}/sub_video_{k}.mp4" for k in (1, 2, 10)]
    assert list_chunks(env, "c2") == [f"{layout}/video_demo/c2"]
    pinned = make_env(str(layout), sub_videos=("sub_video_10.mp4", "sub_video_1.mp4"))
    assert list_chunks(pinned, "c01") == [f"{cam}/sub_video_10.mp4", f"{cam}/sub_video_1.mp4"]
    with pytest.raises(ValueError, match="'c09' is not in environment 'demo'"):
        list_chunks(env, "c09")
    with pytest.raises(FileNotFoundError, match="camera folder not found"):
        list_chunks(env, "c01", videos_url=str(tmp_path / "elsewhere"))


def test_chunk_name() -> None:
    assert chunk_name("s3://b/video_s14/c09/sub_video_01.mp4") == "sub_video_01"
    assert chunk_name("/data/video_demo/c01/clip.MKV") == "clip"
    assert chunk_name("/data/Image_subsets/C1/") == "frames"
    with pytest.raises(ValueError):
        chunk_name("")


# --------------------------------------------------------------------- cache


def test_fetch_local_file_uses_it_in_place_and_hashes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = write_video(tmp_path / "v.mp4", n=3)
    cache = tmp_path / "cache"
    got = fetch(str(video), cache)
    assert got.path == video
    assert got.content_key == "sha256:" + hashlib.sha256(video.read_bytes()).hexdigest()

    def no_rehash(*_: object) -> None:
        raise AssertionError("an unchanged file was hashed again")

    monkeypatch.setattr(sources.hashlib, "file_digest", no_rehash)
    assert fetch(video, cache) == got
    monkeypatch.undo()
    write_video(video, n=5)
    assert fetch(video, cache).content_key != got.content_key


def test_fetch_local_image_folder_keys_on_its_listing(layout: Path) -> None:
    folder = layout / "video_demo" / "c2"
    first = fetch(folder, layout / "cache")
    assert first.path == folder and first.content_key.startswith("listing:")
    assert fetch(folder, layout / "cache") == first
    cv2.imwrite(str(folder / "0003.png"), np.zeros((8, 8, 3), np.uint8))
    assert fetch(folder, layout / "cache").content_key != first.content_key


def test_fetch_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        fetch(tmp_path / "nope.mp4", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="memory://nowhere/nope.mp4"):
        fetch("memory://nowhere/nope.mp4", tmp_path / "cache")


def test_fetch_remote_without_etag_or_mtime_keys_on_content(tmp_path: Path) -> None:
    """fsspec's memory filesystem stands in for a remote that reports only sizes."""
    import fsspec

    mem = fsspec.filesystem("memory")
    data = write_video(tmp_path / "v.mp4", n=3).read_bytes()
    mem.pipe("/spoton-test/v.mp4", data)
    first = fetch("memory:///spoton-test/v.mp4", tmp_path / "cache")
    assert first.content_key == "sha256:" + hashlib.sha256(data).hexdigest()
    assert first.path.read_bytes() == data and first.path.name == "v.mp4"
    assert fetch("memory:///spoton-test/v.mp4", tmp_path / "cache") == first
    mem.pipe("/spoton-test/v.mp4", data[:-1] + b"\0")
    assert fetch("memory:///spoton-test/v.mp4", tmp_path / "cache").content_key != first.content_key
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".partial")]
    assert leftovers == []
    mem.rm("/spoton-test", recursive=True)


# ---------------------------------------------------------------------- probe


def test_probe_counts_frames_exactly(tmp_path: Path, layout: Path) -> None:
    assert probe(write_video(tmp_path / "a.mp4", n=17)) == sources.VideoInfo(17, 25.0, *SIZE)
    # Matroska stores no frame count: the demuxed packets give it.
    mkv = write_pyav(tmp_path / "a.mkv", n=13, fmt="matroska")
    assert av.open(str(mkv)).streams.video[0].frames == 0
    assert probe(mkv).frames == 13
    assert probe(layout / "video_demo" / "c2") == sources.VideoInfo(3, 0.0, *SIZE)


def test_probe_truncated_video_counts_the_readable_frames(tmp_path: Path) -> None:
    video = write_pyav(tmp_path / "t.mp4", n=40, faststart=True)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    with FrameReader(video) as reader, pytest.raises(CorruptVideoError):
        for _ in reader:
            pass
    assert 0 < reader.stats.frames < 40
    assert probe(video).frames == reader.stats.frames


def test_probe_rejects_non_videos(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(CorruptVideoError, match="notes.mp4") as err:
        probe(text)
    assert err.value.frames_read == 0
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptVideoError, match="no image frames"):
        probe(tmp_path / "empty")


# ---------------------------------------------------------------- FrameReader


def test_frame_reader_yields_every_frame_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=24)
    with FrameReader(video, prefetch=4) as reader:
        items = list(reader)
    assert [i for i, _ in items] == list(range(24))
    assert [brightness_index(f) for _, f in items] == list(range(24))
    assert all(f.dtype == np.uint8 and f.shape == (SIZE[1], SIZE[0], 3) for _, f in items)
    stats = reader.stats
    assert stats.frames == stats.decoded == 24 and stats.decode_s > 0 and stats.wait_s >= 0
    assert reader_threads(video) == []


def test_frame_reader_start_and_max_frames(tmp_path: Path, layout: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=24)
    with FrameReader(video, start=5, max_frames=4) as reader:
        items = list(reader)
    assert [i for i, _ in items] == [5, 6, 7, 8]
    assert [brightness_index(f) for _, f in items] == [5, 6, 7, 8]
    with FrameReader(layout / "video_demo" / "c2", start=1, max_frames=5) as reader:
        assert [i for i, _ in reader] == [1, 2]


def test_frame_reader_reads_image_folders_in_name_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in (0, 1, 2, 10):  # natural order: 10 after 2
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), frame_of(i, rng), [cv2.IMWRITE_JPEG_QUALITY, 95])
    with FrameReader(tmp_path) as reader:
        assert [(i, brightness_index(f)) for i, f in reader] == [(0, 0), (1, 1), (2, 2), (3, 10)]


def test_frame_reader_early_stop_ends_the_thread(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=24)
    with FrameReader(video, prefetch=2) as reader:
        for i, _ in reader:
            assert len(reader_threads(video)) == 1  # blocked on the full queue, not finished
            if i == 2:
                break
    assert reader_threads(video) == [] and reader.stats.frames == 3
    # Without the context manager: dropping the loop closes the generator.
    reader = FrameReader(video, prefetch=2)
    for i, _ in reader:
        if i == 1:
            break
    assert reader_threads(video) == []
    with pytest.raises(RuntimeError, match="reads once"):
        iter(reader)


def test_close_from_another_thread_is_not_mistaken_for_the_end(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=24)
    with FrameReader(video, prefetch=2) as reader:
        it = iter(reader)
        next(it)
        closer = threading.Thread(target=reader.close)
        closer.start()
        closer.join()
        with pytest.raises(RuntimeError, match="closed while reading"):
            next(it)
    assert reader_threads(video) == []


def test_frame_reader_close_before_reading(tmp_path: Path) -> None:
    reader = FrameReader(write_video(tmp_path / "v.mp4", n=3))
    reader.close()
    reader.close()
    with pytest.raises(RuntimeError):
        iter(reader)


def test_frame_reader_queue_is_bounded(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=40)
    with FrameReader(video, prefetch=3) as reader:
        it = iter(reader)
        next(it)
        time.sleep(0.3)  # ample time to decode all 40 frames if nothing held it back
        # One frame consumed, 3 queued, at most 1 decoded and waiting to be queued.
        assert reader.stats.decoded <= 1 + 3 + 1
        assert len(list(it)) == 39


def test_frame_reader_validates_arguments(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=2)
    for kwargs, name in (({"prefetch": 0}, "prefetch"), ({"max_frames": 0}, "max_frames"),
                         ({"start": -1}, "start"), ({"prefetch": 2.5}, "prefetch")):
        with pytest.raises(ValueError, match=name):
            FrameReader(video, **kwargs)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        FrameReader(tmp_path / "missing.mp4")


# -------------------------------------------------------------------- damage


def read_until_error(path: Path) -> tuple[list[int], CorruptVideoError]:
    seen = []
    with FrameReader(path, prefetch=4) as reader, pytest.raises(CorruptVideoError) as err:
        for i, frame in reader:
            assert brightness_index(frame) == i  # good frames keep their true index
            seen.append(i)
    return seen, err.value


def test_overwritten_middle_yields_good_frames_then_raises(tmp_path: Path) -> None:
    video = write_video(tmp_path / "broken.mp4", n=24)
    data = bytearray(video.read_bytes())
    a, b = int(len(data) * 0.4), int(len(data) * 0.6)
    data[a:b] = bytes(b - a)
    video.write_bytes(bytes(data))
    seen, err = read_until_error(video)
    assert 0 < len(seen) < 24 and seen == list(range(len(seen)))
    assert err.frames_read == len(seen) and err.path == video
    assert "broken.mp4" in str(err) and f"after {len(seen)} good frames" in str(err)
    assert reader_threads(video) == []


def test_truncated_video_yields_good_frames_then_raises(tmp_path: Path) -> None:
    video = write_pyav(tmp_path / "cut.mp4", n=40, faststart=True)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    seen, err = read_until_error(video)
    assert 0 < len(seen) < 40 and err.frames_read == len(seen)
    assert "cut.mp4" in str(err)


def test_truncated_video_with_index_at_the_end_fails_at_once(tmp_path: Path) -> None:
    """OpenCV writes the mp4 index last: cut it off and no frame can be located."""
    video = write_video(tmp_path / "cut.mp4", n=24)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(CorruptVideoError, match="cut.mp4") as err:
        FrameReader(video)
    assert err.value.frames_read == 0


def test_text_file_named_mp4_fails_at_once(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 100)
    with pytest.raises(CorruptVideoError, match=r"fake\.mp4 after 0 good frames"):
        FrameReader(fake)


def test_unreadable_image_in_folder_raises_after_good_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), frame_of(i, rng))
    (tmp_path / "0003.png").write_text("not a png")
    cv2.imwrite(str(tmp_path / "0004.png"), frame_of(4, rng))
    seen, err = read_until_error(tmp_path)
    assert seen == [0, 1, 2] and err.frames_read == 3 and "0003.png" in str(err)


def test_corrupt_video_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(CorruptVideoError("/v/x.mp4", 7, "bad packet")))
    assert (err.path, err.frames_read, err.detail) == (Path("/v/x.mp4"), 7, "bad packet")
    assert str(err) == "corrupt or unreadable video /v/x.mp4 after 7 good frames: bad packet"
    assert isinstance(err, ValueError)


def test_local_hash_index_survives_garbage(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=2)
    key = fetch(video, tmp_path / "cache").content_key
    for index in (tmp_path / "cache" / "sha256-index").iterdir():
        index.write_text(json.dumps({"path": "garbage"}))
    assert fetch(video, tmp_path / "cache").content_key == key
