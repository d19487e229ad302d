#!/usr/bin/env bash
# The benchmark harness (make bench, make bench-small; docs/benchmarks.md).
#
# Makes a throw-away PostgreSQL 15 cluster with the benchmark dataset, starts
# MinIO, and times pgstow against its peers (pg_basebackup, tar, lz4), the
# commands of a group alternating round-robin BENCH_RUNS times: wall time, user
# and system CPU seconds, peak RSS. Between the backups and the restores it
# changes the newest 1% of rows and takes a second backup (untimed), so that
# the restores also measure issue 16's delta restores and the restore of one
# database (R5–R7, against the full restore of the same backup, R3 and R4,
# in the same round-robin). Then, unless BENCH_MANYFILES=0, the same on
# a second throw-away cluster of many small tables (the main cluster stopped
# first, so neither dataset's figures depend on the other). Writes
# BENCH_OUT/results-<UTC>.md (the tables) and BENCH_OUT/runs-<UTC>.csv (every
# run), prints the tables, and removes everything else on exit. Exits non-zero
# when any measured command failed; it never judges the timings.
#
# Knobs (environment):
#   BENCH_ROWS        rows of the orders table           (default 3000000)
#   BENCH_SCALE       pgbench scale                       (default 30)
#   BENCH_RUNS        runs of every command               (default 5)
#   BENCH_OUT         results directory                   (default bench-results/ in the checkout)
#   BENCH_REUSE_PORT  use the already loaded cluster on 127.0.0.1:PORT (databases
#                     bench and pgbench) instead of making one. The harness
#                     updates its newest 1% of rows (see change_rows). A cluster
#                     of the layout before issue 16 (pgbench tables in bench) is
#                     migrated once: pgbench -i into database pgbench, the old
#                     pgbench tables dropped from bench
#   BENCH_ONLY        all: everything; restore: only the pgstow restores of the
#                     main dataset (R3, R4 and issue 16's R5–R7 on file:// and
#                     MinIO), their backups made untimed, no many-files dataset
#                     and no issue 15 rows; incremental: only issue 15's rows
#                     (I1–I4, see run_incremental) on their own PostgreSQL
#                     BENCH_INC_MAJOR cluster (default all)
#   BENCH_INCREMENTAL 1: also measure issue 15's incremental backups (I1–I4) on
#                     a PostgreSQL BENCH_INC_MAJOR cluster loaded with the same
#                     dataset, after the rest, 0: not (default 1)
#   BENCH_INC_MAJOR   the major of that cluster: 17 or 18 (default 17)
#   PGBIN_INC         its server binaries (initdb, pg_ctl, postgres; psql and
#                     pgbench come from PGBIN) (default the npm build in
#                     .cache/pg/node_modules/pg<major>/native/bin, make deps)
#   BENCH_CHANGE      what issue 16's "1% of rows changed" updates: both (the
#                     newest 1% of pgbench_accounts and of orders) or accounts
#                     (the newest 2% of pgbench_accounts alone, as many rows,
#                     orders and its secondary indexes untouched) (default both)
#   BENCH_LOADER      auto (../shared/bench/mkdata.sh when present, else the
#                     built-in recipe), shared or builtin (default auto)
#   BENCH_MANYFILES   1: also measure the many-small-files dataset, 0: not (default 1)
#   BENCH_MANYFILES_TABLES  its number of tables           (default 20000)
#   BENCH_REUSE_MANYFILES_PORT  use the already loaded many-files cluster on
#                     127.0.0.1:PORT, database manyfiles, instead of making one
#   BENCH_CPUPROFILE  1: after the measured runs, one extra, untimed pgstow
#                     backup and restore per dataset with --cpuprofile, the
#                     profiles kept in BENCH_OUT (default 0)
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
MANYFILES=${BENCH_MANYFILES:-1}
MF_TABLES=${BENCH_MANYFILES_TABLES:-20000}
MF_REUSE_PORT=${BENCH_REUSE_MANYFILES_PORT:-}
CPUPROFILE=${BENCH_CPUPROFILE:-0}
LOADER=${BENCH_LOADER:-auto}
ONLY=${BENCH_ONLY:-all}
TMPBASE=${BENCH_TMP:-/var/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
INCREMENTAL=${BENCH_INCREMENTAL:-1}
INC_MAJOR=${BENCH_INC_MAJOR:-17}
INC_PGBIN=${PGBIN_INC:-$ROOT/.cache/pg/node_modules/pg$INC_MAJOR/native/bin}
MINIO_BIN=$ROOT/.cache/bin/minio
PGSTOW=$ROOT/bin/pgstow
SHARED_MKDATA=$ROOT/../shared/bench/mkdata.sh
DB=bench     # the orders table
PGB_DB=pgbench # the pgbench tables: restore --database pgbench restores them alone
MF_DB=manyfiles
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
[ -z "$MF_REUSE_PORT" ] || [[ $MF_REUSE_PORT =~ ^[0-9]+$ ]] || die "BENCH_REUSE_MANYFILES_PORT must be a port number"
case $MANYFILES in 0 | 1) ;; *) die "BENCH_MANYFILES must be 0 or 1 (got '$MANYFILES')" ;; esac
case $CPUPROFILE in 0 | 1) ;; *) die "BENCH_CPUPROFILE must be 0 or 1 (got '$CPUPROFILE')" ;; esac
[[ $MF_TABLES =~ ^[1-9][0-9]*$ ]] || die "BENCH_MANYFILES_TABLES must be a positive integer (got '$MF_TABLES')"
case $LOADER in auto | shared | builtin) ;; *) die "BENCH_LOADER must be auto, shared or builtin" ;; esac
CHANGE=${BENCH_CHANGE:-both}
case $CHANGE in both | accounts) ;; *) die "BENCH_CHANGE must be both or accounts (got '$CHANGE')" ;; esac
case $INCREMENTAL in 0 | 1) ;; *) die "BENCH_INCREMENTAL must be 0 or 1 (got '$INCREMENTAL')" ;; esac
case $INC_MAJOR in 17 | 18) ;; *) die "BENCH_INC_MAJOR must be 17 or 18 (got '$INC_MAJOR')" ;; esac
case $ONLY in
all) ;;
restore) MANYFILES=0 INCREMENTAL=0 ;;
incremental) MANYFILES=0 INCREMENTAL=1 ;;
*) die "BENCH_ONLY must be all, restore or incremental (got '$ONLY')" ;;
esac

# --- prerequisites -------------------------------------------------------------
need() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
for b in initdb pg_ctl pg_basebackup psql pgbench; do
	need "$PGBIN/$b" "PostgreSQL 15 is missing in $PGBIN; run 'make deps' (or apt-get install postgresql-15)"
done
if [ "$INCREMENTAL" = 1 ]; then
	for b in initdb pg_ctl postgres; do
		need "$INC_PGBIN/$b" "PostgreSQL $INC_MAJOR is missing in $INC_PGBIN; run 'make deps' (it installs the npm build into .cache/pg), or set PGBIN_INC"
	done
fi
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
case $(curl --help all 2>/dev/null) in *--aws-sigv4*) ;; *) die "curl $(curl --version | awk 'NR == 1 {print $2}') has no --aws-sigv4 (7.75 or newer needed)" ;; esac
if [ -z "$REUSE_PORT" ] && [ "$LOADER" != builtin ] && [ ! -f "$SHARED_MKDATA" ]; then
	[ "$LOADER" = shared ] && die "BENCH_LOADER=shared but $SHARED_MKDATA does not exist"
	LOADER=builtin
fi
[ "$LOADER" = auto ] && LOADER=shared
LOAD_KIND=$LOADER # shared or builtin: how run_incremental loads its cluster (LOADER becomes a description)
[ -n "$REUSE_PORT" ] && [ "$LOAD_KIND" = shared ] && [ ! -f "$SHARED_MKDATA" ] && LOAD_KIND=builtin

