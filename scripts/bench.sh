#!/usr/bin/env bash
# The benchmark harness (make bench, make bench-small; docs/benchmarks.md).
#
# Makes a throw-away PostgreSQL 15 cluster with the benchmark dataset, starts
# MinIO, and times pgstow against its peers (pg_basebackup, tar, lz4), the
# commands of a group alternating round-robin BENCH_RUNS times. Writes
# BENCH_OUT/results-<UTC>.md (the tables) and BENCH_OUT/runs-<UTC>.csv (every
# run), prints the tables, and removes everything else on exit. Exits non-zero
# when any measured command failed; it never judges the timings.
#
# Knobs (environment):
#   BENCH_ROWS        rows of the orders table           (default 3000000)
#   BENCH_SCALE       pgbench scale                       (default 30)
#   BENCH_RUNS        runs of every command               (default 5)
#   BENCH_OUT         results directory                   (default bench-results/ in the checkout)
#   BENCH_REUSE_PORT  use the already loaded cluster on 127.0.0.1:PORT, database
#                     bench, instead of making one (it is only read and backed up)
#   BENCH_LOADER      auto (../shared/bench/mkdata.sh when present, else the
#                     built-in recipe), shared or builtin (default auto)
#   BENCH_TMP         where the work directory goes      (default /var/tmp)
#   PGBIN             PostgreSQL 15 binaries              (default /usr/lib/postgresql/15/bin)
set -euo pipefail

START_DIR=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

