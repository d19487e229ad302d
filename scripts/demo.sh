#!/usr/bin/env bash
# The main job end to end on the embedded default: make a throw-away
# PostgreSQL 15 cluster with sample data, back it up into a local file://
# repository with pgstow, list the repository, and bring the backup back
# as a running server (restore --start), then discard it. Run it as `make demo`.
# The cluster is removed at the end; the repository stays in
# $PGSTOW_DEMO_REPO (default .cache/demo/repo) so you can look at it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REPO_DIR=${PGSTOW_DEMO_REPO:-$PWD/.cache/demo/repo}
PGSTOW=$PWD/bin/pgstow
[ -x "$PGSTOW" ] || go build -o "$PGSTOW" ./cmd/pgstow
[ -x "$PGBIN/initdb" ] || { echo "demo: PostgreSQL 15 not found in $PGBIN; run scripts/install-deps.sh (or apt-get install postgresql-15)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# initdb and postgres refuse to run as root: run them as postgres then, in
# a directory that user owns.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
CLUSTER=$(mktemp -d /var/tmp/pgstow-demo-XXXXXX)
chmod 755 "$CLUSTER"
[ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 54329)
cleanup() {
	as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$CLUSTER"
}
trap cleanup EXIT

say "throw-away PostgreSQL 15 cluster on 127.0.0.1:$PORT"
as_pg "$PGBIN/initdb" -D "$CLUSTER/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$CLUSTER/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$CLUSTER'
max_wal_senders = 10
CONF
as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
say "sample data: pgbench scale 10 (~160 MB)"
"$PGBIN/pgbench" -i -s 10 -q postgres 2>&1 | tail -n 1

export PGSTOW_REPO=file://$REPO_DIR
say "pgstow backup --repo $PGSTOW_REPO"
"$PGSTOW" backup --checkpoint fast --label demo

say "pgstow list"
"$PGSTOW" list

say "pgstow restore --start: the backup as a running throw-away server"
SEED=$CLUSTER/restored
URI=$("$PGSTOW" restore --start -D "$SEED" --quiet)
echo "$URI"
echo "pgbench_accounts rows: original $("$PGBIN/psql" -XtAc 'SELECT count(*) FROM pgbench_accounts' postgres)," \
	"restored $("$PGBIN/psql" -XtAc 'SELECT count(*) FROM pgbench_accounts' "$URI")"
"$PGSTOW" discard -D "$SEED" --quiet
echo
echo "The repository is in $REPO_DIR (pgstow.json, backups/, chunks/, wal/)."
