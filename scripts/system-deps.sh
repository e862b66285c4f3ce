#!/usr/bin/env bash
# System packages the tests need: bubblewrap (the sandbox), Chromium (the dashboard's browser
# test), a PostgreSQL server (the job store's Postgres tests start a throwaway cluster with
# its initdb/pg_ctl), and a Docker engine with debootstrap (the docker tests start dockerd
# and build their base image from Debian packages: deploy/engine.py). Installed with apt
# when missing and running as root; otherwise a clear message.
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# Debian/Ubuntu keep the server binaries off PATH, under /usr/lib/postgresql/<major>/bin.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
  || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them (e.g. sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
  }
}
if [[ " ${need[*]} " == *" postgresql "* ]]; then
  # The tests start clusters of their own: keep the package from creating (and starting) its
  # default one on port 5432.
  apt_install postgresql-common
  sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
fi
apt_install "${need[@]}"
