#!/bin/sh
# First start: a cluster in $PGDATA with password auth, the user and database named by
# POSTGRES_USER / POSTGRES_DB. Then the server in the foreground (it gets the signals).
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  # Passwords over TCP; the socket (inside the container only) trusts its local users.
  # UTF8 whatever the container's locale (C: SQL_ASCII, whose text drivers get as bytes).
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-host=scram-sha-256 \
    --auth-local=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  if [ "$db" != postgres ]; then
    createdb -h /run/postgresql -U "$user" "$db"
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c "listen_addresses=$PGHOST_ADDR" -c "port=$PGPORT" \
  -k /run/postgresql