ROWS=${BENCH_ROWS:-3000000}
SCALE=${BENCH_SCALE:-30}
RUNS=${BENCH_RUNS:-5}
OUT=${BENCH_OUT:-$ROOT/bench-results}
case $OUT in /*) ;; *) OUT=$START_DIR/$OUT ;; esac
REUSE_PORT=${BENCH_REUSE_PORT:-}
LOADER=${BENCH_LOADER:-auto}
TMPBASE=${BENCH_TMP:-/var/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MINIO_BIN=$ROOT/.cache/bin/minio
PGSTOW=$ROOT/bin/pgstow
SHARED_MKDATA=$ROOT/../shared/bench/mkdata.sh
DB=bench
BUCKET=pgstow-bench
S3_KEY=pgstowbench
S3_SECRET=pgstowbenchsecret # MinIO wants 8+ characters
S3_REGION=us-east-1
TIME=/usr/bin/time

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
# initdb and postgres refuse to run as root: run them as postgres then.
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

for v in ROWS SCALE RUNS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[ -z "$REUSE_PORT" ] || [[ $REUSE_PORT =~ ^[0-9]+$ ]] || die "BENCH_REUSE_PORT must be a port number"
case $LOADER in auto | shared | builtin) ;; *) die "BENCH_LOADER must be auto, shared or builtin" ;; esac

# --- prerequisites -------------------------------------------------------------
need() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
for b in initdb pg_ctl pg_basebackup psql pgbench; do
	need "$PGBIN/$b" "PostgreSQL 15 is missing in $PGBIN; run 'make deps' (or apt-get install postgresql-15)"
done
need lz4 "run 'make deps' (or apt-get install lz4)"
need tar "install GNU tar"
need curl "install curl (7.75 or newer, for --aws-sigv4)"
need python3 "install python3"
need go "install Go (see go.mod)"
need "$MINIO_BIN" "MinIO is missing; run 'make deps' (it builds MinIO into .cache/bin)"
if [ ! -x "$TIME" ]; then
	if is_root && command -v apt-get >/dev/null; then
		log "installing GNU time (for $TIME)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null; }
	fi
	[ -x "$TIME" ] || die "GNU time ($TIME) is missing: apt-get install time"
fi
# Captured, not piped into grep -q: an early exit of grep would SIGPIPE curl
# and pipefail would report a capable curl as missing.
case $(curl --help all 2>/dev/null) in *--aws-sigv4*) ;; *) die "curl $(curl --version | head -n1 | cut -d' ' -f2) has no --aws-sigv4 (7.75 or newer needed)" ;; esac
if [ -z "$REUSE_PORT" ] && [ "$LOADER" != builtin ] && [ ! -f "$SHARED_MKDATA" ]; then
	[ "$LOADER" = shared ] && die "BENCH_LOADER=shared but $SHARED_MKDATA does not exist"
	LOADER=builtin
fi
[ "$LOADER" = auto ] && LOADER=shared

# --- work directory and cleanup ----------------------------------------------------
T0=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" "$TMPBASE"
WORK=$(mktemp -d "$TMPBASE/pgstow-bench-run-XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/logs" "$WORK/t"
PG_STARTED=
MINIO_PID=
cleanup() {
	local rc=$?
	set +e
	if [ -n "$MINIO_PID" ]; then
		kill "$MINIO_PID" 2>/dev/null && wait "$MINIO_PID" 2>/dev/null
	fi
	if [ -n "$PG_STARTED" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { # N: N distinct free loopback ports, one a line
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
}

# --- pgstow ---------------------------------------------------------------------
say "go build -o bin/pgstow ./cmd/pgstow"
go build -o "$PGSTOW" ./cmd/pgstow

# --- the dataset ------------------------------------------------------------------
PSQL=("$PGBIN/psql" -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1)

# The built-in recipe, used when ../shared/bench/mkdata.sh is not there (CI):
# the same shape as the shared one so that figures stay comparable —
# pgbench -i -s SCALE, then an orders table of ROWS rows (ids, foreign keys,
# timestamps, numerics, short enums, SKU codes, text from a 240-word vocabulary,
# an md5 token, a jsonb payload) loaded by two sessions, three indexes,
# VACUUM (FREEZE, ANALYZE) and CHECKPOINT.
# 240 words for the orders.note text.
BUILTIN_WORDS="
	able ace act active add age agent aim air alert amount annual ant apply
	april area arm art ash asset august author auto backup bag bank bar batch
	bay bed bee before bid bin bit block bonus border box branch brand bright
	broker budget buffer bus buyer cab cable cache can cancel cap car carton cat
	center change charge choice city claim client cloud coast code copper count
	coupon course cup custom cycle daily data dealer debit delay delta demand
	deposit detail device digital direct dock domain driver early east edge
	empty engine entry error event exact export express field figure filter
	first fleet floor folder format forward freight friday fuel garden gateway
	global grade green group guest heavy history holiday hotel import index
	inland input invoice island item january july june junior label level light
	limit linear lunar machine manual march master medium member method middle
	minor mobile monthly motor native network noble normal north notice object
	ocean office online orange order origin outlet packet pallet panel parcel
	payment pending period picker pocket policy portal premium price primary
	private promo public quarter quick random rapid rate record region remote
	report retail review river route rural sample season secure seller senior
	sensor session silver simple single south spring square stable steel stock
	store street sunday supply system tablet ticket timber total track trade
	transit travel tuesday unit update urban vendor vessel violet volume wallet
	weekly west winter yearly yellow zone
"

builtin_load() { # PORT ROWS SCALE
	local port=$1 rows=$2 scale=$3 t0 half p1 p2
	local psql=("${PSQL[@]}" -p "$port")
	t0=$(date +%s)
	"${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
	"$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$scale" -q "$DB" 2>&1 | tail -n 1
	"${psql[@]}" -d "$DB" <<'SQL'
CREATE TABLE orders (
  id          bigint PRIMARY KEY,
  customer_id integer NOT NULL,
  created_at  timestamptz NOT NULL,
  status      text NOT NULL,
  amount      numeric(12,2) NOT NULL,
  sku         text NOT NULL,
  token       text NOT NULL,
  note        text,
  payload     jsonb
);
SQL
	half=$((rows / 2))
	builtin_orders "$port" 1 "$half" 0.31 &
	p1=$!
	builtin_orders "$port" $((half + 1)) "$rows" 0.62 &
	p2=$!
	wait "$p1"
	wait "$p2"
	"${psql[@]}" -d "$DB" -c "CREATE INDEX orders_customer_time ON orders (customer_id, created_at)" &
	p1=$!
	"${psql[@]}" -d "$DB" -c "CREATE INDEX orders_token_idx ON orders (token)" &
	p2=$!
	wait "$p1"
	wait "$p2"
	"${psql[@]}" -d "$DB" -c "VACUUM (FREEZE, ANALYZE)"
	"${psql[@]}" -d postgres -c "VACUUM (FREEZE)" -c "CHECKPOINT"
	log "built-in dataset loaded in $(($(date +%s) - t0)) s"
}

builtin_orders() { # PORT FIRST LAST SEED: one loader session for ids FIRST..LAST
	"${PSQL[@]}" -p "$1" -d "$DB" -v first="$2" -v last="$3" -v seed="$4" \
		-v words="$(echo $BUILTIN_WORDS)" <<'SQL'
SELECT setseed(:seed) \g /dev/null
INSERT INTO orders
SELECT o.id,
       1 + (random() * 199999)::int,
       timestamptz '2022-07-01 00:00:00+00' + o.id * interval '6 seconds' + (random() * 5400)::int * interval '1 second',
       (ARRAY['new','paid','picking','shipped','delivered','returned','cancelled'])[1 + floor(random() * 7)::int],
       round((random() * 4800 + 1)::numeric, 2),
       'SKU-' || to_char((random() * 999999)::int, 'FM000000'),
       md5(o.id::text || ':' || random()::text),
       array_to_string(ARRAY(SELECT (string_to_array(:'words', ' '))[1 + floor(random() * 240)::int]
                             FROM generate_series(1, 8 + (o.id % 23)::int) AS k), ' '),
       jsonb_build_object(
         'addr', (1 + floor(random() * 223))::int || '.' || floor(random() * 256)::int || '.' ||
                      floor(random() * 256)::int || '.' || floor(random() * 256)::int,
         'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
                         'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
                         'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0',
                         'Go-http-client/1.1', 'Java-http-client/17.0.11', 'Wget/1.21.3'])[1 + floor(random() * 6)::int],
         'n', 1 + floor(random() * 20)::int,
         'score', round(random()::numeric, 4),
         'basket', substr(md5('basket' || o.id::text), 1, 16),
         'tags', jsonb_build_array((ARRAY['gift','sale','wholesale','store','app','web','partner'])[1 + floor(random() * 7)::int],
                                     (ARRAY['emea','amer','apj','latam'])[1 + floor(random() * 4)::int]))
FROM generate_series(:first::bigint, :last::bigint) AS o(id);
SQL
}

if [ -n "$REUSE_PORT" ]; then
	PORT=$REUSE_PORT
	say "reusing the cluster on 127.0.0.1:$PORT (database $DB)"
	"${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT 1" >/dev/null ||
		die "no database $DB on 127.0.0.1:$PORT (BENCH_REUSE_PORT)"
	LOADER="reused cluster on port $PORT"
else
	PORT=$(free_ports 1)
	say "throw-away PostgreSQL 15 cluster on 127.0.0.1:$PORT"
	mkdir -p "$WORK/pg"
	chmod 755 "$WORK/pg"
	is_root && chown postgres: "$WORK/pg"
	as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 >/dev/null
	cat >>"$WORK/pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK/pg'
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = '4GB'
checkpoint_timeout = '30min'
CONF
	as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w start >/dev/null
	PG_STARTED=1
	if [ "$LOADER" = shared ]; then
		say "dataset: $SHARED_MKDATA $PORT $DB $ROWS $SCALE"
		PATH=$PGBIN:$PATH bash "$SHARED_MKDATA" "$PORT" "$DB" "$ROWS" "$SCALE" >"$WORK/logs/mkdata.log" 2>&1 ||
			{ tail -n 30 "$WORK/logs/mkdata.log" >&2; die "dataset load failed"; }
		grep -E '^mkdata:' "$WORK/logs/mkdata.log" >&2 || true
		LOADER="../shared/bench/mkdata.sh"
	else
		say "dataset: built-in recipe, $ROWS orders rows, pgbench scale $SCALE"
		builtin_load "$PORT" "$ROWS" "$SCALE" >"$WORK/logs/load.log" 2>&1 ||
			{ tail -n 30 "$WORK/logs/load.log" >&2; die "dataset load failed"; }
		LOADER="built-in recipe (scripts/bench.sh)"
	fi
fi
PG_CONN="host=127.0.0.1 port=$PORT user=postgres dbname=$DB"

# --- MinIO -------------------------------------------------------------------------
{ read -r MINIO_PORT; read -r MINIO_CONSOLE_PORT; } < <(free_ports 2)
ENDPOINT=http://127.0.0.1:$MINIO_PORT
say "MinIO on $ENDPOINT"
mkdir -p "$WORK/minio"
MINIO_ROOT_USER=$S3_KEY MINIO_ROOT_PASSWORD=$S3_SECRET MINIO_BROWSER=off MINIO_UPDATE=off \
	"$MINIO_BIN" server --quiet --address "127.0.0.1:$MINIO_PORT" \
	--console-address "127.0.0.1:$MINIO_CONSOLE_PORT" "$WORK/minio" >"$WORK/logs/minio.log" 2>&1 &
MINIO_PID=$!
deadline=$(($(date +%s) + 60))
until curl -sf -o /dev/null "$ENDPOINT/minio/health/ready"; do
	kill -0 "$MINIO_PID" 2>/dev/null || { cat "$WORK/logs/minio.log" >&2; die "MinIO exited"; }
	[ "$(date +%s)" -lt "$deadline" ] || { cat "$WORK/logs/minio.log" >&2; die "MinIO not ready within 60 s"; }
	sleep 0.2
done
deadline=$(($(date +%s) + 30))
# MinIO may still answer 503 for a moment after reporting ready.
until curl -sf -o /dev/null -X PUT --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_KEY:$S3_SECRET" "$ENDPOINT/$BUCKET"; do
	[ "$(date +%s)" -lt "$deadline" ] || die "cannot create bucket $BUCKET on $ENDPOINT"
	sleep 0.5
done
export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET
s3_url() { echo "s3://$BUCKET/$1?endpoint=$ENDPOINT&path_style=true&region=$S3_REGION"; }

# --- the reference base.tar ------------------------------------------------------------
say "reference base.tar (pg_basebackup -Ft -Xnone -c fast)"
PGBB=("$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -Ft -Xnone -c fast)
"${PGBB[@]}" -D "$WORK/ref" >"$WORK/logs/ref.log" 2>&1 || { cat "$WORK/logs/ref.log" >&2; die "pg_basebackup of the reference base.tar failed"; }
BASE_TAR=$WORK/ref/base.tar
BASE_BYTES=$(stat -c %s "$BASE_TAR")
log "base.tar: $BASE_BYTES bytes"

# --- facts -----------------------------------------------------------------------------
FACTS=$WORK/facts.tsv
fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }
git_commit() {
	local rev mod
	rev=$(go version -m "$PGSTOW" 2>/dev/null | awk '$2 == "vcs.revision=" || $2 ~ /^vcs\.revision=/ {sub(/^vcs\.revision=/, "", $2); print $2}')
	mod=$(go version -m "$PGSTOW" 2>/dev/null | awk '$2 ~ /^vcs\.modified=/ {sub(/^vcs\.modified=/, "", $2); print $2}')
	if [ -n "$rev" ]; then
		[ "$mod" = true ] && rev="$rev (working tree modified)"
		echo "$rev"
		return
	fi
	# Without VCS stamping: read .git ourselves.
	local gitdir=$ROOT/.git head
	[ -f "$gitdir" ] && gitdir=$(sed -n 's/^gitdir: //p' "$gitdir")
	head=$(cat "$gitdir/HEAD" 2>/dev/null) || { echo unknown; return; }
	case $head in
	ref:*)
		head=${head#ref: }
		if [ -f "$gitdir/$head" ]; then cat "$gitdir/$head"; else
			awk -v r="$head" '$2 == r {print $1}' "$gitdir/packed-refs" 2>/dev/null | grep . || echo unknown
		fi
		;;
	*) echo "$head" ;;
	esac
}
fact "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M:%S')"
fact "git commit" "$(git_commit)"
fact "pgstow" "$("$PGSTOW" version 2>&1 | head -n1), $(go version | cut -d' ' -f3-)"
fact "PostgreSQL" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc 'SELECT version()')"
fact "data checksums" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc 'SHOW data_checksums')"
fact "pg_basebackup" "$("$PGBIN/pg_basebackup" --version)"
fact "lz4, tar" "$(lz4 --version 2>&1 | sed -n 's/^\*\*\* \(LZ4 command line interface\) .*\(v[0-9.]*\).*/lz4 \2/p' | head -n1), $(tar --version | head -n1)"
fact "MinIO" "$(go version -m "$MINIO_BIN" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')"
fact "CPU" "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1))"
fact "memory" "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact "kernel" "$(uname -sr)"
fact "work directory" "$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
fact "dataset" "$LOADER; $("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT 'orders rows ' || (SELECT count(*) FROM orders) || ', pgbench scale ' || (SELECT count(*) FROM pgbench_branches)" 2>/dev/null || echo "orders rows $ROWS, pgbench scale $SCALE (as requested)")"
fact "database size" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT pg_size_pretty(pg_database_size('$DB')) || ' (' || pg_database_size('$DB') || ' bytes)'")"
fact "base.tar bytes" "$BASE_BYTES"
fact "runs per command" "$RUNS"