# --- work directory and cleanup ----------------------------------------------------
T0=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" "$TMPBASE"
WORK=$(mktemp -d "$TMPBASE/pgstow-bench-run-XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/logs" "$WORK/t"
PG_RUNNING=() # data directories of the clusters this run started and has not stopped
MINIO_PID=
cleanup() {
	local rc=$? d
	set +e
	if [ -n "$MINIO_PID" ]; then
		kill "$MINIO_PID" 2>/dev/null && wait "$MINIO_PID" 2>/dev/null
	fi
	for d in "${PG_RUNNING[@]}"; do
		as_pg "$(bin_of "$d")/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
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

# bin_of DATADIR: the server binaries of a cluster new_cluster made (those of
# PostgreSQL 15 unless it was given others).
declare -A CLUSTER_BIN
bin_of() { echo "${CLUSTER_BIN[$1]:-$PGBIN}"; }

# new_cluster DIR PORT [CONF [BINDIR]]: initdb a throw-away cluster in DIR/data
# (owned by postgres when run as root) with the server binaries of BINDIR
# (default PGBIN, PostgreSQL 15), append CONF to its postgresql.conf, start it
# on 127.0.0.1:PORT.
new_cluster() {
	local dir=$1 port=$2 conf=${3:-} bin=${4:-$PGBIN}
	mkdir -p "$dir"
	chmod 755 "$dir"
	if is_root; then chown postgres: "$dir"; fi
	CLUSTER_BIN[$dir/data]=$bin
	as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 >/dev/null
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = '4GB'
checkpoint_timeout = '30min'
$conf
CONF
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
	PG_RUNNING+=("$dir/data")
}
# stop_cluster DIR: a clean stop of a cluster new_cluster started.
stop_cluster() {
	local d keep=()
	as_pg "$(bin_of "$1/data")/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null
	for d in "${PG_RUNNING[@]}"; do [ "$d" = "$1/data" ] || keep+=("$d"); done
	PG_RUNNING=("${keep[@]}")
}

# --- pgstow ---------------------------------------------------------------------
# The same build as make build: with liblz4's encoder when its headers are
# installed (make deps), so the figures are those of the shipped binary.
say "make build"
make -s build

# --- the dataset ------------------------------------------------------------------
PSQL=("$PGBIN/psql" -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1)

# The built-in recipe, used when ../shared/bench/mkdata.sh is not there (CI):
# the same shape as the shared one so that figures stay comparable — an
# orders table of ROWS rows (ids, foreign keys, timestamps, numerics, short
# enums, SKU codes, text from a 240-word vocabulary, an md5 token, a jsonb
# payload) loaded by two sessions, three indexes, VACUUM (FREEZE, ANALYZE) and
# CHECKPOINT, then pgbench -i -s SCALE into its own database (load_pgbench).
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
	load_pgbench "$port" "$scale"
	log "built-in dataset loaded in $(($(date +%s) - t0)) s"
}

# load_pgbench PORT SCALE: pgbench -i -s SCALE into database pgbench (made
# anew), VACUUM (FREEZE, ANALYZE) there, then the pgbench tables dropped from
# database bench if they are there (the shared mkdata.sh, which the harness
# runs with scale 1, and clusters loaded before issue 16 put them there), and
# CHECKPOINT. The pgbench tables have a database of their own so that
# "restore --database pgbench" restores them alone (issue 16's R7).
load_pgbench() {
	local port=$1 scale=$2
	local psql=("${PSQL[@]}" -p "$port")
	"${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $PGB_DB" -c "CREATE DATABASE $PGB_DB"
	# tail reads to the end: no SIGPIPE for pgbench under pipefail.
	"$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$scale" -q "$PGB_DB" 2>&1 | tail -n 1
	"${psql[@]}" -d "$PGB_DB" -c "VACUUM (FREEZE, ANALYZE)"
	"${psql[@]}" -d "$DB" -c "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"
	"${psql[@]}" -d postgres -c "CHECKPOINT"
}

# pgbench_layout PORT: where the cluster on PORT keeps the pgbench tables:
# "new" (database pgbench only), "old" (in database bench: the layout before
# issue 16, or a migration cut short) or "none".
pgbench_layout() {
	local port=$1 inbench inown=f
	inbench=$("${PSQL[@]}" -p "$port" -d "$DB" -Atc "SELECT to_regclass('public.pgbench_accounts') IS NOT NULL")
	if [ "$("${PSQL[@]}" -p "$port" -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$PGB_DB'")" = 1 ]; then
		inown=$("${PSQL[@]}" -p "$port" -d "$PGB_DB" -Atc "SELECT to_regclass('public.pgbench_accounts') IS NOT NULL")
	fi
	if [ "$inbench" = t ]; then
		echo old
	elif [ "$inown" = t ]; then
		echo new
	else
		echo none
	fi
}

builtin_orders() { # PORT FIRST LAST SEED: one loader session for ids FIRST..LAST
	# $(echo $BUILTIN_WORDS): the unquoted expansion collapses the list's newlines and tabs to spaces.
	# shellcheck disable=SC2086,SC2116
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

MAIN_CLUSTER= # the main cluster's directory when this run made it
PORT=         # the main cluster's port (none with BENCH_ONLY=incremental)
if [ "$ONLY" = incremental ]; then
	say "BENCH_ONLY=incremental: no main dataset cluster, no MinIO, only issue 15's rows"
elif [ -n "$REUSE_PORT" ]; then
	PORT=$REUSE_PORT
	say "reusing the cluster on 127.0.0.1:$PORT (database $DB)"
	"${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT 1" >/dev/null ||
		die "no database $DB on 127.0.0.1:$PORT (BENCH_REUSE_PORT)"
	LOADER="reused cluster on port $PORT"
	case $(pgbench_layout "$PORT") in
	new) ;;
	old)
		# The layout before issue 16: migrated, once, rather than refused,
		# so that a loaded cluster need not be rebuilt (six minutes).
		mscale=$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT count(*) FROM pgbench_branches")
		[[ $mscale =~ ^[1-9][0-9]*$ ]] || die "the pgbench tables of database $DB on port $PORT have no branches: load the cluster anew"
		say "the cluster on port $PORT has the pgbench tables in database $DB (the layout before issue 16): moving them into database $PGB_DB (pgbench -i -s $mscale, then DROP TABLE in $DB), once"
		load_pgbench "$PORT" "$mscale" >"$WORK/logs/migrate.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/migrate.log" >&2; die "moving the pgbench tables into database $PGB_DB failed"; }
		LOADER="$LOADER, pgbench tables moved into database $PGB_DB by this run"
		;;
	*) die "no pgbench tables on 127.0.0.1:$PORT (neither database $PGB_DB nor $DB has pgbench_accounts): load the cluster anew" ;;
	esac
else
	PORT=$(free_ports 1)
	say "throw-away PostgreSQL 15 cluster on 127.0.0.1:$PORT"
	new_cluster "$WORK/pg" "$PORT"
	MAIN_CLUSTER=$WORK/pg
	if [ "$LOADER" = shared ]; then
		# mkdata.sh puts the pgbench tables next to orders: given scale 1
		# (seconds), they are then dropped there and loaded at SCALE into
		# database pgbench (load_pgbench), otherwise the same dataset.
		say "dataset: $SHARED_MKDATA $PORT $DB $ROWS 1, then pgbench -i -s $SCALE into database $PGB_DB"
		PATH=$PGBIN:$PATH bash "$SHARED_MKDATA" "$PORT" "$DB" "$ROWS" 1 >"$WORK/logs/mkdata.log" 2>&1 ||
			{ tail -n 30 "$WORK/logs/mkdata.log" >&2; die "dataset load failed"; }
		grep -E '^mkdata:' "$WORK/logs/mkdata.log" >&2 || true
		load_pgbench "$PORT" "$SCALE" >"$WORK/logs/load-pgbench.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/load-pgbench.log" >&2; die "pgbench -i into database $PGB_DB failed"; }
		LOADER="../shared/bench/mkdata.sh (orders), pgbench -i into database $PGB_DB"
	else
		say "dataset: built-in recipe, $ROWS orders rows, pgbench scale $SCALE"
		# In the background and waited for: a function called in a || list
		# would run with set -e ignored, and a failed step would go unnoticed.
		builtin_load "$PORT" "$ROWS" "$SCALE" >"$WORK/logs/load.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/load.log" >&2; die "dataset load failed"; }
		LOADER="built-in recipe (scripts/bench.sh)"
	fi
fi
PG_CONN="host=127.0.0.1 port=$PORT user=postgres dbname=$DB"

