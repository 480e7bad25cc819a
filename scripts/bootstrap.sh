#!/usr/bin/env bash
# Create .venv and install SpotOn with its pinned dependency set, offline-friendly.
# Idempotent: re-running after a pyproject change only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first so pip takes the local build and never resolves a different one
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[dev]'
# boxmot pulls opencv-python; keep exactly one cv2 (the headless 4.x build, which has HOG)
.venv/bin/python -m pip uninstall -y -q opencv-python opencv-contrib-python opencv-contrib-python-headless 2>/dev/null || true
.venv/bin/python -m pip install -q --force-reinstall --no-deps 'opencv-python-headless>=4.10,<5'
.venv/bin/python - <<'PY'
import cv2, importlib.metadata as md
dists = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"] and d.metadata["Name"].lower().startswith("opencv")]
assert dists == ["opencv-python-headless"], f"expected only opencv-python-headless, found {dists}"
assert hasattr(cv2, "HOGDescriptor"), "cv2 lacks HOG: opencv-python-headless 5.x was installed"
print(f"venv ready: cv2 {cv2.__version__} ({dists[0]})")
PY
# The C++ parts, each giving its Python counterpart's results faster: bgsub's group fitting
# and frame shrinking (spoton/native/*.cpp) and boxmot's ByteTrack / OC-SORT. Built once; without
# them the pipeline runs its Python code paths.
if ! .venv/bin/python -c "import sys; from spoton.track import NATIVE_TRACKERS, native_library; from spoton.compiled import library; sys.exit(not (all(map(native_library, NATIVE_TRACKERS)) and library()))"; then
  if command -v apt-get >/dev/null 2>&1 && ! dpkg -s cmake g++ libopencv-core-dev libopencv-imgproc-dev libeigen3-dev >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    echo "installing the C++ trackers' build dependencies (apt-get) …"
    pkgs="cmake g++ libopencv-core-dev libopencv-imgproc-dev libeigen3-dev"
    (DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; }) \
      || echo "warning: apt-get could not install $pkgs"
  fi
  echo "building SpotOn's C++ parts and boxmot's C++ trackers (about a minute, once) …"
  if ! .venv/bin/spoton build-native > .venv/native-build.log 2>&1; then
    tail -n 3 .venv/native-build.log
    echo "warning: C++ parts not built (full log: .venv/native-build.log); the pipeline runs its Python code paths"
  fi
fi
touch .venv/.stamp