# --- measuring --------------------------------------------------------------------------
CSV=$WORK/runs.csv
CMDS=$WORK/commands.tsv
echo "started_utc,group,id,run,wall_s,max_rss_kib,exit_code,raw_bytes,stored_bytes,new_bytes" >"$CSV"
FAILED=0
# cmd_def ID GROUP LABEL TEMPLATE: the command as shown in the report.
cmd_def() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$CMDS"; }

# measure GROUP ID RUN COMMAND: runs COMMAND (a bash command line) under
# /usr/bin/time and appends the row to the CSV; sets LAST_RC. Before it,
# sync, so that no command pays for the dirty pages of the one before.
LAST_RC=0
measure() {
	local group=$1 id=$2 run=$3 cmd=$4 started tf=$WORK/time.out wall rss
	local lf=$WORK/logs/$id-$run.log
	sync
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	if "$TIME" -o "$tf" -f "%e %M" bash -o pipefail -c "$cmd" >"$lf" 2>&1; then LAST_RC=0; else LAST_RC=$?; fi
	read -r wall rss < <(tail -n 1 "$tf")
	if [ "$LAST_RC" -ne 0 ]; then
		FAILED=$((FAILED + 1))
		echo "bench: FAILED ($LAST_RC): $id run $run: $cmd" >&2
		tail -n 20 "$lf" | sed 's/^/    /' >&2
		cp "$lf" "$OUT/failed-$STAMP-$id-$run.log"
	fi
	printf '%-4s run %d/%d: %6s s  %7s KiB  %s\n' "$id" "$run" "$RUNS" "$wall" "$rss" "$([ "$LAST_RC" -eq 0 ] && echo ok || echo "FAILED ($LAST_RC)")" >&2
	ROW="$started,$group,$id,$run,$wall,$rss,$LAST_RC"
}
# pgstow_sizes URL: raw,stored,new bytes of the newest backup in the repository.
pgstow_sizes() {
	"$PGSTOW" list --json --repo "$1" 2>/dev/null | python3 -c '
import json, sys
b = json.load(sys.stdin)[-1]
print("%d,%d,%d" % (b["raw_bytes"], b["stored_bytes"], b["new_bytes"]))' 2>/dev/null || echo ",,"
}
row() { echo "$ROW,$1" >>"$CSV"; }