# --- MinIO -------------------------------------------------------------------------
# MinIO and the reference base.tar serve the main dataset's rows only.
ENDPOINT='' BASE_TAR='' BASE_BYTES=''
s3_url() { echo "s3://$BUCKET/$1?endpoint=$ENDPOINT&path_style=true&region=$S3_REGION"; }
if [ "$ONLY" != incremental ]; then
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

	# --- the reference base.tar ------------------------------------------------------------
	say "reference base.tar (pg_basebackup -Ft -Xnone -c fast)"
	PGBB=("$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -Ft -Xnone -c fast)
	"${PGBB[@]}" -D "$WORK/ref" >"$WORK/logs/ref.log" 2>&1 || { cat "$WORK/logs/ref.log" >&2; die "pg_basebackup of the reference base.tar failed"; }
	BASE_TAR=$WORK/ref/base.tar
	BASE_BYTES=$(stat -c %s "$BASE_TAR")
	log "base.tar: $BASE_BYTES bytes"
fi
# tar_files TAR: the number of regular files in TAR (python reads the headers and seeks over the data).
tar_files() {
	python3 -c 'import sys, tarfile; print(sum(1 for m in tarfile.open(sys.argv[1]) if m.isfile()))' "$1" 2>/dev/null || echo "?"
}

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
	# A worktree's .git is a file naming its git directory, whose refs are
	# in the common directory (the file commondir names it).
	local gitdir=$ROOT/.git common head
	[ -f "$gitdir" ] && gitdir=$(sed -n 's/^gitdir: //p' "$gitdir")
	common=$gitdir
	if [ -f "$gitdir/commondir" ]; then
		common=$(cat "$gitdir/commondir")
		case $common in /*) ;; *) common=$gitdir/$common ;; esac
	fi
	head=$(cat "$gitdir/HEAD" 2>/dev/null) || { echo unknown; return; }
	case $head in
	ref:*)
		head=${head#ref: }
		if [ -f "$gitdir/$head" ]; then cat "$gitdir/$head"; elif [ -f "$common/$head" ]; then cat "$common/$head"; else
			awk -v r="$head" '$2 == r {print $1}' "$common/packed-refs" 2>/dev/null | grep . || echo unknown
		fi
		;;
	*) echo "$head" ;;
	esac
}
fact "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M:%S')"
fact "git commit" "$(git_commit)"
fact "pgstow" "$("$PGSTOW" version 2>&1 | sed -n 1p), $(go version | cut -d' ' -f3-)"
fact "pg_basebackup" "$("$PGBIN/pg_basebackup" --version)"
fact "lz4, tar" "$(lz4 --version 2>&1 | sed -n 's/^\*\*\* \(LZ4 command line interface\) .*\(v[0-9.]*\).*/lz4 \2/p' | sed -n 1p), $(tar --version | sed -n 1p)"
fact "MinIO" "$(go version -m "$MINIO_BIN" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')"
fact "CPU" "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sed -n 1p))"
fact "memory" "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact "kernel" "$(uname -sr)"
fact "work directory" "$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
if [ "$ONLY" != incremental ]; then
	fact "PostgreSQL" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc 'SELECT version()')"
	fact "data checksums" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc 'SHOW data_checksums')"
	fact "dataset" "$LOADER; $("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT 'orders rows ' || count(*) || ' (database $DB)' FROM orders" 2>/dev/null || echo "orders rows $ROWS (as requested)"), $("${PSQL[@]}" -p "$PORT" -d "$PGB_DB" -Atc "SELECT 'pgbench scale ' || count(*) || ' (database $PGB_DB)' FROM pgbench_branches" 2>/dev/null || echo "pgbench scale $SCALE (as requested)")"
	fact "database size" "$("${PSQL[@]}" -p "$PORT" -d "$DB" -Atc "SELECT string_agg(datname || ' ' || pg_size_pretty(pg_database_size(datname)) || ' (' || pg_database_size(datname) || ' bytes)', ', ' ORDER BY datname) FROM pg_database WHERE datname IN ('$DB', '$PGB_DB')")"
	fact "base.tar bytes" "$BASE_BYTES"
	fact "files in base.tar" "$(tar_files "$BASE_TAR")"
fi
fact "runs per command" "$RUNS"

# --- measuring --------------------------------------------------------------------------
CSV=$WORK/runs.csv
CMDS=$WORK/commands.tsv
echo "started_utc,dataset,group,id,run,wall_s,user_s,sys_s,max_rss_kib,exit_code,server_cpu_s,store_cpu_s,raw_bytes,stored_bytes,new_bytes,fetched_bytes,check" >"$CSV"
FAILED=0

# measure DATASET GROUP ID RUN COMMAND: runs COMMAND (a bash command line)
# under /usr/bin/time and sets ROW, the start of its CSV line, and LAST_RC.
# Before it, sync, so that no command pays for the dirty pages of the one
# before. GNU time's %U and %S are the user and system CPU seconds of the
# command and of every child it waited for (bash, tar, lz4, sync); %M is the
# peak RSS of the largest single process.
# The CPU the servers spend for a command is not in GNU time's figures:
# PostgreSQL's walsender sends a backup's files, and MinIO stores and
# serves its objects. On a machine whose cores they share with the command,
# it is wall time no client can avoid, so it is measured too: the CPU
# seconds of the postmaster, its children alive at the end and those it
# reaped (cutime, cstime), and of the MinIO process, before and after.
# SERVER_PID is the postmaster of the cluster being measured (empty: none).
SERVER_PID=
CLK_TCK=$(getconf CLK_TCK)
# cpu_of PID [children]: CPU seconds so far of PID (and of its children).
cpu_of() {
	local pid=$1 kids=${2:-} p t=0
	[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || { echo ""; return; }
	# Fields after the ")" that ends the command name: utime is the 12th.
	t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13 + $14 + $15}')
	if [ -n "$kids" ]; then
		for p in $(pgrep -P "$pid"); do
			t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
		done
	fi
	awk -v t="$t" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}
