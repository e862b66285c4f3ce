# syntax=docker/dockerfile:1
# The rlvr worker image: a Ray node (head or GPU worker) that runs training jobs, i.e. the job
# driver (`python -m rlvr.jobs.driver`), the vLLM rollout engines, the learner and the reward
# pool with its bubblewrap sandbox. CUDA base; torch is the version vLLM pins. Build from the
# repository root:
#
#   docker build -f deploy/docker/worker.Dockerfile \
#       -t registry.example.com/rlvr/rlvr-worker:0.1.0-cu13.0 .
#
# BASE_IMAGE (default: NVIDIA's CUDA base) and UV_IMAGE may name copies in a registry of your
# own. Without registry access (docs/deploy.md, "Without a registry"), BASE_IMAGE may be a
# Debian bookworm image with python3 (3.11, PYTHON_VERSION) and UV_IMAGE one built by
# deploy/docker/uv.Dockerfile; UV_PYTHON_DOWNLOADS=never then makes uv use the base's own
# interpreter instead of downloading a standalone CPython:
#
#   docker build --network host --build-arg BASE_IMAGE=rlvr-base:bookworm-<hash> \
#       --build-arg UV_IMAGE=rlvr-uv:local --build-arg UV_PYTHON_DOWNLOADS=never \
#       -f deploy/docker/worker.Dockerfile -t rlvr-worker:local .
#
# The ARG defaults are rendered from deploy/versions.env and pyproject.toml by deploy/render.py.
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04
ARG UV_VERSION=0.13.9
ARG BASE_IMAGE=nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION}
ARG UV_IMAGE=ghcr.io/astral-sh/uv:${UV_VERSION}

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.11.0
ARG VLLM_VERSION=0.26.0
ARG RAY_VERSION=2.60.0
ARG PSYCOPG_VERSION=3.3.9
# "automatic" (uv's default): uv downloads a standalone CPython where the base has no
# PYTHON_VERSION, as on the CUDA base. "never": uv takes the base's own interpreter (a Debian
# bookworm base's python3.11, which the runtime stage, on the same base, has too), and
# /opt/python stays empty.
ARG UV_PYTHON_DOWNLOADS=automatic
COPY --from=uv /uv /usr/local/bin/uv
# uv installs a standalone CPython of exactly PYTHON_VERSION (Ubuntu's own python3 is another
# minor), into /opt/python, which the runtime stage copies as is.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_DOWNLOADS=${UV_PYTHON_DOWNLOADS} \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
# One resolve for torch, vLLM and Ray: if vLLM's torch pin and TORCH_VERSION disagree the
# build fails here instead of silently replacing torch.
RUN mkdir -p /opt/python \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv \
    && uv pip install --python /opt/venv \
        "torch==${TORCH_VERSION}" \
        "vllm==${VLLM_VERSION}" \
        "ray[default,rllib]==${RAY_VERSION}" \
        "psycopg[binary]==${PSYCOPG_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rlvr ./rlvr
COPY verifiers ./verifiers
COPY sandbox ./sandbox
# a+rX: the sandbox only runs programs with an interpreter that every uid may execute. Only
# on the files that lack it: a chmod of every file copies all of the venv's GB into this
# layer (the build stage doubled, to 18 GB), even where the mode does not change.
RUN uv pip install --python /opt/venv ".[vllm]" \
    && find /opt/python /opt/venv \( ! -perm -444 -o -perm /111 ! -perm -111 \) \
        -exec chmod a+rX {} +

FROM ${BASE_IMAGE}
# bubblewrap: the code verifier's sandbox. wget: KubeRay's liveness/readiness probes call it.
# Package revisions are not pinned: the Ubuntu release is pinned by the base tag, and pinned
# revisions stop building as soon as the archive ships a security fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group --shell /bin/bash rlvr \
    && mkdir -p /var/lib/rlvr/runs /var/lib/rlvr/models /var/lib/rlvr/data /var/lib/rlvr/hf \
    && chown -R 10001:10001 /var/lib/rlvr
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HOME=/var/lib/rlvr/hf \
    RLVR_HOME=/var/lib/rlvr \
    RLVR_RUNS_DIR=/var/lib/rlvr/runs \
    RLVR_DATA_ROOTS=/var/lib/rlvr/data \
    RLVR_MODEL_ROOTS=/var/lib/rlvr/models
USER 10001:10001
WORKDIR /home/rlvr
# Ray: GCS 6379, dashboard and Jobs API 8265, client 10001, dashboard agent 52365.
EXPOSE 6379 8265 10001 52365