PGSTOW_PG=(--pg "$PG_CONN")
cmd_def B1 backup "pg_basebackup → /dev/null (stream ceiling)" "pg_basebackup -h 127.0.0.1 -p P -U postgres -Ft -Xnone -c fast -D - > /dev/null"
cmd_def B2 backup "pg_basebackup --compress=client-lz4" "pg_basebackup -h 127.0.0.1 -p P -U postgres -Ft -Xnone -c fast --compress=client-lz4 -D DIR"
cmd_def B3 backup "pgstow backup → file://" "pgstow backup --repo file://REPO --checkpoint fast   (fresh empty repository)"
cmd_def B4 backup "pgstow backup → MinIO" "pgstow backup --repo 's3://BUCKET/PREFIX?endpoint=http://127.0.0.1:P&path_style=true&region=us-east-1' --checkpoint fast   (fresh prefix)"
cmd_def B5 backup "pgstow backup → file://, second" "pgstow backup --repo file://REPO --checkpoint fast   (the repository B3 just filled, unchanged data)"
cmd_def R1 restore "tar -x (uncompressed base.tar)" "tar -x -f base.tar -C DIR && sync -f DIR"
cmd_def R2 restore "lz4 -dc | tar -x" "lz4 -dc base.tar.lz4 | tar -x -C DIR && sync -f DIR   (base.tar.lz4 of B2 run 1)"
cmd_def R3 restore "pgstow restore ← file://" "pgstow restore --repo file://REPO -D DIR   (REPO of B3/B5 run 1; fsyncs itself)"
cmd_def R4 restore "pgstow restore ← MinIO" "pgstow restore --repo 's3://BUCKET/PREFIX?…' -D DIR   (PREFIX of B4 run 1)"

