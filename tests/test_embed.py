"""Embedders: shapes, normalisation, empty input, and loading tiny local weight files."""

import json
from pathlib import Path

import numpy as np
import pytest

from spoton.embed import ColorEmbedder, Embedder, make_embedder


def frame_with_people() -> tuple[np.ndarray, np.ndarray]:
    """Grey frame with a red-over-blue and a green-over-black 'person'."""
    img = np.full((240, 320, 3), 128, np.uint8)
    img[40:100, 40:80] = (0, 0, 200)  # torso, BGR red
    img[100:160, 40:80] = (200, 0, 0)  # legs, blue
    img[40:100, 200:240] = (0, 180, 0)
    img[100:160, 200:240] = (20, 20, 20)
    boxes = np.array([[40, 30, 80, 165], [200, 30, 240, 165]], np.float32)
    return img, boxes


def test_color_embeddings_are_normalised_and_tell_people_apart():
    img, boxes = frame_with_people()
    emb = make_embedder("color")
    assert isinstance(emb, Embedder)
    out = emb.embed(img, boxes)
    assert out.shape == (2, emb.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    # The same person shifted by a few pixels looks the same; the other one does not.
    shifted = emb.embed(img, boxes + np.array([2, 3, 2, 3], np.float32))
    assert float(out[0] @ shifted[0]) > 0.9
    assert float(out[0] @ out[1]) < 0.5
    # Swapped torso and legs colours are a different person.
    swapped = img.copy()
    swapped[40:100, 40:80], swapped[100:160, 40:80] = img[100:160, 40:80], img[40:100, 40:80]
    assert float(out[0] @ emb.embed(swapped, boxes[:1])[0]) < 0.5


def test_color_embeddings_survive_another_cameras_colour_cast():
    """Another camera: a warmer or cooler white balance and another exposure over the whole frame."""
    img = np.full((240, 320, 3), 120, np.uint8)  # a grey floor, muted clothes (no clipping)
    img[40:100, 40:80], img[100:160, 40:80] = (70, 110, 150), (140, 110, 80)
    img[40:100, 200:240], img[100:160, 200:240] = (80, 150, 90), (60, 60, 60)
    img = np.clip(img + np.random.default_rng(0).normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    boxes = np.array([[40, 30, 80, 165], [200, 30, 240, 165]], np.float32)
    corrected = make_embedder("color")
    raw = make_embedder("color", colour_constancy="none")
    for gains in ([0.8, 1.0, 1.25], [1.2, 1.0, 0.8]):
        for exposure in (1.0, 1.3):
            cast = np.clip(img * np.array(gains) * exposure, 0, 255).astype(np.uint8)
            assert float(corrected.embed(img, boxes)[0] @ corrected.embed(cast, boxes)[0]) > 0.95
            assert float(raw.embed(img, boxes)[0] @ raw.embed(cast, boxes)[0]) < 0.6
            assert float(corrected.embed(img, boxes)[0] @ corrected.embed(cast, boxes)[1]) < 0.3
    with pytest.raises(ValueError, match="colour_constancy"):
        make_embedder("color", colour_constancy="retinex")


def test_color_embeddings_are_the_same_with_or_without_the_cpp_downscale(monkeypatch):
    # The grey-world statistics shrink the frame 8x with INTER_AREA: in C++ when built,
    # else with OpenCV; both give the same pixels, so the same embeddings.
    import spoton.compiled as compiled

    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(120, 40, (720, 1280, 3)), 0, 255).astype(np.uint8)
    boxes = np.array([[100, 200, 160, 380], [900, 100, 980, 300], [1250, 600, 1300, 720]], np.float32)
    emb = ColorEmbedder()
    assert compiled.native_area_down() is not None, "SpotOn's C++ parts are not built: run `spoton build-native`"
    fast = emb.embed(img, boxes)
    monkeypatch.setattr(compiled, "library", lambda: None)
    np.testing.assert_array_equal(fast, emb.embed(img, boxes))


def test_color_embedder_handles_empty_and_edge_boxes():
    img, _ = frame_with_people()
    emb = ColorEmbedder()
    assert emb.embed(img, np.zeros((0, 4))).shape == (0, emb.dim)
    # Boxes partly or wholly outside the image still give unit rows.
    out = emb.embed(img, np.array([[-20, -10, 30, 60], [310, 230, 400, 300]], np.float32))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        emb.embed(img, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="BGR image"):
        emb.embed(np.zeros((10, 10)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="hue_bins"):
        ColorEmbedder(hue_bins=0)


def test_make_embedder_validates_names_options_and_devices(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown embedder 'sift'"):
        make_embedder("sift")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bins'\]"):
        make_embedder("color", bins=3)
    with pytest.raises(ValueError, match="device"):
        make_embedder("openclip", weights_dir=tmp_path, device="tpu")


def test_missing_weight_files_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        make_embedder("openclip", weights_dir=tmp_path, weights="nothing.bin", device="cpu")
    with pytest.raises(FileNotFoundError, match="osnet_x0_25_msmt17.pt"):
        make_embedder("boxmot-reid", weights_dir=tmp_path, device="cpu")


def test_openclip_loads_a_tiny_local_checkpoint(tmp_path: Path):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    # A tiny architecture registered from a config file, random weights saved
    # locally: exercises the real loading path without any download.
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "SpotOn-Tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("SpotOn-Tiny", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "tiny_clip.pt")
    emb = make_embedder(
        "openclip",
        weights_dir=tmp_path,
        device="cpu",
        model_name="SpotOn-Tiny",
        weights="tiny_clip.pt",
    )
    img, boxes = frame_with_people()
    out = emb.embed(img, boxes)
    assert out.shape == (2, 16) and emb.dim == 16
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert emb.embed(img, np.zeros((0, 4))).shape == (0, 16)
    with pytest.raises(ValueError, match="built-in open_clip architecture"):
        make_embedder("openclip", weights_dir=tmp_path, model_name="hf-hub:x/y", device="cpu")


def test_boxmot_reid_loads_a_tiny_local_checkpoint(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from boxmot.reid.core.registry import ReIDModelRegistry

    # Random OSNet x0.25 weights under the file name boxmot reads the architecture from.
    torch.manual_seed(0)
    net = ReIDModelRegistry.build_model("osnet_x0_25", None, num_classes=1, pretrained=False)
    path = tmp_path / "osnet_x0_25_msmt17.pt"
    torch.save(net.state_dict(), path)
    emb = make_embedder("boxmot-reid", weights_dir=tmp_path, device="cpu")
    img, boxes = frame_with_people()
    out = emb.embed(img, boxes)
    assert out.shape == (2, emb.dim) and emb.dim > 0
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)
    assert emb.embed(img, np.zeros((0, 4))).shape == (0, emb.dim)
    (tmp_path / "mystery.pt").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="architecture"):
        make_embedder("boxmot-reid", weights_dir=tmp_path, weights="mystery.pt", device="cpu")


def _person_along(frame: np.ndarray, feet: tuple[float, float], height: float, lean: float) -> np.ndarray:
    """A 30 px wide person (red torso, blue legs) whose head is ``lean`` px right of the feet; its box."""
    import cv2

    fx, fy = feet
    hx, hy = fx + lean, fy - height

    def quad(a: float, b: float) -> np.ndarray:  # the body between fractions a < b of the height (0 = feet)
        pa = (fx + a * lean, fy - a * height)
        pb = (fx + b * lean, fy - b * height)
        corners = [[pa[0] - 15, pa[1]], [pa[0] + 15, pa[1]], [pb[0] + 15, pb[1]], [pb[0] - 15, pb[1]]]
        return np.round(corners).astype(np.int32)

    cv2.fillPoly(frame, [quad(0.0, 0.5)], (200, 60, 30))  # legs, BGR blue
    cv2.fillPoly(frame, [quad(0.5, 0.88)], (40, 40, 210))  # torso, red
    cv2.fillPoly(frame, [quad(0.88, 1.0)], (150, 180, 220))  # head
    xs = [fx - 15, fx + 15, hx - 15, hx + 15]
    return np.array([[min(xs), hy, max(xs), fy]], np.float32)


def test_color_crops_follow_a_slanted_person():
    from types import SimpleNamespace

    floor = np.full((400, 600, 3), 128, np.uint8)
    upright, slanted = floor.copy(), floor.copy()
    box_upright = _person_along(upright, (300, 300), 200, 0)
    # Verticals meet at (300, 1300), below the image (a camera looking down): a
    # person standing at (100, 380) leans outwards, head about 40 px left of the feet.
    vp = np.array([300.0, 1300.0, 1.0])
    feet = (100.0, 380.0)
    lean = (feet[0] - vp[0]) / (vp[1] - feet[1]) * 200  # axis from the feet away from the vanishing point
    box_slanted = _person_along(slanted, feet, 200, lean)
    plain = ColorEmbedder()
    camera = plain.for_camera(SimpleNamespace(vertical_vp=vp))
    assert plain.vertical_vp is None  # for_camera gives a copy
    ref = plain.embed(upright, box_upright)[0]
    sim_plain = float(plain.embed(slanted, box_slanted)[0] @ ref)
    sim_camera = float(camera.embed(slanted, box_slanted)[0] @ ref)
    assert sim_camera > 0.95 and sim_camera > sim_plain + 0.05, (sim_plain, sim_camera)
    # Upright people (and cameras without K, R) are cropped as before.
    np.testing.assert_array_equal(camera.embed(upright, box_upright), plain.embed(upright, box_upright))
    assert plain.for_camera(SimpleNamespace(vertical_vp=None)).vertical_vp is None
