# learnserve: fastai image classifiers behind FastAPI, one non-root process per container. Two images:
#
#   docker build -t learnserve .                  the default: fastai and PyTorch (training, NAME.pkl, NAME.onnx)
#       PyTorch from PyPI's default wheels: CUDA-enabled on x86-64 (runs on CPU too), an image of several GB.
#   docker build -t learnserve:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#       PyTorch from its CPU-only wheel index: no CUDA libraries, an image a fraction of the size.
#   docker build -t learnserve:slim --target slim .
#       ONNX Runtime only, neither torch nor fastai: serves NAME.onnx exports on CPU (LEARNSERVE_BACKEND=onnx).
#   docker build -t learnserve:ray --build-arg EXTRAS=all,ray .
#       the default image with Ray, for `python -m app score --engine ray` on a cluster (deploy/ray/rayjob.yaml).
#
# Stages: requirements (the dependency lists from pyproject.toml), deps and deps-slim (virtualenvs with those
# dependencies: the big layers, rebuilt only when a list or constraints.txt changes), model (trains the bundled
# digits model and exports it to ONNX, so an image built without a model of your own still serves one), build
# (the project as a wheel), base (the runtime's user, environment, health check and command), slim and runtime
# (the default, last). Each runtime copies its virtualenv and installs the small wheel on top, so a code change
# does not copy gigabytes again. The model baked in at /srv/models is the default; a volume mounted over
# /srv/models replaces it (that one wins).

FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml deploy/docker/requirements.py ./
# requirements.txt: the core and the EXTRAS (default `all`: fastai, torch, ONNX Runtime; `all,ray` adds Ray for
# `score --engine ray`); requirements-slim.txt: the core and `onnx`
ARG EXTRAS=all
RUN python requirements.py "$EXTRAS"

FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
COPY constraints.txt ./
# Empty: default wheels. A URL: torch and torchvision come from that index first; constraints.txt lists exactly
# their pins, so it doubles as their requirements file.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" -r constraints.txt; \
    fi \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt

FROM python:3.11-slim AS deps-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY --from=requirements /src/requirements-slim.txt ./
RUN pip install --no-cache-dir -r requirements-slim.txt \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM deps AS model
COPY training ./training
# importable from any directory: train's reload check runs `python -m training.verify` elsewhere
ENV PYTHONPATH=/src
# The same commands as `make model`, then the ONNX export the slim image serves; 0644/0755 so the server can
# read them and nobody but root can change them.
RUN python -m training data digits /tmp/digits \
    && python -m training train /tmp/digits --arch cnn --epochs 12 --lr 1e-2 --out /models/digits.pkl --onnx \
    && chmod 0755 /models && chmod 0644 /models/* \
    && rm -rf /tmp/digits /models/reports

FROM deps AS build
COPY pyproject.toml README.md ./
COPY training ./training
COPY app ./app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS base
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 learnserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin learnserve
# HOME and caches point at /tmp: the root filesystem may be read-only, with a tmpfs on /tmp.
# MALLOC_ARENA_MAX=2: fewer glibc heaps, a lower peak under a burst of large images (measured: +334 MB instead of
# +553 MB for 64 images of 9 megapixels); the server also trims the heap after a burst.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MALLOC_ARENA_MAX=2
WORKDIR /srv
EXPOSE 8000
# SIGTERM makes the app drain: stop accepting, finish in-flight requests for up to LEARNSERVE_DRAIN_SECONDS
# (20 s), exit 0. Give it longer than that before a kill: docker stop -t 30, compose stop_grace_period: 30s,
# Kubernetes terminationGracePeriodSeconds: 45 (with its 10 s preStop pause).
STOPSIGNAL SIGTERM
# Slim images have no curl: Python's urllib raises (exit 1) on 503 until the model is loaded.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS slim
ENV LEARNSERVE_BACKEND=onnx \
    LEARNSERVE_MODEL_PATH=/srv/models/digits.onnx
COPY --from=deps-slim /opt/venv /opt/venv
COPY --from=model /models/digits.json /models/digits.onnx /srv/models/
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
USER 10001:10001

FROM base AS runtime
ENV LEARNSERVE_MODEL_PATH=/srv/models/digits.pkl
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /models /srv/models
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
USER 10001:10001
