# syntax=docker/dockerfile:1
# PostgreSQL from Debian's own packages, for a stack built without registry access (the
# CPU stack of deploy/compose.cpu.yaml; docs/deploy.md, "Without a registry"). Where the
# registry is reachable, deploy/compose.yaml uses the official postgres image instead.
#
#   docker build --network host --build-arg BASE_IMAGE=rlvr-base:bookworm-<hash> \
#       -f deploy/docker/postgres.Dockerfile -t rlvr-postgres:local .
#
# Settings (as the official image's): POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB; PGPORT
# (default 5432) and PGHOST_ADDR (the listen address, default 127.0.0.1).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE}
# Debian bookworm's server (15); revisions are not pinned: the suite is, by the base image.
# postgresql-common first, told not to create (and start) a default cluster: the entrypoint
# makes the one in PGDATA.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    PGPORT=5432 \
    PGHOST_ADDR=127.0.0.1
# The package creates the postgres user with whatever system uid is free: name it.
# hadolint ignore=DL3066
USER postgres
VOLUME ["/var/lib/postgresql/data"]
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["pg_isready", "-h", "127.0.0.1"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
