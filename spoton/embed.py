"""Appearance embeddings of person boxes: the ``Embedder`` protocol and implementations.

Every embedder returns (N, D) float32 rows, L2-normalised, and (0, D) for N = 0,
so callers never special-case empty frames. Neural embedders load weights only
from local files (``weights/``, see weights/README.md); a missing file fails with
a message naming it, never with a download.

- ``color`` (default, weightless): HSV histograms of the upper and lower body.
- ``openclip``: image tower of an open_clip model from a local checkpoint.
- ``boxmot-reid``: a boxmot ReID backbone (OSNet, LMBN, ...) from a local ``.pt``.
"""

import copy
import inspect
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from spoton import compiled
from spoton.types import l2_normalise

OPENCLIP_DEFAULT_MODEL = "ViT-B-32"
OPENCLIP_DEFAULT_WEIGHTS = "open_clip_ViT-B-32_laion2b_s34b_b79k.bin"
BOXMOT_REID_DEFAULT_WEIGHTS = "osnet_x0_25_msmt17.pt"


@runtime_checkable
class Embedder(Protocol):
    dim: int

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """(N, dim) float32 L2-normalised appearance of the boxes in a BGR frame."""
        ...


def resolve_device(device: str | None) -> str:
    """``auto`` picks CUDA when torch sees a GPU; explicit names pass through validated."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if name.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
        return name
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def check_options(factory: Any, options: dict[str, Any], what: str) -> None:
    """Unknown option names are typos in a user's config: name them instead of a TypeError."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        known = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
        raise ValueError(f"unknown option(s) {unknown} for {what}; known: {known}")


def weight_file(name: str | Path, weights_dir: Path | str | None, *, what: str, source: str) -> Path:
    """Local weight file for ``name`` (absolute, or relative to ``weights_dir``); never downloads."""
    path = Path(name)
    if not path.is_absolute() and weights_dir is not None:
        path = Path(weights_dir) / path
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found: {path}. Provide the file ({source}); "
            "see weights/README.md. Nothing is downloaded at run time."
        )
    return path


