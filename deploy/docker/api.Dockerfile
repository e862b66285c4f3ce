# syntax=docker/dockerfile:1
# The rlvr API image: the REST service and dashboard (`rlvr serve`), CPU only, non-root.
# It submits training jobs to a Ray cluster (RAY_ADDRESS) and keeps them in a SQL job store
# (RLVR_DB_URL). Build from the repository root:
#
#   docker build -f deploy/docker/api.Dockerfile -t registry.example.com/rlvr/rlvr-api:0.1.0 .
#
# Without registry access, BASE_IMAGE may be any Debian bookworm image with python3 and
# python3-venv, e.g. one built from Debian packages (docs/deploy.md, "Without a registry"):
#
#   docker build --network host --build-arg BASE_IMAGE=rlvr-base:bookworm-<hash> ...
#
# The ARG defaults are rendered from deploy/versions.env and pyproject.toml by deploy/render.py.
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.11.0
ARG PSYCOPG_VERSION=3.3.9
# Where the CPU build of torch comes from; a build without that index passes another one,
# or wheels through PIP_FIND_LINKS (a directory served on the build's network).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The CPU build of torch first: the API never uses a GPU, and PyPI's default Linux wheel would
# pull several GB of CUDA libraries. `pip install .` then finds torch already satisfied.
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}+cpu"
WORKDIR /src
COPY pyproject.toml README.md ./
# The dependencies first, from pyproject.toml alone (empty packages stand in for the
# sources), so that a change of the sources rebuilds only the last, seconds-long layer.
# psycopg: the driver behind postgresql+psycopg:// job-store URLs.
RUN mkdir rlvr verifiers sandbox \
    && touch rlvr/__init__.py verifiers/__init__.py sandbox/__init__.py \
    && pip install --no-cache-dir . "psycopg[binary]==${PSYCOPG_VERSION}" \
    && rm -r rlvr verifiers sandbox build ./*.egg-info
COPY rlvr ./rlvr
COPY verifiers ./verifiers
COPY sandbox ./sandbox
# (No build/ left from the stand-ins: setuptools would keep their empty files, which are
# newer than the real ones.)
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && python -c "import rlvr, sandbox, verifiers; print(rlvr.__version__)"

FROM ${BASE_IMAGE}
# bubblewrap: POST /v1/verify runs the code verifier's sandbox inside this container. The
# directories that compose mounts volumes on exist, owned by rlvr: a new named volume takes
# their owner (mounted on a missing path it would be root's, and unwritable here).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin rlvr \
    && mkdir -p /var/lib/rlvr/runs /var/lib/rlvr/models /var/lib/rlvr/data \
    && chown -R 10001:10001 /var/lib/rlvr
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