say "backups: B1 B2 B3 B4 B5, round-robin, $RUNS runs"
for run in $(seq 1 "$RUNS"); do
	T=$WORK/t
	measure backup B1 "$run" "$(printf '%q ' "${PGBB[@]}") -D - > /dev/null"
	row ",,"

	measure backup B2 "$run" "$(printf '%q ' "${PGBB[@]}") --compress=client-lz4 -D $(printf '%q' "$T/lz4-$run")"
	if [ "$LAST_RC" -eq 0 ]; then s=$(stat -c %s "$T/lz4-$run/base.tar.lz4" 2>/dev/null || echo); row ",$s,$s"; else row ",,"; fi

	FILE_REPO=file://$T/repo-$run
	measure backup B3 "$run" "$(printf '%q ' "$PGSTOW" backup "${PGSTOW_PG[@]}" --repo "$FILE_REPO" --checkpoint fast --label bench-first)"
	row "$(pgstow_sizes "$FILE_REPO")"

	S3_REPO=$(s3_url "b$run")
	measure backup B4 "$run" "$(printf '%q ' "$PGSTOW" backup "${PGSTOW_PG[@]}" --repo "$S3_REPO" --checkpoint fast --label bench-s3)"
	row "$(pgstow_sizes "$S3_REPO")"

	measure backup B5 "$run" "$(printf '%q ' "$PGSTOW" backup "${PGSTOW_PG[@]}" --repo "$FILE_REPO" --checkpoint fast --label bench-second)"
	row "$(pgstow_sizes "$FILE_REPO")"

	# Run 1's outputs are the restore sources; the others only take room.
	if [ "$run" -gt 1 ]; then rm -rf "$T/lz4-$run" "$T/repo-$run"; fi