def _validated_boxes(frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"frame must be an (H, W, 3) BGR image, got shape {shape}")
    boxes = np.asarray(xyxy, dtype=np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {boxes.shape}")
    return boxes


def _pixel_boxes(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Integer boxes clipped to the image, at least one pixel wide and high."""
    h, w = frame.shape[:2]
    b = np.round(boxes).astype(np.int64)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    b[:, 0] = np.minimum(b[:, 0], w - 1)
    b[:, 1] = np.minimum(b[:, 1], h - 1)
    b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
    b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
    return b


# ------------------------------------------------------------------- colour


COLOUR_CONSTANCY = ("grayworld", "none")


def _grey_world(frame: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """Crops with the frame's colour cast and exposure removed (grey-world assumption).

    Cameras differ in white balance and exposure, so one shirt has different
    raw colours in each view; scaling each channel so the frame averages
    mid-grey makes histograms comparable across cameras (it halves the
    cross-camera distance of one person on the synthetic scenes) at the cost
    of one small resize per frame.
    """
    h, w = frame.shape[:2]
    small = compiled.resize_area(frame, (max(1, w // 8), max(1, h // 8)))
    mean = small.reshape(-1, 3).mean(axis=0)
    gain = (128.0 / np.maximum(mean, 1.0)).astype(np.float32)
    return np.clip(crops.astype(np.float32) * gain, 0, 255).astype(np.uint8)


class ColorEmbedder:
    """HSV colour histograms of the torso and the legs, weightless and fast.

    Clothing colour is the most stable appearance cue a weightless method has;
    splitting torso and legs keeps "red shirt, blue jeans" apart from the
    reverse. Only the central columns and the body rows (no head, no feet) are
    used, so background at the box sides and the floor at its bottom weigh
    little. Histograms are square-rooted (Hellinger) so cosine similarity of
    the embeddings behaves like the Bhattacharyya coefficient. Colours are
    first corrected for each camera's cast (``colour_constancy="grayworld"``).

    ``for_camera(geometry)`` gives an embedder for one calibrated camera: a
    camera looking down sees people away from the image centre slanted, so
    their box holds the body along a slanted axis with floor in two corners;
    crops then follow that axis (towards the vertical vanishing point), one
    body width wide, so a person looks alike anywhere in the view.
    """

    vertical_vp: np.ndarray | None = None

    def __init__(
        self,
        hue_bins: int = 12,
        sat_bins: int = 4,
        val_bins: int = 4,
        central_width: float = 0.6,
        crop_size: tuple[int, int] = (24, 64),
        colour_constancy: str = "grayworld",
    ) -> None:
        if colour_constancy not in COLOUR_CONSTANCY:
            raise ValueError(f"colour_constancy must be one of {COLOUR_CONSTANCY}, got {colour_constancy!r}")
        self.colour_constancy = colour_constancy
        for name, value in (("hue_bins", hue_bins), ("sat_bins", sat_bins), ("val_bins", val_bins)):
            if not (isinstance(value, int) and 1 <= value <= 64):
                raise ValueError(f"{name} must be an integer in [1, 64], got {value!r}")
        if not 0.1 <= central_width <= 1.0:
            raise ValueError(f"central_width must be in [0.1, 1], got {central_width}")
        if len(crop_size) != 2 or min(crop_size) < 4:
            raise ValueError(f"crop_size must be (width, height) >= 4 px, got {crop_size}")
        self.bins = (hue_bins, sat_bins, val_bins)
        self.central_width = float(central_width)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.dim = 2 * hue_bins * sat_bins * val_bins

    def _codes(self, hsv: np.ndarray) -> np.ndarray:
        """Joint bin index of each HSV pixel (OpenCV hue range is 0..179)."""
        hb, sb, vb = self.bins
        h = (hsv[..., 0].astype(np.int32) * hb) // 180
        s = (hsv[..., 1].astype(np.int32) * sb) // 256
        v = (hsv[..., 2].astype(np.int32) * vb) // 256
        return (h * sb + s) * vb + v

    def for_camera(self, geometry: Any) -> "ColorEmbedder":
        """This embedder for one camera: crops follow its people's slant when K and R are known."""
        out = copy.copy(self)
        vp = getattr(geometry, "vertical_vp", None)
        out.vertical_vp = None if vp is None else np.asarray(vp, np.float64).reshape(3)
        return out

    def _slanted_crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """(ch, cw, 3) crop along the person's axis in ``box``; None when the person stands upright."""
        assert self.vertical_vp is not None
        x1, y1, x2, y2 = (float(v) for v in box)
        bw, bh = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        vx, vy, vw = self.vertical_vp
        dx, dy = vx - cx * vw, vy - cy * vw
        if abs(dy) < 1e-9:
            return None
        slope = dx / dy  # horizontal shift of the axis per image row
        slant = abs(slope) * bh
        if slant < 0.1 * bw:
            return None
        body = max(bw - slant, 0.25 * bw)
        cw, ch = self.crop_size
        # Sample twice as densely, then average down (as the upright crop's resize does).
        gw, gh = 2 * cw, 2 * ch
        ys = y1 + (np.arange(gh) + 0.5) * bh / gh
        cols = ((np.arange(gw) + 0.5) / gw - 0.5) * self.central_width * body
        map_x = (cx + slope * (ys - cy))[:, None] + cols[None, :]
        map_y = np.repeat(ys[:, None], gw, axis=1)
        dense = cv2.remap(
            frame, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return cv2.resize(dense, (cw, ch), interpolation=cv2.INTER_AREA)

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        boxes = _validated_boxes(frame, xyxy)
        n = boxes.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        cw, ch = self.crop_size
        # Crops resized to one small size: histograms of near and far people
        # then count the same number of pixels, and one vectorised pass bins all.
        crops = np.empty((n, ch, cw, 3), np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(_pixel_boxes(frame, boxes)):
            if self.vertical_vp is not None:
                slanted = self._slanted_crop(frame, boxes[i])
                if slanted is not None:
                    crops[i] = slanted
                    continue
            bw = x2 - x1
            margin = int(round(bw * (1.0 - self.central_width) / 2.0))
            xa, xb = x1 + margin, max(x2 - margin, x1 + margin + 1)
            crops[i] = cv2.resize(frame[y1:y2, xa:xb], (cw, ch), interpolation=cv2.INTER_AREA)
        if self.colour_constancy == "grayworld":
            crops = _grey_world(frame, crops)
        hsv = cv2.cvtColor(crops.reshape(n * ch, cw, 3), cv2.COLOR_BGR2HSV).reshape(n, ch, cw, 3)
        codes = self._codes(hsv)
        # Torso: 15-50 % of the height (below the head); legs: 50-90 % (above the floor).
        torso = codes[:, int(0.15 * ch) : int(0.5 * ch)].reshape(n, -1)
        legs = codes[:, int(0.5 * ch) : int(0.9 * ch)].reshape(n, -1)
        k = self.dim // 2
        # Counts per (crop, bin) in one bincount (np.add.at is an order of magnitude slower).
        rows = np.arange(n)[:, None] * (2 * k)
        bins = np.concatenate([(rows + torso).ravel(), (rows + legs + k).ravel()])
        hist = np.bincount(bins, minlength=n * 2 * k).reshape(n, 2 * k).astype(np.float32)
        hist[:, :k] /= max(torso.shape[1], 1)
        hist[:, k:] /= max(legs.shape[1], 1)
        return l2_normalise(np.sqrt(hist))


# ----------------------------------------------------------------- open_clip


class OpenClipEmbedder:
    """Image embeddings of person crops from an open_clip model's visual tower.

    ``pretrained`` is always a local file: open_clip treats a known tag
    ("openai", "laion2b_...") as a download request, so tags are rejected.
    """

    def __init__(
        self,
        model_name: str = OPENCLIP_DEFAULT_MODEL,
        weights: str | Path = OPENCLIP_DEFAULT_WEIGHTS,
        *,
        weights_dir: Path | str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        half: bool = False,
    ) -> None:
        import open_clip
        import torch

        if ":" in model_name:
            raise ValueError(f"model_name must be a built-in open_clip architecture, got {model_name!r}")
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {model_name!r}; see open_clip.list_models()")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        path = weight_file(
            weights,
            weights_dir,
            what=f"open_clip {model_name}",
            source="an open_clip checkpoint for that architecture, e.g. open_clip_pytorch_model.bin "
            "from the matching laion/CLIP-* repository on the Hugging Face hub",
        )
        model, _, _ = open_clip.create_model_and_transforms(
            model_name,
            pretrained=str(path.resolve()),
            device=self.device,
            pretrained_image=False,
            pretrained_text=False,
        )
        self.model = model.eval()
        self.half = bool(half) and self.device.startswith("cuda")
        if self.half:
            self.model = self.model.half()
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else (int(size[1]), int(size[0]))
        dtype = torch.float16 if self.half else torch.float32
        self.mean = torch.tensor(cfg.get("mean", (0.481, 0.458, 0.408)), dtype=dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.269, 0.261, 0.276)), dtype=dtype).view(1, 3, 1, 1)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        self.batch_size = int(batch_size)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.size[1], self.size[0], dtype=dtype, device=self.device)
            self.dim = int(self.model.encode_image(probe).shape[-1])

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        import torch

        boxes = _validated_boxes(frame, xyxy)
        if boxes.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        w, h = self.size
        # Squash each crop to the model's input (people are tall; padding would
        # waste most of the input on background) and normalise on the device.
        crops = np.stack(
            [
                cv2.resize(frame[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_LINEAR)
                for x1, y1, x2, y2 in _pixel_boxes(frame, boxes)
            ]
        )[..., ::-1]
        out = []
        with torch.no_grad():
            for i in range(0, len(crops), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(crops[i : i + self.batch_size]))
                x = batch.to(self.device).permute(0, 3, 1, 2).to(self.mean.dtype) / 255.0
                out.append(self.model.encode_image((x - self.mean) / self.std).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))