# postmaster_of PORT: the postmaster's PID of the cluster on PORT.
postmaster_of() {
	local pid
	pid=$("${PSQL[@]}" -p "$1" -d postgres -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'" 2>/dev/null) || return 0
	if [ -n "$pid" ]; then sed 's/.*) //' "/proc/$pid/stat" | awk '{print $2}'; fi
}
cpu_delta() { # BEFORE AFTER
	if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; fi
}

LAST_RC=0
measure() {
	local ds=$1 group=$2 id=$3 run=$4 cmd=$5 started tf=$WORK/time.out wall='' user='' sys='' rss='' v tag=''
	[ "$ds" = main ] || tag=$ds-
	local lf=$WORK/logs/$tag$id-$run.log
	rm -f "$tf"
	sync
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	local srv0 sto0 srv='' sto=''
	srv0=$(cpu_of "$SERVER_PID" children)
	sto0=$(cpu_of "$MINIO_PID")
	if "$TIME" -o "$tf" -f "%e %U %S %M" bash -o pipefail -c "$cmd" >"$lf" 2>&1; then LAST_RC=0; else LAST_RC=$?; fi
	srv=$(cpu_delta "$srv0" "$(cpu_of "$SERVER_PID" children)")
	sto=$(cpu_delta "$sto0" "$(cpu_of "$MINIO_PID")")
	# The last line is the format's (before it GNU time may write "Command
	# exited with non-zero status N"); a missing or odd line leaves the fields empty.
	if [ -s "$tf" ]; then read -r wall user sys rss _ < <(tail -n 1 "$tf") || true; fi
	for v in wall user sys rss; do [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || printf -v "$v" '%s' ''; done
	if [ "$LAST_RC" -eq 0 ] && [ -z "$wall" ]; then LAST_RC=255; fi # no timing: count it as failed
	if [ "$LAST_RC" -ne 0 ]; then
		FAILED=$((FAILED + 1))
		echo "bench: FAILED ($LAST_RC): $tag$id run $run: $cmd" >&2
		tail -n 20 "$lf" | sed 's/^/    /' >&2
		cp "$lf" "$OUT/failed-$STAMP-$tag$id-$run.log"
	fi
	printf '%-4s run %d/%d: %6s s wall  %6s s user  %6s s sys  %7s KiB  %s\n' "$tag$id" "$run" "$RUNS" "$wall" "$user" "$sys" "$rss" \
		"$([ "$LAST_RC" -eq 0 ] && echo ok || echo "FAILED ($LAST_RC)")" >&2
	ROW="$started,$ds,$group,$id,$run,$wall,$user,$sys,$rss,$LAST_RC,$srv,$sto"
}
# pgstow_sizes URL: raw,stored,new bytes of the newest backup in the repository.
pgstow_sizes() {
	"$PGSTOW" list --json --repo "$1" 2>/dev/null | python3 -c '
import json, sys
b = json.load(sys.stdin)[-1]
print("%d,%d,%d" % (b["raw_bytes"], b["stored_bytes"], b["new_bytes"]))' 2>/dev/null || echo ",,"
}
row() { echo "$ROW,$1" >>"$CSV"; }

# The commands, as shown in the report: group, label and template per ID.
declare -A CMD_GROUP CMD_LABEL CMD_TEMPLATE
def() { CMD_GROUP[$1]=$2 CMD_LABEL[$1]=$3 CMD_TEMPLATE[$1]=$4; }
def B1 backup "pg_basebackup → /dev/null (stream ceiling)" "pg_basebackup -h 127.0.0.1 -p P -U postgres -Ft -Xnone -c fast -D - > /dev/null"
def B2 backup "pg_basebackup --compress=client-lz4" "pg_basebackup -h 127.0.0.1 -p P -U postgres -Ft -Xnone -c fast --compress=client-lz4 -D DIR"
def B3 backup "pgstow backup → file://" "pgstow backup --repo file://REPO --checkpoint fast   (fresh empty repository)"
def B4 backup "pgstow backup → MinIO" "pgstow backup --repo 's3://BUCKET/PREFIX?endpoint=http://127.0.0.1:P&path_style=true&region=us-east-1' --checkpoint fast   (fresh prefix)"
def B5 backup "pgstow backup → file://, second" "pgstow backup --repo file://REPO --checkpoint fast   (the repository B3 just filled, unchanged data)"
def R1 restore "tar -x (uncompressed base.tar)" "tar -x -f base.tar -C DIR && sync -f DIR"
def R2 restore "lz4 -dc | tar -x" "lz4 -dc base.tar.lz4 | tar -x -C DIR && sync -f DIR   (base.tar.lz4 of B2 run 1)"
def R3 restore "pgstow restore ← file://" "pgstow restore --repo file://REPO -D DIR --json > OUT   (REPO of B3/B5 run 1, its latest backup; on the main dataset backup 2; fsyncs itself)"
def R4 restore "pgstow restore ← MinIO" "pgstow restore --repo 's3://BUCKET/PREFIX?…' -D DIR --json > OUT   (PREFIX of B4 run 1, its latest backup; on the main dataset backup 2)"
# Issue 16 (delta_prep says what backups 1 and 2 are).
def R5 restore "pgstow restore --delta, backup 1's restore → backup 2 ← file://" "rm -rf DIR; cp -a PRISTINE1 DIR; sync (untimed), then pgstow restore --delta --repo file://REPO -D DIR --json > OUT"
def R6 restore "pgstow restore --delta onto backup 2's restore ← file://" "rm -rf DIR; cp -a PRISTINE2 DIR; sync (untimed), then pgstow restore --delta --repo file://REPO -D DIR --json > OUT   (checksum mode, the default)"
def R7 restore "pgstow restore --database pgbench ← file://" "pgstow restore --database pgbench --repo file://REPO -D DIR --json > OUT   (then, untimed: start DIR, count pgbench_accounts)"
def R5m restore "pgstow restore --delta, backup 1's restore → backup 2 ← MinIO" "as R5 with --repo 's3://BUCKET/PREFIX?…' (PREFIX of B4 run 1)"
def R6m restore "pgstow restore --delta onto backup 2's restore ← MinIO" "as R6 with --repo 's3://BUCKET/PREFIX?…', PRISTINE2 restored from that prefix"
def R7m restore "pgstow restore --database pgbench ← MinIO" "as R7 with --repo 's3://BUCKET/PREFIX?…'"
DELTA_IDS=(R5 R6 R7 R5m R6m R7m)
# cmd_defs DATASET ID...: the report's list of the commands measured on DATASET.
cmd_defs() {
	local ds=$1 id
	shift
	for id in "$@"; do
		printf '%s\t%s\t%s\t%s\t%s\n' "$ds" "$id" "${CMD_GROUP[$id]}" "${CMD_LABEL[$id]}" "${CMD_TEMPLATE[$id]}" >>"$CMDS"
	done
}

# run_backups DATASET PORT CONN T S3PREFIX ID...: the backup commands ID... of
# a dataset, round-robin, RUNS times, into fresh places under T (run 1's
# outputs are kept there as the restores' sources) and MinIO prefixes
# S3PREFIX<run>.
run_backups() {
	local ds=$1 port=$2 conn=$3 t=$4 pfx=$5 run id s repo s3
	shift 5
	local pgbb=("$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -Ft -Xnone -c fast)
	local pg=(--pg "$conn")
	mkdir -p "$t"
	say "$ds: backups $*, round-robin, $RUNS runs"
	for run in $(seq 1 "$RUNS"); do
		repo=file://$t/repo-$run
		s3=$(s3_url "$pfx$run")
		for id in "$@"; do
			case $id in
			B1)
				measure "$ds" backup B1 "$run" "$(printf '%q ' "${pgbb[@]}") -D - > /dev/null"
				row ",,"
				;;
			B2)
				measure "$ds" backup B2 "$run" "$(printf '%q ' "${pgbb[@]}") --compress=client-lz4 -D $(printf '%q' "$t/lz4-$run")"
				if [ "$LAST_RC" -eq 0 ]; then s=$(stat -c %s "$t/lz4-$run/base.tar.lz4" 2>/dev/null || echo); row ",$s,$s"; else row ",,"; fi
				;;
			B3)
				measure "$ds" backup B3 "$run" "$(printf '%q ' "$PGSTOW" backup "${pg[@]}" --repo "$repo" --checkpoint fast --label bench-first)"
				row "$(pgstow_sizes "$repo")"
				;;
			B4)
				measure "$ds" backup B4 "$run" "$(printf '%q ' "$PGSTOW" backup "${pg[@]}" --repo "$s3" --checkpoint fast --label bench-s3)"
				row "$(pgstow_sizes "$s3")"
				;;
			B5)
				measure "$ds" backup B5 "$run" "$(printf '%q ' "$PGSTOW" backup "${pg[@]}" --repo "$repo" --checkpoint fast --label bench-second)"
				row "$(pgstow_sizes "$repo")"
				;;
			*) die "run_backups: unknown command $id" ;;
			esac
		done
		# Run 1's outputs are the restore sources; the others only take room.
		if [ "$run" -gt 1 ]; then rm -rf "$t/lz4-$run" "$t/repo-$run"; fi
	done
}

# untimed NAME COMMAND...: a setup step of the measurements, not measured; its
# output goes to logs/NAME.log, shown when it fails (which ends the run).
untimed() {
	local name=$1
	shift
	"$@" >"$WORK/logs/$name.log" 2>&1 || { tail -n 30 "$WORK/logs/$name.log" >&2; die "$name failed: $*"; }
}
# latest_id URL: the id of the newest backup in the repository.
latest_id() {
	"$PGSTOW" list --json --repo "$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["id"])'
}

# change_rows PORT: issue 16's "1% of rows changed": the newest 1% of the rows
# (the highest ids) of pgbench_accounts and of orders updated, then
# CHECKPOINT, so that the change is in the data files a backup reads.
# The newest rows, not 1% at random: an OLTP workload updates recent rows
# (open orders, active accounts), and random updates would touch about half
# the pages of a table of ~60 rows a page (1 - 0.99^60 ≈ 45%), which no
# page- or chunk-level delta can avoid. The updates are not HOT (the pages are
# full), so the new row versions go to the tables' ends and every index gets
# an entry: at the right end for the ids, at random leaves for orders'
# customer and token indexes (that is in the figures; docs/benchmarks.md).
# On a reused cluster this runs at every harness run (the values drift by
# one each time; autovacuum takes the dead row versions).
# BENCH_CHANGE=accounts updates as many rows, all of them the newest of
# pgbench_accounts (2% of it; the two tables have the same number of rows in
# the default dataset), whose only index is its key: the change then stays
# where it is made, which shows what the delta restore costs when the
# workload does not scatter it.
change_rows() {
	local psql=("${PSQL[@]}" -p "$1")
	if [ "$CHANGE" = accounts ]; then
		"${psql[@]}" -d "$PGB_DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1
			WHERE aid > (SELECT max(aid) - count(*) / 50 FROM pgbench_accounts)" &&
			"${psql[@]}" -d postgres -c "CHECKPOINT"
		return
	fi
	# &&: called by untimed, in a || list, where set -e does not hold.
	"${psql[@]}" -d "$PGB_DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1
		WHERE aid > (SELECT max(aid) - count(*) / 100 FROM pgbench_accounts)" &&
		"${psql[@]}" -d "$DB" -c "UPDATE orders SET status = CASE status WHEN 'delivered' THEN 'returned' ELSE 'delivered' END,
		amount = amount + 1 WHERE id > (SELECT max(id) - count(*) / 100 FROM orders)" &&
		"${psql[@]}" -d postgres -c "CHECKPOINT"
}

