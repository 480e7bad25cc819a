"""SpotOn's own C++ parts (``spoton/native/*.cpp``), built into one library and loaded with ctypes.

Each is a faster twin of Python or OpenCV code with the same results to the bit
(the tests compare them):

- ``fit_groups.cpp``: bgsub's group fitting, a port of ``BgSubDetector._fit_group``;
- ``shadow_candidates.cpp``: its shadow-coloured pixels, from ``BgSubDetector._shadows``;
- ``boxes_back.cpp``: its rectified boxes mapped back, ``VerticalRectifier.boxes_back``;
- ``area_down.cpp``: INTER_AREA downscaling by a whole factor (OpenCV runs factors
  of 3 and more through a scalar loop), for bgsub's work image and the colour
  embedder's grey-world statistics.

``spoton build-native`` (and ``make venv``) compiles them; without the library
everything runs on the Python / OpenCV paths.
"""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np

_NATIVE_DIR = Path(__file__).resolve().parent / "native"
SOURCES = tuple(
    _NATIVE_DIR / name for name in ("fit_groups.cpp", "shadow_candidates.cpp", "boxes_back.cpp", "area_down.cpp")
)
LIBRARY = _NATIVE_DIR / "_spoton.so"
HOW_TO_BUILD = (
    f"run `spoton build-native` (builds {LIBRARY.name} from {', '.join(p.name for p in SOURCES)} "
    f"with a C++17 compiler)"
)


class FitParams(ctypes.Structure):
    """``spoton_fit_groups``' scalar options (``Params`` in fit_groups.cpp)."""

    _fields_ = [
        ("max_hidden", ctypes.c_double),
        ("min_visible", ctypes.c_double),
        ("bg_weight", ctypes.c_double),
        ("max_widen", ctypes.c_double),
        ("min_fill", ctypes.c_double),
        ("max_people", ctypes.c_int32),
        ("rectified", ctypes.c_int32),
    ]


_p, _i64, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
# Each entry point: the ABI version its ``<name>_abi()`` must report, its result and argument types.
_ENTRY_POINTS: dict[str, tuple[int, Any, list[Any]]] = {
    "spoton_fit_groups": (
        1, ctypes.c_int64,
        [_p, _p, _p, _i64, _i64, _p, _i64, _p, _i64, _i64, _p, ctypes.POINTER(FitParams), _p, _p, _p, _i64],
    ),
    "spoton_shadow_candidates": (1, ctypes.c_int64, [_p, _p, _p, _i64, _i64, _f32, _f32, _f32, _p, _p]),
    "spoton_boxes_back": (1, None, [_p, _i64, _i64, _p, _i64, _p, _p]),
    "spoton_area_down": (1, ctypes.c_int32, [_p, _i64, _p, _i64, _i64, _i64, _i64, _i64]),
}

_lib: Any = None  # the loaded library; False once found missing, stale or of another ABI


def library() -> Any:
    """The library with its entry points typed, or None when it is not built (or older than a source)."""
    global _lib
    if _lib is None:
        _lib = False
        newest = max(src.stat().st_mtime for src in SOURCES)
        if LIBRARY.is_file() and LIBRARY.stat().st_mtime >= newest:
            try:
                lib = ctypes.CDLL(str(LIBRARY))
                if all(getattr(lib, f"{name}_abi")() == abi for name, (abi, _, _) in _ENTRY_POINTS.items()):
                    for name, (_, restype, argtypes) in _ENTRY_POINTS.items():
                        fn = getattr(lib, name)
                        fn.restype, fn.argtypes = restype, argtypes
                    _lib = lib
            except (OSError, AttributeError):
                pass  # unloadable (another platform's build) or an older build: the Python paths
    return _lib or None


def _entry(name: str) -> Any:
    lib = library()
    return None if lib is None else getattr(lib, name)


def native_fit_groups() -> Any:
    """The C++ port of ``BgSubDetector._fit_group`` for all groups of a frame, or None."""
    return _entry("spoton_fit_groups")


def native_shadow_candidates() -> Any:
    """The shadow-colour test of ``BgSubDetector._shadows`` in C++, or None."""
    return _entry("spoton_shadow_candidates")


def native_boxes_back() -> Any:
    """The C++ port of ``VerticalRectifier.boxes_back`` (before its clipping), or None."""
    return _entry("spoton_boxes_back")


def native_area_down() -> Any:
    """INTER_AREA downscaling by a whole factor in C++, or None."""
    return _entry("spoton_area_down")


def area_down(image: np.ndarray, k: int) -> np.ndarray:
    """``cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)`` for h and w
    multiples of ``k`` (3 to 16), bit for bit, about four times faster."""
    down = native_area_down()
    if down is None:
        raise RuntimeError(f"SpotOn's C++ parts are not built: {HOW_TO_BUILD}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"area_down takes uint8 images (h, w[, c]), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if not 3 <= k <= 16 or h % k or w % k:
        raise ValueError(f"area_down needs a factor in [3, 16] dividing the image size, got {k} for {w}x{h}")
    cn = 1 if image.ndim == 2 else image.shape[2]
    src = image  # rows of packed pixels, any row stride; anything else is copied first
    if image.strides[-1] != 1 or (image.ndim == 3 and image.strides[1] != cn) or image.strides[0] < w * cn:
        src = np.ascontiguousarray(image)
    out = np.empty((h // k, w // k) + image.shape[2:], np.uint8)
    if down(src.ctypes.data, src.strides[0], out.ctypes.data, out.strides[0], h // k, w // k, cn, k) != 0:
        raise RuntimeError(f"area_down failed on a {w}x{h}x{cn} image with factor {k}")
    return out


def resize_area(image: np.ndarray, size: tuple[int, int], native: bool = True) -> np.ndarray:
    """``cv2.resize(image, size, interpolation=cv2.INTER_AREA)``: the same pixels, from
    ``area_down`` where ``size`` divides the image by a whole factor >= 3 and the library
    is built (and ``native``), from OpenCV otherwise."""
    h, w = image.shape[:2]
    ow, oh = size
    k = w // ow if ow > 0 else 0
    if (native and 3 <= k <= 16 and w == k * ow and h == k * oh and image.dtype == np.uint8
            and image.ndim in (2, 3) and native_area_down() is not None):
        return area_down(image, k)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def build(compiler: str | None = None) -> Path:
    """Compile the C++ parts into ``LIBRARY`` next to their sources; returns its path.

    Needs a C++17 compiler (``c++``, or ``$CXX``). No fused multiply-adds, so the
    group fitting's arithmetic is NumPy's to the bit.
    """
    global _lib
    cxx = compiler or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("cannot build SpotOn's C++ parts: no C++ compiler (c++, g++ or $CXX) found")
    tmp = LIBRARY.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(tmp), *map(str, SOURCES)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise RuntimeError(f"cannot build SpotOn's C++ parts: {cxx}: {e}") from e
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"cannot build SpotOn's C++ parts: {' '.join(cmd)}\n{done.stderr.strip()}")
    os.replace(tmp, LIBRARY)
    _lib = None  # load the new build on next use
    return LIBRARY
