# learnserve: a fastai image classifier behind FastAPI, one non-root process per container.
#
#   docker build -t learnserve .
#       PyTorch from PyPI's default wheels: CUDA-enabled on x86-64 (runs on CPU too), an image of several GB.
#   docker build -t learnserve:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#       PyTorch from its CPU-only wheel index: no CUDA libraries, an image a fraction of the size.
#
# Stages: requirements (the dependency list from pyproject.toml), deps (a virtualenv with those dependencies:
# the big layer, rebuilt only when the list or constraints.txt change, not on every pyproject.toml edit),
# model (trains the bundled digits model, so an image built without a model of your own still serves one),
# build (the project as a wheel), runtime (slim, non-root, models/ read-only to the server). The runtime copies
# the virtualenv from deps and installs the small wheel on top, so a code change does not copy gigabytes again.
# The model baked in at /srv/models is the default; a volume mounted over /srv/models replaces it (that one wins).

FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt

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

FROM deps AS model
COPY training ./training
# importable from any directory: train's reload check runs `python -m training.verify` elsewhere
ENV PYTHONPATH=/src
# The same command as `make model`; 0644/0755 so the server can read it and nobody but root can change it.
RUN python -m training data digits /tmp/digits \
    && python -m training train /tmp/digits --arch cnn --epochs 12 --lr 1e-2 --out /models/digits.pkl \
    && chmod 0755 /models && chmod 0644 /models/* \
    && rm -rf /tmp/digits

FROM deps AS build
COPY pyproject.toml README.md ./
COPY training ./training
COPY app ./app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 learnserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin learnserve
# HOME and caches point at /tmp: the root filesystem may be read-only, with a tmpfs on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    LEARNSERVE_MODEL_PATH=/srv/models/digits.pkl
WORKDIR /srv
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /models /srv/models
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
USER 10001:10001
EXPOSE 8000
# SIGTERM makes the app drain: stop accepting, finish in-flight requests for up to LEARNSERVE_DRAIN_SECONDS
# (20 s), exit 0. Give it longer than that before a kill: docker stop -t 30, compose stop_grace_period: 30s,
# Kubernetes terminationGracePeriodSeconds: 45 (with its 10 s preStop pause).
STOPSIGNAL SIGTERM
# Slim images have no curl: Python's urllib raises (exit 1) on 503 until the model is loaded.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000"]