# delta_prep T S3PREFIX: the setting of issue 16's restores, untimed, after
# the backups (run 1's file repository T/repo-1 and MinIO prefix S3PREFIX1
# each hold a backup of the loaded data: backup 1):
# - the newest backup of T/repo-1 (backup 1) restored once into T/pristine-1
#   (R5 and R5m start from copies of it);
# - change_rows, then backup 2 into T/repo-1 and into the MinIO prefix: from
#   then on the latest backup of both, so that R3 and R4, the full restores
#   the new rows are compared with, restore backup 2 too;
# - backup 2 restored once from each into T/pristine-2f and T/pristine-2m
#   (R6 and R6m start from copies of them: a delta onto an identical directory);
# - the rows of pgbench_accounts, which R7's check expects.
# Sets RAW2_FILE and RAW2_S3 (backup 2's raw bytes in each) and SRC_ACCOUNTS.
RAW2_FILE='' RAW2_S3='' SRC_ACCOUNTS=''
delta_prep() {
	local t=$1 file_repo=file://$1/repo-1 s3 b1
	s3=$(s3_url "${2}1")
	b1=$(latest_id "$file_repo") || die "cannot read the backups of $file_repo"
	say "issue 16 setting (untimed): backup 1 ($b1) restored into pristine-1; 1% of rows changed; backup 2 to file:// and MinIO, restored into pristine-2f and -2m"
	untimed restore-b1 "$PGSTOW" restore --repo "$file_repo" --backup "$b1" -D "$t/pristine-1"
	untimed change-rows change_rows "$PORT"
	untimed backup2-file "$PGSTOW" backup --pg "$PG_CONN" --repo "$file_repo" --checkpoint fast --label bench-delta
	untimed backup2-s3 "$PGSTOW" backup --pg "$PG_CONN" --repo "$s3" --checkpoint fast --label bench-delta
	RAW2_FILE=$(pgstow_sizes "$file_repo" | cut -d, -f1)
	RAW2_S3=$(pgstow_sizes "$s3" | cut -d, -f1)
	untimed restore-b2-file "$PGSTOW" restore --repo "$file_repo" -D "$t/pristine-2f"
	untimed restore-b2-s3 "$PGSTOW" restore --repo "$s3" -D "$t/pristine-2m"
	SRC_ACCOUNTS=$("${PSQL[@]}" -p "$PORT" -d "$PGB_DB" -Atc "SELECT count(*) FROM pgbench_accounts")
	log "backup 1 $b1; backup 2 $(latest_id "$file_repo") (file://, $RAW2_FILE raw bytes), $(latest_id "$s3") (MinIO, $RAW2_S3 raw bytes); pgbench_accounts rows $SRC_ACCOUNTS"
	fact "issue 16 setting" "backup 1: $b1 (file://, run 1's repository, restored for R5/R5m); 1% of rows changed (change_rows, BENCH_CHANGE=$CHANGE); backup 2: $RAW2_FILE raw bytes (file://), $RAW2_S3 (MinIO); pgbench_accounts rows $SRC_ACCOUNTS"
}

