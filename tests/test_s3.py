"""spoton.sources and spoton.store against a real local S3 server (moto over HTTP)."""

import errno
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from s3server import S3Server, running_s3_server

from spoton.config import get_settings, load_environment
from spoton.sources import FrameReader, discover_location, fetch, filesystem
from spoton.store import RunStore

SIZE = (64, 48)
CALIBRATION = {
    "ground_plane": {"width": 1000, "height": 500, "pixels_per_meter": 100},
    "cameras": [
        {
            "id": camera,
            "source_points": [[0, 0], [64, 0], [64, 48], [0, 48]],
            "destination_points": [[0, 0], [1000, 0], [1000, 500], [0, 500]],
        }
        for camera in ("c01", "c02")
    ],
}


def write_video(path: Path, n: int, level: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, SIZE)
    for i in range(n):
        writer.write(np.full((SIZE[1], SIZE[0], 3), level + 10 * i, np.uint8))
    writer.release()
    return path


def gets(server: S3Server) -> list[str]:
    """Object downloads (GETs of keys, not bucket listings)."""
    return [r for r in server.requests if r.startswith("GET ") and "list-type" not in r]


@pytest.fixture
def cache_dir(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep calibration downloads out of the repository's .cache."""
    monkeypatch.setenv("SPOTON_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    return tmp_path / "cache"


@pytest.fixture
def bucket(s3: S3Server, s3_bucket: str, tmp_path: Path, cache_dir: Path) -> str:
    """``s3://…`` holding video_lab/c01/sub_video_0{1,2}.mp4, video_lab/c02/*.png, calibration."""
    local = tmp_path / "layout"
    write_video(local / "video_lab" / "c01" / "sub_video_01.mp4", 6)
    write_video(local / "video_lab" / "c01" / "sub_video_02.mp4", 4, level=100)
    for i in range(3):
        frames = local / "video_lab" / "c02"
        frames.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(frames / f"{i:04d}.png"), np.full((SIZE[1], SIZE[0], 3), i, np.uint8))
    (local / "homography_data").mkdir()
    (local / "homography_data" / "lab.json").write_text(json.dumps(CALIBRATION))
    s3.upload_dir(local, s3_bucket)
    s3.reset_counters()
    return s3_bucket


def test_s3_stack_versions_work_together() -> None:
    import aiobotocore
    import moto
    import s3fs

    assert s3fs.__version__ and aiobotocore.__version__ and moto.__version__


def test_discover_fetch_and_read_from_s3(s3: S3Server, bucket: str, cache_dir: Path) -> None:
    loc = discover_location(bucket, "lab")
    assert loc.cameras == ["c01", "c02"]
    assert loc.chunks == {
        "c01": [f"{bucket}/video_lab/c01/sub_video_0{k}.mp4" for k in (1, 2)],
        "c02": [f"{bucket}/video_lab/c02"],
    }
    assert loc.calibration_file is not None and loc.calibration_file.is_relative_to(cache_dir)
    assert json.loads(loc.calibration_file.read_text()) == CALIBRATION
    assert loc.fps is None  # remote headers are not downloaded just for fps

    video = fetch(loc.chunks["c01"][1], cache_dir)
    assert video.path.is_relative_to(cache_dir) and video.path.name == "sub_video_02.mp4"
    assert video.content_key.startswith("etag:")
    with FrameReader(video.path) as reader:
        levels = [round(float(f.mean())) for _, f in reader]
    assert levels == pytest.approx([100, 110, 120, 130], abs=6)  # lossy codec

    frames = fetch(loc.chunks["c02"][0], cache_dir)
    assert frames.path.is_dir() and frames.content_key.startswith("listing:")
    with FrameReader(frames.path) as reader:
        assert [(i, int(f.mean())) for i, f in reader] == [(0, 0), (1, 1), (2, 2)]
    assert [p for p in cache_dir.rglob("*") if p.name.startswith(".partial")] == []


def test_load_environment_discovers_an_unconfigured_site_on_s3(bucket: str) -> None:
    env = load_environment("lab", bucket)
    assert env.cameras == ("c01", "c02") and env.video_dir == "video_lab"
    assert sorted(env.calibration) == ["c01", "c02"]
    assert (env.plane.width_m, env.plane.height_m) == (10.0, 5.0)
    corner = env.calibration["c01"].to_map(np.array([[64.0, 48.0]]))
    np.testing.assert_allclose(corner, [[10.0, 5.0]], atol=1e-6)


def test_fetch_downloads_once_and_again_when_the_object_changes(
    s3: S3Server, bucket: str, cache_dir: Path
) -> None:
    url = f"{bucket}/video_lab/c01/sub_video_01.mp4"
    first = fetch(url, cache_dir)
    assert len(gets(s3)) == 1
    assert fetch(url, cache_dir) == first
    assert len(gets(s3)) == 1, "an unchanged object was downloaded again"

    s3.put(url, write_video(cache_dir.parent / "new.mp4", 9).read_bytes())
    second = fetch(url, cache_dir)
    assert second.content_key != first.content_key and second.path != first.path
    assert len(gets(s3)) == 2
    with FrameReader(second.path) as reader:
        assert sum(1 for _ in reader) == 9

    folder = f"{bucket}/video_lab/c02"
    fetch(folder, cache_dir)
    downloads = len(gets(s3))
    fetch(folder, cache_dir)
    assert len(gets(s3)) == downloads


def test_fetch_missing_object_names_the_url(bucket: str, cache_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{bucket}/video_lab/c01/nope.mp4"):
        fetch(f"{bucket}/video_lab/c01/nope.mp4", cache_dir)


def test_run_store_round_trips_on_s3(s3: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    store = RunStore(f"{s3_bucket}/runs", "run-1")
    local = RunStore(tmp_path, "run-1")
    assert store.url("manifest.json") == f"{s3_bucket}/runs/run-1/manifest.json"

    df = pd.DataFrame({"camera_id": ["c01", "c02"], "track_id": [1, 2], "global_id": [0, 0]})
    url = store.write_parquet("identities.parquet", df)
    assert url == f"{s3_bucket}/runs/run-1/identities.parquet"
    local.write_parquet("identities.parquet", df)
    assert store.read_bytes("identities.parquet") == local.read_bytes("identities.parquet")
    pd.testing.assert_frame_equal(store.read_parquet("identities.parquet"), df)

    emb = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    store.write_npz("c01/s1/embeddings.npz", track_id=np.array([1, 2]), embedding=emb)
    np.testing.assert_array_equal(store.read_npz("c01/s1/embeddings.npz")["embedding"], emb)

    store.update_manifest(timings={"download": 1.0})
    store.update_manifest(timings={"track": 2.0}, status="COMPLETED")
    assert store.read_json("manifest.json") == {
        "status": "COMPLETED", "timings": {"download": 1.0, "track": 2.0}
    }
    assert store.exists("manifest.json") and not store.exists("nope.json")
    assert store.list() == ["c01/s1/embeddings.npz", "identities.parquet", "manifest.json"]
    assert store.list("c01") == ["c01/s1/embeddings.npz"]
    assert s3.keys(f"{s3_bucket}/runs") == [f"runs/run-1/{rel}" for rel in store.list()]
    with pytest.raises(FileNotFoundError, match="runs/run-1/nope.json"):
        store.read_json("nope.json")


# ------------------------------------------------------------ transient failures


def test_transient_503_surfaces_and_a_retry_succeeds(
    s3: S3Server, bucket: str, cache_dir: Path
) -> None:
    url = f"{bucket}/video_lab/c01/sub_video_01.mp4"
    s3.fail_next(1)
    with pytest.raises(OSError) as err:
        fetch(url, cache_dir)
    # Transient (a retry may help): an OSError, not a missing file, naming the URL.
    assert not isinstance(err.value, FileNotFoundError)
    assert err.value.errno == errno.EBUSY and url in str(err.value)
    assert s3.failures_served == 1
    assert fetch(url, cache_dir).path.is_file()

    s3.fail_next(1)
    with pytest.raises(OSError, match=bucket) as err:
        discover_location(bucket, "lab")
    assert err.value.errno == errno.EBUSY
    assert discover_location(bucket, "lab").cameras == ["c01", "c02"]

    store = RunStore(f"{bucket}/runs", "r1")
    s3.fail_next(1)
    with pytest.raises(OSError, match="runs/r1/manifest.json"):
        store.write_json("manifest.json", {"a": 1})
    assert s3.keys(f"{bucket}/runs") == []  # nothing half-written
    store.write_json("manifest.json", {"a": 1})
    assert store.read_json("manifest.json") == {"a": 1}


def test_server_can_fail_its_first_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_s3_server(fail_first_n=2) as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        bucket = server.create_bucket()  # the helper's own calls bypass injection
        server.put(f"{bucket}/x.txt", b"hello")
        fs, path = filesystem(f"{bucket}/x.txt")
        for _ in range(2):
            with pytest.raises(OSError, match="Service Unavailable"):
                fs.cat_file(path)
        assert fs.cat_file(path) == b"hello"
        assert server.failures_served == 2
    get_settings.cache_clear()


def test_transport_retries_absorb_a_transient_503(s3: S3Server, bucket: str) -> None:
    """Production keeps botocore's retries: a lone 503 never reaches the pipeline."""
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=s3.endpoint_url,
        config_kwargs={"retries": {"max_attempts": 2, "mode": "standard"}},
        skip_instance_cache=True,
    )
    s3.fail_next(1)
    assert fs.cat_file(f"{bucket[5:]}/homography_data/lab.json") == json.dumps(CALIBRATION).encode()
    assert s3.failures_served == 1