done

say "restores: R1 R2 R3 R4, round-robin, $RUNS runs"
LZ4_SRC=$WORK/t/lz4-1/base.tar.lz4
FILE_SRC=file://$WORK/t/repo-1
S3_SRC=$(s3_url b1)
for run in $(seq 1 "$RUNS"); do
	for id in R1 R2 R3 R4; do
		D=$WORK/t/restore-$id-$run
		mkdir -p "$D"
		chmod 700 "$D"
		case $id in
		R1) c="tar -x -f $(printf '%q' "$BASE_TAR") -C $(printf '%q' "$D") && sync -f $(printf '%q' "$D")" ;;
		R2) c="lz4 -dc $(printf '%q' "$LZ4_SRC") | tar -x -C $(printf '%q' "$D") && sync -f $(printf '%q' "$D")" ;;
		R3) c="$(printf '%q ' "$PGSTOW" restore --repo "$FILE_SRC" -D "$D")" ;;
		R4) c="$(printf '%q ' "$PGSTOW" restore --repo "$S3_SRC" -D "$D")" ;;
		esac
		measure restore "$id" "$run" "$c"
		row ",,"
		rm -rf "$D"
	done
done

# --- the report -------------------------------------------------------------------------
fact "harness runtime" "$(($(date +%s) - T0)) s (build, cluster and dataset included)"
MD=$OUT/results-$STAMP.md
cp "$CSV" "$OUT/runs-$STAMP.csv"
python3 "$ROOT/scripts/bench-report.py" --csv "$CSV" --commands "$CMDS" --facts "$FACTS" \
	--base-bytes "$BASE_BYTES" --csv-name "runs-$STAMP.csv" >"$MD" || die "bench-report.py failed"
cat "$MD"
log "wrote $MD and $OUT/runs-$STAMP.csv in $(($(date +%s) - T0)) s"
if [ "$FAILED" -gt 0 ]; then
	die "$FAILED measured command(s) failed (logs in $OUT/failed-$STAMP-*.log)"
fi