# fetched_of OUT LOG: the bytes a restore downloaded (raw bytes of the
# chunks fetched), from its --json output OUT, else from a JSON or key=value
# line of its log LOG: the value of a key named bytes_fetched, fetched_bytes,
# BytesFetched or the like, wherever it is nested; failing that, the raw_bytes
# of the log's "restore complete" line (a full restore fetches every chunk).
# Empty when neither says.
fetched_of() {
	python3 - "$1" "$2" <<'PY' 2>/dev/null || true
import json, re, sys
KEY = re.compile(r"^(bytes_?fetched|fetched_?bytes)$", re.I)
def find(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if KEY.match(str(k)) and isinstance(v, (int, float)) and not isinstance(v, bool):
                return int(v)
        o = list(o.values())
    if isinstance(o, list):
        for v in o:
            r = find(v)
            if r is not None:
                return r
    return None
def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""
out, log = text(sys.argv[1]), text(sys.argv[2])
val = None
try:
    val = find(json.loads(out))
except ValueError:
    pass
if val is None:
    for line in (out + "\n" + log).splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                r = find(json.loads(line))
            except ValueError:
                continue
            if r is not None:
                val = r
if val is None:
    m = re.findall(r"(?i)\b(?:bytes_?fetched|fetched_?bytes)\"?\s*[=:]\s*\"?(\d+)\b", out + "\n" + log)
    if m:
        val = int(m[-1])
if val is None:
    # A full restore's summary may say it as raw_bytes only (every chunk's
    # raw size: all of them are fetched).
    for line in log.splitlines():
        if "restore complete" in line:
            m = re.search(r"\braw_bytes\"?\s*[=:]\s*\"?(\d+)\b", line)
            if m:
                val = int(m.group(1))
if val is not None:
    print(val)
PY
}

# check_pgbench DIR: after R7, untimed: starts the cluster restored in DIR (as
# postgres, on 127.0.0.1 and a free port, its own socket directory, trust
# authentication, no archiving), counts pgbench_accounts in database pgbench
# and stops it. Sets CHECK to OK when the count is the source's
# (SRC_ACCOUNTS), else FAIL (the why on stderr and in BENCH_OUT).
CHECK=
check_pgbench() {
	local d=$1 port n='' keep=() x lf
	lf=$WORK/logs/check-$(basename "$d").log
	CHECK=FAIL
	port=$(free_ports 1)
	: >"$lf" # the server's log: postgres writes it, in a directory of root's
	if is_root; then chown -R postgres: "$d" "$lf"; fi
	printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$d/pg_hba.conf"
	if as_pg "$PGBIN/pg_ctl" -D "$d" -l "$lf" -w -t 600 \
		-o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$d -c archive_mode=off" start >/dev/null 2>&1; then
		PG_RUNNING+=("$d")
		n=$("${PSQL[@]}" -p "$port" -d "$PGB_DB" -Atc "SELECT count(*) FROM pgbench_accounts" 2>>"$lf") || n=
		as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1 ||
			as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
		for x in "${PG_RUNNING[@]}"; do [ "$x" = "$d" ] || keep+=("$x"); done
		PG_RUNNING=("${keep[@]}")
	fi
	if [ -n "$n" ] && [ "$n" = "$SRC_ACCOUNTS" ]; then
		CHECK=OK
	else
		echo "bench: check of $d: pgbench_accounts has '${n:-no answer}' rows, the source $SRC_ACCOUNTS" >&2
		tail -n 10 "$lf" 2>/dev/null | sed 's/^/    /' >&2 || true
		cp "$lf" "$OUT/failed-$STAMP-check-$(basename "$d").log" 2>/dev/null || true
	fi
}

# run_restores DATASET BASE_TAR T S3PREFIX ID...: the restore commands ID...,
# round-robin, RUNS times, from base.tar and run 1's outputs of run_backups
# (and, for issue 16's R5–R7m, delta_prep's).
run_restores() {
	local ds=$1 base_tar=$2 t=$3 pfx=$4 run id d c o src raw fetched lf kept=()
	shift 4
	local lz4_src=$t/lz4-1/base.tar.lz4 file_src=file://$t/repo-1 s3_src
	s3_src=$(s3_url "${pfx}1")
	say "$ds: restores $*, round-robin, $RUNS runs"
	for run in $(seq 1 "$RUNS"); do
		for id in "$@"; do
			d=$t/restore-$id-$run
			o=$WORK/logs/out-$ds-$id-$run.json
			lf=$WORK/logs/$id-$run.log # measure's log of the run
			[ "$ds" = main ] || lf=$WORK/logs/$ds-$id-$run.log
			rm -rf "$d"
			# The delta rows' directory: a copy of a pristine restore, made
			# before the timing (measure syncs before it starts the clock).
			case $id in
			R5 | R5m) cp -a "$t/pristine-1" "$d" ;;
			R6) cp -a "$t/pristine-2f" "$d" ;;
			R6m) cp -a "$t/pristine-2m" "$d" ;;
			*) mkdir -p "$d" ;;
			esac
			chmod 700 "$d"
			src=$file_src raw=$RAW2_FILE
			case $id in R4 | R?m) src=$s3_src raw=$RAW2_S3 ;; esac
			case $id in
			R1) c="tar -x -f $(printf '%q' "$base_tar") -C $(printf '%q' "$d") && sync -f $(printf '%q' "$d")" ;;
			R2) c="lz4 -dc $(printf '%q' "$lz4_src") | tar -x -C $(printf '%q' "$d") && sync -f $(printf '%q' "$d")" ;;
			R3 | R4) c="$(printf '%q ' "$PGSTOW" restore --repo "$src" -D "$d" --json)> $(printf '%q' "$o")" ;;
			R5 | R6 | R5m | R6m) c="$(printf '%q ' "$PGSTOW" restore --delta --repo "$src" -D "$d" --json)> $(printf '%q' "$o")" ;;
			R7 | R7m) c="$(printf '%q ' "$PGSTOW" restore --database "$PGB_DB" --repo "$src" -D "$d" --json)> $(printf '%q' "$o")" ;;
			*) die "run_restores: unknown command $id" ;;
			esac
			measure "$ds" restore "$id" "$run" "$c"
			case $id in
			R1 | R2) row ",," ;;
			*)
				fetched=$(fetched_of "$o" "$lf")
				CHECK=
				case $id in R7 | R7m) if [ "$LAST_RC" -eq 0 ]; then check_pgbench "$d"; else CHECK=FAIL; fi ;; esac
				[ -z "$CHECK" ] || log "$id run $run: the restored cluster's pgbench_accounts check: $CHECK"
				# raw: backup 2's raw bytes, the unit of the fetched share;
				# only the main dataset has a backup 2.
				[ "$ds" = main ] || raw=
				row "$raw,,,$fetched,$CHECK"
				;;
			esac
			# The many-files restores stay until the round-robin ends:
			# for a minute or more after tens of thousands of files are
			# deleted, ext4 makes each new inode skip the recently deleted
			# ones (recently_deleted in fs/ext4/ialloc.c), reading their
			# inode blocks, and the next restore's file creation took 3
			# to 5 times as long (docs/benchmarks.md, "Fairness").
			if [ "$ds" = main ]; then rm -rf "$d"; else kept+=("$d"); fi
		done
	done
	if [ ${#kept[@]} -gt 0 ]; then rm -rf "${kept[@]}"; fi
}

# profile_runs DATASET CONN T: with BENCH_CPUPROFILE=1, one more pgstow backup
# (into a fresh repository) and restore of it with --cpuprofile, not timed and
# not in the figures; the profiles go to BENCH_OUT.
profile_runs() {
	[ "$CPUPROFILE" = 1 ] || return 0
	local ds=$1 conn=$2 t=$3 prof=$OUT/cpu-$STAMP-$1 got=()
	say "$ds: CPU profiles (untimed, not in the figures)"
	mkdir -p "$t/prof-restore"
	chmod 700 "$t/prof-restore"
	if "$PGSTOW" backup --cpuprofile "$prof-backup.prof" --pg "$conn" --repo "file://$t/prof-repo" --checkpoint fast --label bench-profile \
		>"$WORK/logs/$ds-profile-backup.log" 2>&1; then
		got+=("$prof-backup.prof")
		if "$PGSTOW" restore --cpuprofile "$prof-restore.prof" --repo "file://$t/prof-repo" -D "$t/prof-restore" \
			>"$WORK/logs/$ds-profile-restore.log" 2>&1; then
			got+=("$prof-restore.prof")
		else
			log "warning: the profiled restore failed (not a measured command):"
			tail -n 20 "$WORK/logs/$ds-profile-restore.log" >&2
		fi
	else
		log "warning: the profiled backup failed (not a measured command):"
		tail -n 20 "$WORK/logs/$ds-profile-backup.log" >&2
	fi
	rm -rf "$t/prof-repo" "$t/prof-restore"
	fact "CPU profiles, $ds" "${got[*]:-none written} (untimed extra runs; go tool pprof bin/pgstow FILE)"
}

# main_rows: the main dataset's backups and restores, issue 16's included.
main_rows() {
	MAIN_BACKUPS=(B1 B2 B3 B4 B5)
	MAIN_RESTORES=(R1 R2 R3 R4 "${DELTA_IDS[@]}")
	if [ "$ONLY" = restore ]; then
		MAIN_BACKUPS=()
		MAIN_RESTORES=(R3 R4 "${DELTA_IDS[@]}")
	fi
	cmd_defs main "${MAIN_BACKUPS[@]}" "${MAIN_RESTORES[@]}"
	SERVER_PID=$(postmaster_of "$PORT")
	[ -n "$SERVER_PID" ] || log "no postmaster PID found for port $PORT: server CPU is not measured"
	if [ "$ONLY" = restore ]; then
		# The restores' sources, as run_backups' run 1 leaves them (B3, B4), untimed.
		say "BENCH_ONLY=restore: backup 1 into file:// and MinIO (untimed)"
		mkdir -p "$WORK/t"
		untimed setup-backup-file "$PGSTOW" backup --pg "$PG_CONN" --repo "file://$WORK/t/repo-1" --checkpoint fast --label bench-first
		untimed setup-backup-s3 "$PGSTOW" backup --pg "$PG_CONN" --repo "$(s3_url b1)" --checkpoint fast --label bench-s3
	else
		run_backups main "$PORT" "$PG_CONN" "$WORK/t" b "${MAIN_BACKUPS[@]}"
	fi
	delta_prep "$WORK/t" b
	run_restores main "$BASE_TAR" "$WORK/t" b "${MAIN_RESTORES[@]}"
	profile_runs main "$PG_CONN" "$WORK/t"
}
[ "$ONLY" = incremental ] || main_rows

# --- the many-files dataset ---------------------------------------------------------------
# The many-files recipe: TABLES tables in schema parts of database manyfiles,
# the way thousands of small partitions look: an id primary key, a timestamp,
# an integer and a short code (text in odd-numbered tables, which so have a
# TOAST table and its index; varchar(24) in even ones), with 1 to 200 rows,
# most of them few (1 + h³/5·10⁶ rows for a pseudo-random h in 0..999: a
# median of 26; about a fifth of the tables are over one 8 kB page and so
# have a free space map). About 3.2 files and 40 kB per table: 20000 tables
# make about 65000 files and 0.8 GB, close to the cluster that motivated it
# (66000 files, 685 MiB).
# One session, a COMMIT every 1000 tables, then CHECKPOINT.
mf_load() { # PORT TABLES
	local t0
	local psql=("${PSQL[@]}" -p "$1")
	t0=$(date +%s)
	"${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $MF_DB" -c "CREATE DATABASE $MF_DB"
	"${psql[@]}" -d "$MF_DB" -v tables="$2" <<'SQL'
CREATE SCHEMA parts;
SET bench.tables = :tables;
DO $do$
DECLARE
  h bigint;
  t text;
BEGIN
  FOR i IN 1..current_setting('bench.tables')::int LOOP
    h := i::bigint * 2654435761 % 1000;
    t := 'p' || lpad(i::text, 5, '0');
    EXECUTE format('CREATE TABLE parts.%I (id bigint PRIMARY KEY, at timestamptz NOT NULL, qty integer NOT NULL, code %s NOT NULL)',
                   t, CASE WHEN i % 2 = 0 THEN 'varchar(24)' ELSE 'text' END);
    EXECUTE format($q$INSERT INTO parts.%I
                      SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '17 minutes', (g * 31) %% 1000,
                             'C-' || left(md5(%s || ':' || g), 20)
                      FROM generate_series(1, %s) AS g$q$,
                   t, i, 1 + h * h * h / 5000000);
    IF i % 1000 = 0 THEN
      COMMIT;
    END IF;
  END LOOP;
END
$do$;
CHECKPOINT;
SQL
	log "many-files dataset loaded in $(($(date +%s) - t0)) s"
}

MF_BASE_BYTES=
if [ "$MANYFILES" = 1 ]; then
	# Nothing of the main dataset runs while this one is measured: MinIO (the
	# many-files commands do not use it) and the main cluster stop first, and
	# the main dataset's files go.
	if [ -n "$MINIO_PID" ]; then
		kill "$MINIO_PID" 2>/dev/null || true
		wait "$MINIO_PID" 2>/dev/null || true
		MINIO_PID=
	fi
	if [ -n "$MAIN_CLUSTER" ]; then stop_cluster "$MAIN_CLUSTER"; fi
	rm -rf "$WORK/t" "$WORK/ref"

	if [ -n "$MF_REUSE_PORT" ]; then
		MF_PORT=$MF_REUSE_PORT
		say "many files: reusing the cluster on 127.0.0.1:$MF_PORT (database $MF_DB)"
		"${PSQL[@]}" -p "$MF_PORT" -d "$MF_DB" -Atc "SELECT 1" >/dev/null ||
			die "no database $MF_DB on 127.0.0.1:$MF_PORT (BENCH_REUSE_MANYFILES_PORT)"
		MF_LOADER="reused cluster on port $MF_PORT"
	else
		MF_PORT=$(free_ports 1)
		say "many files: throw-away PostgreSQL 15 cluster on 127.0.0.1:$MF_PORT, $MF_TABLES tables"
		# autovacuum off: it would otherwise analyze the fresh tables while
		# they are measured. The loader holds ~4 locks per table until each COMMIT.
		new_cluster "$WORK/pgmf" "$MF_PORT" "autovacuum = off
max_locks_per_transaction = 256"
		# In the background and waited for, so that set -e holds inside.
		mf_load "$MF_PORT" "$MF_TABLES" >"$WORK/logs/mf-load.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/mf-load.log" >&2; die "many-files dataset load failed"; }
		grep -E '^bench:' "$WORK/logs/mf-load.log" >&2 || true
		MF_LOADER="built-in recipe (scripts/bench.sh), autovacuum off"
	fi
	MF_CONN="host=127.0.0.1 port=$MF_PORT user=postgres dbname=$MF_DB"

	say "many files: reference base.tar"
	"$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$MF_PORT" -U postgres -Ft -Xnone -c fast -D "$WORK/mref" >"$WORK/logs/mref.log" 2>&1 ||
		{ cat "$WORK/logs/mref.log" >&2; die "pg_basebackup of the many-files reference base.tar failed"; }
	MF_BASE_TAR=$WORK/mref/base.tar
	MF_BASE_BYTES=$(stat -c %s "$MF_BASE_TAR")
	MF_FILES=$(tar_files "$MF_BASE_TAR")
	log "many-files base.tar: $MF_BASE_BYTES bytes, $MF_FILES files"
	fact "many-files dataset" "$MF_LOADER; $("${PSQL[@]}" -p "$MF_PORT" -d "$MF_DB" -Atc "SELECT count(*) || ' tables in schema parts of database $MF_DB' FROM pg_tables WHERE schemaname = 'parts'")"
	fact "many-files database size" "$("${PSQL[@]}" -p "$MF_PORT" -d "$MF_DB" -Atc "SELECT pg_size_pretty(pg_database_size('$MF_DB')) || ' (' || pg_database_size('$MF_DB') || ' bytes)'")"
	fact "many-files base.tar bytes" "$MF_BASE_BYTES"
	fact "many-files files in base.tar" "$MF_FILES"

	MF_BACKUPS=(B2 B3)
	MF_RESTORES=(R1 R2 R3)
	cmd_defs manyfiles "${MF_BACKUPS[@]}" "${MF_RESTORES[@]}"
	SERVER_PID=$(postmaster_of "$MF_PORT")
	run_backups manyfiles "$MF_PORT" "$MF_CONN" "$WORK/m" m "${MF_BACKUPS[@]}"
	run_restores manyfiles "$MF_BASE_TAR" "$WORK/m" m "${MF_RESTORES[@]}"
	profile_runs manyfiles "$MF_CONN" "$WORK/m"
