#!/bin/sh
# Start one Redis add-on (jobspecs/addon.nomad.hcl): append-only persistence on the volume.
# PASSWORD comes from the add-on's credentials (the config store, rendered by Nomad).
set -eu
cd "$ADDON_DATA"
if [ -f restore.rdb ]; then
  # A backup to restore (`billowin pg:backups:restore` put it there and restarted the task):
  # Redis loads an RDB file only when it has no append-only file, so load it without one,
  # have Redis write a new append-only file from it, and start as usual.
  rm -rf appendonlydir
  mv restore.rdb dump.rdb
  redis-server --dir "$ADDON_DATA" --appendonly no --port 0 --unixsocket /tmp/restore.sock &
  pid=$!
  until redis-cli -s /tmp/restore.sock ping 2>/dev/null | grep -q PONG; do sleep 0.2; done
  redis-cli -s /tmp/restore.sock config set appendonly yes >/dev/null
  until redis-cli -s /tmp/restore.sock info persistence | grep -q 'aof_rewrite_in_progress:0' &&
    redis-cli -s /tmp/restore.sock info persistence | grep -q 'aof_rewrite_scheduled:0' &&
    [ -d appendonlydir ]; do
    sleep 0.2
  done
  redis-cli -s /tmp/restore.sock shutdown >/dev/null
  wait "$pid"
  echo "billowin: restored a backup ($(ls appendonlydir | wc -l) append-only files)"
fi
umask 077
printf 'requirepass "%s"\n' "$PASSWORD" >/tmp/redis.conf
exec redis-server /tmp/redis.conf --dir "$ADDON_DATA" --appendonly yes --appendfsync everysec \
  --bind 0.0.0.0 --protected-mode no --port 6379 --maxmemory-policy noeviction
