# syntax=docker/dockerfile:1
# uv from PyPI, for a worker build without registry access: the worker Dockerfile copies
# /uv from UV_IMAGE (by default ghcr.io/astral-sh/uv), and this image has it at the same
# path, built on any Debian image with python3 and python3-venv (docs/deploy.md, "Without a
# registry"):
#
#   docker build --network host --build-arg BASE_IMAGE=rlvr-base:bookworm-<hash> \
#       -f deploy/docker/uv.Dockerfile -t rlvr-uv:local .
#
# The ARG defaults are rendered from deploy/versions.env by deploy/render.py.
ARG UV_VERSION=0.13.9
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && cp /opt/uv/bin/uv /opt/uv/bin/uvx / \
    && /uv --version

# Only the binaries, as in the public image.
FROM scratch
COPY --from=build /uv /uvx /