# --------------------------------------------------------------- boxmot ReID


class BoxmotReidEmbedder:
    """A boxmot ReID backend (architecture named by the file, e.g. osnet_x0_25_*.pt)."""

    def __init__(
        self,
        weights: str | Path = BOXMOT_REID_DEFAULT_WEIGHTS,
        *,
        weights_dir: Path | str | None = None,
        device: str = "auto",
        half: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        path = weight_file(
            weights,
            weights_dir,
            what="boxmot ReID",
            source="a boxmot ReID checkpoint such as osnet_x0_25_msmt17.pt from the boxmot releases; "
            "the file name must name the architecture",
        )
        if Path(path).suffix != ".pt":
            raise ValueError(f"boxmot-reid weights must be a PyTorch .pt file, got {path.name!r}")
        from boxmot.reid.core.registry import ReIDModelRegistry
        from boxmot.reid.core.runtime import ReID

        if ReIDModelRegistry.get_model_name(path) is None:
            raise ValueError(
                f"cannot tell the ReID architecture from {path.name!r}; name the file after it "
                "(e.g. osnet_x0_25_msmt17.pt, lmbn_n_duke.pt)"
            )
        half = bool(half) and self.device.startswith("cuda")
        # An existing absolute .pt path makes boxmot skip its download step and
        # build the backbone with pretrained=False (no ImageNet fetch either).
        self.backend = ReID(weights=path.resolve(), device=self.device, half=half).model
        empty_probe = np.zeros((64, 32, 3), np.uint8)
        feats = np.asarray(self.backend.get_features(np.array([[0, 0, 32, 64]], np.float32), empty_probe))
        self.dim = int(feats.shape[-1])

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        boxes = _validated_boxes(frame, xyxy)
        if boxes.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        feats = np.asarray(self.backend.get_features(_pixel_boxes(frame, boxes).astype(np.float32), frame))
        return l2_normalise(feats.reshape(boxes.shape[0], self.dim))


EMBEDDERS = ("color", "openclip", "boxmot-reid")


def make_embedder(
    name: str, *, weights_dir: Path | str | None = None, device: str = "auto", **options: Any
) -> Embedder:
    """Embedder by name; ``options`` go to its constructor (see the classes above)."""
    classes: dict[str, Any] = {
        "color": ColorEmbedder,
        "openclip": OpenClipEmbedder,
        "boxmot-reid": BoxmotReidEmbedder,
    }
    cls = classes.get(name.strip().lower())
    if cls is None:
        raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
    check_options(cls, options, f"embedder {name!r}")
    if cls is ColorEmbedder:
        return ColorEmbedder(**options)
    return cls(weights_dir=weights_dir, device=device, **options)
