# syntax=docker/dockerfile:1
# The rlvr API image: the REST service and dashboard (`rlvr serve`), CPU only, non-root.
# It submits training jobs to a Ray cluster (RAY_ADDRESS) and keeps them in a SQL job store
# (RLVR_DB_URL). Build from the repository root:
#
#   docker build -f deploy/docker/api.Dockerfile -t registry.example.com/rlvr/rlvr-api:0.1.0 .
#
# The ARG defaults are rendered from deploy/versions.env and pyproject.toml by deploy/render.py.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VERSION=2.11.0
ARG PSYCOPG_VERSION=3.3.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The CPU build of torch first: the API never uses a GPU, and PyPI's default Linux wheel would
# pull several GB of CUDA libraries. `pip install .` then finds torch already satisfied.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}+cpu"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rlvr ./rlvr
COPY verifiers ./verifiers
COPY sandbox ./sandbox
# psycopg: the driver behind postgresql+psycopg:// job-store URLs.
RUN pip install --no-cache-dir . "psycopg[binary]==${PSYCOPG_VERSION}"

FROM python:${PYTHON_VERSION}-slim-bookworm
# bubblewrap: POST /v1/verify runs the code verifier's sandbox inside this container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin rlvr \
    && mkdir -p /var/lib/rlvr \
    && chown 10001:10001 /var/lib/rlvr
COPY --from=build /opt/venv /opt/venv
# The service's settings (rlvr/api/settings.py). RLVR_DB_URL, RLVR_API_TOKEN and RAY_ADDRESS
# are left to the deployment: unset, the service uses SQLite under RLVR_HOME, no auth, and a
# Ray head of its own.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RLVR_HOME=/var/lib/rlvr \
    RLVR_HOST=0.0.0.0 \
    RLVR_PORT=8000 \
    RLVR_RUNS_DIR=/var/lib/rlvr/runs \
    RLVR_DATA_ROOTS=/var/lib/rlvr/data \
    RLVR_MODEL_ROOTS=/var/lib/rlvr/models
USER 10001:10001
WORKDIR /var/lib/rlvr
VOLUME ["/var/lib/rlvr"]
EXPOSE 8000
# The slim image has no curl: ask /healthz with the interpreter that is there anyway.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['RLVR_PORT'], timeout=4)"]
ENTRYPOINT ["rlvr"]
CMD ["serve"]
