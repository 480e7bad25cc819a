# SpotOn: one image for every process (results API, Prefect server, worker,
# one-shot set-up jobs); the command picks the service, e.g.
#   docker run spoton python -m deployments.services worker
#
#   docker build -t spoton .                                        # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t spoton:gpu .    # CUDA torch
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, cu126, cu128…):
# pick one that publishes the torch version pinned in pyproject.toml.
# Model weights are not baked in: mount them at /app/weights (see weights/README.md).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- dependencies
FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
# Only pyproject.toml: editing the source never invalidates this (large) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && grep -E '^torch(vision)?==' requirements.txt > torch.txt
# torch first, from the variant's index, so the requirements below find it satisfied
# (2.x+cpu matches ==2.x) and never pull the default CUDA build from PyPI.
RUN pip install --index-url "${TORCH_INDEX_URL}" -r torch.txt \
    && pip install -r requirements.txt "setuptools>=69" wheel
# boxmot pulls opencv-python; keep exactly one cv2, the headless 4.x build (it has HOG),
# as scripts/bootstrap.sh does for the venv.
RUN { pip uninstall -y opencv-python opencv-contrib-python opencv-contrib-python-headless || true; } \
    && pip install --force-reinstall --no-deps "opencv-python-headless>=4.10,<5" \
    && python -c "import cv2, importlib.metadata as md; \
names = sorted(d.metadata['Name'] for d in md.distributions() if (d.metadata['Name'] or '').lower().startswith('opencv')); \
assert names == ['opencv-python-headless'], names; assert hasattr(cv2, 'HOGDescriptor'); print('cv2', cv2.__version__)"

# --------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    SPOTON_HOME=/app \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HUB_OFFLINE=1 \
    SPOTON_SERVICE_MARKER=/tmp/spoton-service \
    API_HOST=0.0.0.0 \
    PREFECT_SERVER_API_HOST=0.0.0.0
RUN groupadd --system --gid 10001 spoton \
    && useradd --system --uid 10001 --gid spoton --create-home --home-dir /home/spoton spoton
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# Source (what .dockerignore lets through), then the project itself without deps.
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && mkdir -p weights runs data .cache \
    && chown -R spoton:spoton runs data .cache weights
# The C++ parts (same results as their Python twins, faster): bgsub's group fitting and frame shrinking, and
# boxmot's ByteTrack / OC-SORT, built against Debian's OpenCV core + imgproc; the compiler
# and headers go again in the same layer, the OpenCV runtime libraries the trackers link stay.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make g++ libopencv-core-dev libopencv-imgproc-dev libeigen3-dev \
    && spoton build-native \
    && apt-mark manual $(dpkg-query -W -f '${Package}\n' 'libopencv-core[0-9]*' 'libopencv-imgproc[0-9]*') \
    && apt-get purge -y --auto-remove cmake make g++ libopencv-core-dev libopencv-imgproc-dev libeigen3-dev \
    && rm -rf /var/lib/apt/lists/* /opt/venv/lib/python3.11/site-packages/build \
    && python -c "from spoton.track import NATIVE_TRACKERS, native_library as n; from spoton.compiled import library; assert all(map(n, NATIVE_TRACKERS)) and library()"
VOLUME ["/app/weights"]
USER spoton
EXPOSE 8000 4200
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-m", "deployments.services", "health"]
CMD ["python", "-m", "deployments.services", "api"]
