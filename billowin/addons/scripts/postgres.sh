#!/bin/sh
# Start one Postgres add-on (jobspecs/addon.nomad.hcl). The first start makes the cluster on
# the volume, with the add-on's role and database; later starts find it there (PG_VERSION).
# PASSWORD comes from the add-on's credentials (the config store, rendered by Nomad).
set -eu
bin="/usr/lib/postgresql/$ADDON_VERSION/bin"
data="$ADDON_DATA/data"
if [ ! -s "$data/PG_VERSION" ]; then
  # Made beside, then moved in place: a start cut short is simply made again.
  rm -rf "$data.new"
  "$bin/initdb" -D "$data.new" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=peer \
    --auth-host=scram-sha-256 >/dev/null
  cat >"$data.new/pg_hba.conf" <<'HBA'
# Inside the container, over its socket: the postgres user only (backups, pg:psql).
local all all peer
# From the apps: the add-on's own role, with its password.
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
HBA
  "$bin/pg_ctl" -D "$data.new" -w -s -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start
  psql -h /tmp -U postgres -d postgres -q -v ON_ERROR_STOP=1 -v db="$ADDON_DATABASE" -v pw="$PASSWORD" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
SQL
  "$bin/pg_ctl" -D "$data.new" -w -s -m fast stop
  mv "$data.new" "$data"
  echo "billowin: made a new database $ADDON_DATABASE"
fi
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories=/tmp \
  -c shared_buffers=32MB -c max_connections=50 -c password_encryption=scram-sha-256
