#!/bin/sh
# Like the official image: an empty password is refused, a new data folder is initialised
# with POSTGRES_USER (password auth) and POSTGRES_DB, then the server runs in the foreground.
set -eu
bin=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres: POSTGRES_PASSWORD is empty" >&2
    exit 1
  fi
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  chown postgres /tmp/pwfile
  su postgres -c "$bin/initdb -D $PGDATA -U $POSTGRES_USER --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256" >/dev/null
  rm /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  su postgres -c "$bin/pg_ctl -D $PGDATA -w -o '-c listen_addresses=' start" >/dev/null
  su postgres -c "$bin/createdb -U $POSTGRES_USER $POSTGRES_DB"
  su postgres -c "$bin/pg_ctl -D $PGDATA -w stop" >/dev/null
fi
exec su postgres -c "exec $bin/postgres -D $PGDATA -c listen_addresses=*"