fi

# --- the report -------------------------------------------------------------------------
# delta_targets CSV: issue 16's targets next to this run's figures (Markdown),
# for the reader; never judged. The full restore each row is compared with is
# the same run's, from the same repository: R3 (file://) or R4 (MinIO). Bytes
# fetched are what pgstow restore reported (fetched_of), over backup 2's raw
# bytes (pgstow list --json), the highest of the runs.
# --- issue 15: incremental backups on PostgreSQL 17/18 ------------------------------------
# Issue 15's rows (BENCH_INCREMENTAL=1, or alone with BENCH_ONLY=incremental),
# on a cluster of their own, after everything else has stopped: PostgreSQL
# BENCH_INC_MAJOR (the npm build), summarize_wal = on and autovacuum off, made
# by new_cluster like the main one and loaded with the same dataset (the same
# generator, BENCH_ROWS and BENCH_SCALE). Each run has a fresh file://
# repository:
#   I1  pgstow backup --type full (into the empty repository)
#       then, untimed: change_rows (the newest 1% of the rows of
#       pgbench_accounts and orders, contiguous id ranges; then CHECKPOINT)
#   I2  pgstow backup --type incremental (its parent is I1's backup)
# then, round-robin, from run 1's repository:
#   I3  pgstow restore --backup <I1's backup>
#   I4  pgstow restore --backup <I2's backup>
# Their CSV (runs-incremental-<UTC>.csv) has one more column, sent_bytes:
# what the server sent for an incremental (its manifest's
# incremental.sent_bytes), a full's raw bytes for I1.
INC_CSV=$WORK/runs-incremental.csv
INC_RAN=0
# sent_of URL: the server's bytes of the newest backup of the repository, if incremental.
sent_of() {
	"$PGSTOW" list --json --repo "$1" 2>/dev/null | python3 -c '
import json, sys
b = json.load(sys.stdin)[-1]
print((b.get("incremental") or {}).get("sent_bytes", ""))' 2>/dev/null || true
}
# first_id URL: the id of the oldest backup in the repository.
first_id() {
	"$PGSTOW" list --json --repo "$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])'
}
run_incremental() {
	local d port conn t=$WORK/inc run repo c o lf id src sizes full_id inc_id csv_main=$CSV
	if [ -n "$MINIO_PID" ]; then
		kill "$MINIO_PID" 2>/dev/null || true
		wait "$MINIO_PID" 2>/dev/null || true
		MINIO_PID=
	fi
	for d in "${PG_RUNNING[@]}"; do stop_cluster "${d%/data}"; done
	rm -rf "$WORK/t" "$WORK/m" "$WORK/ref" "$WORK/mref"
	port=$(free_ports 1)
	say "issue 15: throw-away PostgreSQL $INC_MAJOR cluster on 127.0.0.1:$port (summarize_wal = on, autovacuum off)"
	new_cluster "$WORK/pginc" "$port" "summarize_wal = on
autovacuum = off" "$INC_PGBIN"
	if [ "$LOAD_KIND" = shared ]; then
		say "issue 15 dataset: $SHARED_MKDATA $port $DB $ROWS 1, then pgbench -i -s $SCALE into database $PGB_DB"
		PATH=$PGBIN:$PATH bash "$SHARED_MKDATA" "$port" "$DB" "$ROWS" 1 >"$WORK/logs/inc-mkdata.log" 2>&1 ||
			{ tail -n 30 "$WORK/logs/inc-mkdata.log" >&2; die "issue 15 dataset load failed"; }
		load_pgbench "$port" "$SCALE" >"$WORK/logs/inc-load-pgbench.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/inc-load-pgbench.log" >&2; die "issue 15: pgbench -i into database $PGB_DB failed"; }
	else
		say "issue 15 dataset: built-in recipe, $ROWS orders rows, pgbench scale $SCALE"
		builtin_load "$port" "$ROWS" "$SCALE" >"$WORK/logs/inc-load.log" 2>&1 &
		wait "$!" || { tail -n 30 "$WORK/logs/inc-load.log" >&2; die "issue 15 dataset load failed"; }
	fi
	conn="host=127.0.0.1 port=$port user=postgres dbname=$DB"
	fact "issue 15 cluster" "$("${PSQL[@]}" -p "$port" -d postgres -Atc "SELECT version() || '; summarize_wal ' || current_setting('summarize_wal') || ', data checksums ' || current_setting('data_checksums') || ', autovacuum ' || current_setting('autovacuum')")"
	fact "issue 15 dataset" "$LOAD_KIND generator; $("${PSQL[@]}" -p "$port" -d postgres -Atc "SELECT string_agg(datname || ' ' || pg_size_pretty(pg_database_size(datname)) || ' (' || pg_database_size(datname) || ' bytes)', ', ' ORDER BY datname) FROM pg_database WHERE datname IN ('$DB', '$PGB_DB')")"
	SERVER_PID=$(postmaster_of "$port")
	[ -n "$SERVER_PID" ] || log "no postmaster PID found for port $port: server CPU is not measured"
	CSV=$INC_CSV
	echo "$(head -n 1 "$csv_main"),sent_bytes" >"$CSV"
	mkdir -p "$t"
	say "issue 15: full backup, 1% of rows changed, incremental backup; $RUNS runs, each into a fresh repository"
	for run in $(seq 1 "$RUNS"); do
		repo=file://$t/repo-$run
		measure incremental backup I1 "$run" "$(printf '%q ' "$PGSTOW" backup --pg "$conn" --repo "$repo" --checkpoint fast --type full --label bench-full)"
		sizes=$(pgstow_sizes "$repo")
		row "$sizes,,,${sizes%%,*}"
		untimed "inc-change-rows-$run" change_rows "$port"
		measure incremental backup I2 "$run" "$(printf '%q ' "$PGSTOW" backup --pg "$conn" --repo "$repo" --checkpoint fast --type incremental --label bench-incremental)"
		row "$(pgstow_sizes "$repo"),,,$(sent_of "$repo")"
		if [ "$run" -gt 1 ]; then rm -rf "$t/repo-$run"; fi
	done
	full_id=$(first_id "file://$t/repo-1") || die "cannot read the backups of file://$t/repo-1"
	inc_id=$(latest_id "file://$t/repo-1") || die "cannot read the backups of file://$t/repo-1"
	fact "issue 15 backups" "run 1's repository: full $full_id (I3 restores it), incremental $inc_id (I4)"
	say "issue 15: restores of the full ($full_id) and of the incremental ($inc_id), round-robin, $RUNS runs"
	for run in $(seq 1 "$RUNS"); do
		for id in I3 I4; do
			src=$full_id
			[ "$id" = I4 ] && src=$inc_id
			d=$t/restore-$id-$run
			o=$WORK/logs/out-incremental-$id-$run.json
			lf=$WORK/logs/incremental-$id-$run.log
			rm -rf "$d"
			mkdir -p "$d"
			chmod 700 "$d"
			c="$(printf '%q ' "$PGSTOW" restore --repo "file://$t/repo-1" --backup "$src" -D "$d" --json)> $(printf '%q' "$o")"
			measure incremental restore "$id" "$run" "$c"
			row ",,,$(fetched_of "$o" "$lf"),,"
			rm -rf "$d"
		done
	done
	CSV=$csv_main
	SERVER_PID=
	stop_cluster "$WORK/pginc"
	rm -rf "$t"
	INC_RAN=1
}
[ "$INCREMENTAL" = 0 ] || run_incremental

# inc_targets CSV: issue 15's table of targets from the CSV of its rows.
inc_targets() {
	python3 - "$1" <<'PY'
import csv, statistics, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    runs = [r for r in csv.DictReader(f) if (r.get("exit_code") or "") == "0"]
def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None
def by(cid):
    return {r["run"]: r for r in runs if r.get("id") == cid and num(r.get("wall_s")) is not None}
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def col(cid, key):
    return med([num(r.get(key)) for r in by(cid).values()])
def cpu(cid):
    return med([(num(r.get("user_s")) or 0) + (num(r.get("sys_s")) or 0) for r in by(cid).values()])
def per_run(a, ka, b, kb):
    ra, rb = by(a), by(b)
    v = [(num(ra[k].get(ka)), num(rb[k].get(kb))) for k in ra if k in rb]
    return med([x / y for x, y in v if x is not None and y])
def fmt(v, f):
    return "—" if v is None else f(v)
s = lambda v: f"{v:.2f} s"
b = lambda v: f"{v / 1e6:.1f} MB"
x = lambda v: f"{v:.3f}×"
pct = lambda v: f"{v * 100:.2f}%"
def verdict(v, goal, f):
    return "—" if v is None else f"{f(v)} ({'met' if v <= goal else 'missed'})"
names = {"I1": "pgstow backup --type full", "I2": "pgstow backup --type incremental (after 1% of rows changed)",
         "I3": "pgstow restore of the full", "I4": "pgstow restore of the incremental"}
out = ["## Issue 15: incremental backups", "",
       "Medians of the runs that succeeded (each run: a fresh file:// repository, I1, 1% of rows changed "
       "with CHECKPOINT, I2; then I3 and I4 round-robin from run 1's repository). CPU: pgstow's user + system "
       "seconds; server CPU: the PostgreSQL cluster's. Sent: bytes the server sent (an incremental's "
       "incremental.sent_bytes, a full's raw bytes).", "",
       "| id | command | runs | wall | CPU | server CPU | raw | sent | stored | new |",
       "|---|---|---|---|---|---|---|---|---|---|"]
for cid in ("I1", "I2", "I3", "I4"):
    out.append(f"| {cid} | {names[cid]} | {len(by(cid))} | {fmt(col(cid, 'wall_s'), s)} | {fmt(cpu(cid), s)} | "
               f"{fmt(col(cid, 'server_cpu_s'), s)} | {fmt(col(cid, 'raw_bytes'), b)} | {fmt(col(cid, 'sent_bytes'), b)} | "
               f"{fmt(col(cid, 'stored_bytes'), b)} | {fmt(col(cid, 'new_bytes'), b)} |")
out += ["", "| target | goal | this run |", "|---|---|---|",
        f"| incremental backup wall ÷ full backup wall (I2 ÷ I1) | ≤ 0.15× | {verdict(per_run('I2', 'wall_s', 'I1', 'wall_s'), 0.15, x)} |",
        f"| bytes the server sent ÷ the full's raw bytes (I2 sent ÷ I1 raw) | ≤ 5% | {verdict(per_run('I2', 'sent_bytes', 'I1', 'raw_bytes'), 0.05, pct)} |",
        f"| new bytes stored ÷ the full's new bytes (I2 new ÷ I1 new) | ≤ 5% | {verdict(per_run('I2', 'new_bytes', 'I1', 'new_bytes'), 0.05, pct)} |",
        f"| new bytes stored ÷ the full's raw bytes (I2 new ÷ I1 raw) | — | {fmt(per_run('I2', 'new_bytes', 'I1', 'raw_bytes'), pct)} |",
        f"| restore of the incremental ÷ restore of the full (I4 ÷ I3, medians) | ≤ 1.1× | "
        f"{verdict(None if not col('I3', 'wall_s') or col('I4', 'wall_s') is None else col('I4', 'wall_s') / col('I3', 'wall_s'), 1.1, x)} |",
        ""]
print("\n".join(out))
PY
}

delta_targets() {
	python3 - "$1" <<'PY'
import csv, statistics, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    runs = [r for r in csv.DictReader(f) if (r.get("dataset") or "main") == "main"]
def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None
def ok(cid):
    return [r for r in runs if r.get("id") == cid and (r.get("exit_code") or "") == "0" and num(r.get("wall_s")) is not None]
def median(cid):
    w = [num(r["wall_s"]) for r in ok(cid)]
    return statistics.median(w) if w else None
def ratio(cid, full):
    a, b = median(cid), median(full)
    return None if a is None or not b else a / b
def fetched_share(cid):
    v = [(num(r.get("fetched_bytes")), num(r.get("raw_bytes"))) for r in ok(cid)]
    v = [f / raw for f, raw in v if f is not None and raw]
    return max(v) if v else None
def verdict(v, goal, fmt):
    return "—" if v is None else f"{fmt(v)} ({'met' if v <= goal else 'missed'})"
x = lambda v: f"{v:.2f}×"
pct = lambda v: f"{v * 100:.2f}%"
def check(cid):
    all_runs = [r for r in runs if r.get("id") == cid]
    if not all_runs:
        return "—"
    good = sum(1 for r in all_runs if r.get("check") == "OK")
    return f"{'OK' if good == len(all_runs) else 'FAIL'} ({good} of {len(all_runs)} runs)"
rows = [
    ("R5 delta restore of backup 1's restore to backup 2 ÷ full restore", "≤ 0.20×",
     lambda s, full: verdict(ratio("R5" + s, full), 0.20, x)),
    ("R5 bytes fetched ÷ backup 2's raw bytes", "≤ 5%",
     lambda s, full: verdict(fetched_share("R5" + s), 0.05, pct)),
    ("R6 delta restore onto backup 2's restore ÷ full restore", "≤ 0.5×",
     lambda s, full: verdict(ratio("R6" + s, full), 0.5, x)),
    ("R6 bytes fetched ÷ backup 2's raw bytes", "0",
     lambda s, full: verdict(fetched_share("R6" + s), 0.0, pct)),
    ("R7 restore --database pgbench ÷ full restore", "≤ 0.35×",
     lambda s, full: verdict(ratio("R7" + s, full), 0.35, x)),
    ("R7 restored cluster starts, pgbench_accounts rows = the source's", "OK",
     lambda s, full: check("R7" + s)),
]
out = ["", "## Against the targets of issue 16", "",
       "Median wall times of the same run; the full restore is R3 (file://) or R4 (MinIO) of the same "
       "backup 2. Bytes fetched: what `pgstow restore` reported, over backup 2's raw bytes, the highest of the runs.", "",
       "| target | goal | file:// (÷ R3) | MinIO (÷ R4) |", "|---|---|---|---|"]
for name, goal, f in rows:
    out.append(f"| {name} | {goal} | {f('', 'R3')} | {f('m', 'R4')} |")
full = [(c, num(r.get("fetched_bytes")), num(r.get("raw_bytes"))) for c in ("R3", "R4") for r in ok(c)]
full = [f"{c} {f / raw:.3f}" for c, f, raw in full if f is not None and raw]
if full:
    out += ["", "Bytes fetched ÷ raw bytes of the full restores (each run): " + ", ".join(full) + "."]
out.append("")
print("\n".join(out))
PY
}

fact "harness runtime" "$(($(date +%s) - T0)) s (build, clusters and datasets included)"
MD=$OUT/results-$STAMP.md
CSVS=() # the CSVs this run wrote into OUT
if [ "$ONLY" != incremental ]; then
	cp "$CSV" "$OUT/runs-$STAMP.csv"
	CSVS+=("$OUT/runs-$STAMP.csv")
fi
MF_ARGS=()
[ -z "$MF_BASE_BYTES" ] || MF_ARGS=(--manyfiles-base-bytes "$MF_BASE_BYTES")
if [ "$ONLY" = incremental ]; then
	{
		echo "# pgstow benchmark: issue 15's rows (BENCH_ONLY=incremental)"
		echo
		echo "| fact | value |"
		echo "|---|---|"
		sed 's/|/\\|/g; s/\t/ | /; s/^/| /; s/$/ |/' "$FACTS"
		echo
	} >"$MD"
else
	python3 "$ROOT/scripts/bench-report.py" --csv "$CSV" --commands "$CMDS" --facts "$FACTS" \
		--base-bytes "$BASE_BYTES" "${MF_ARGS[@]}" --csv-name "runs-$STAMP.csv" >"$MD" || die "bench-report.py failed"
fi
if [ -n "$SRC_ACCOUNTS" ]; then
	{ echo; delta_targets "$CSV"; } >>"$MD" || die "the issue 16 targets' table failed"
fi
if [ "$INC_RAN" = 1 ]; then
	cp "$INC_CSV" "$OUT/runs-incremental-$STAMP.csv"
	CSVS+=("$OUT/runs-incremental-$STAMP.csv")
	{ echo; inc_targets "$INC_CSV"; echo "Every run of these rows: runs-incremental-$STAMP.csv."; } >>"$MD" || die "the issue 15 targets' table failed"
fi
cat "$MD"
log "wrote $MD and ${CSVS[*]} in $(($(date +%s) - T0)) s"
if [ "$FAILED" -gt 0 ]; then
	die "$FAILED measured command(s) failed (logs in $OUT/failed-$STAMP-*.log)"
fi
