# shellcheck shell=bash
# Azurite (the Azure Storage emulator, blob service only) for the Azure Blob
# provider tests. Sourced by scripts/install-deps.sh, which provides log, die
# and CACHE.
#
# It is an npm package, installed with its exact version into its own
# .cache/azurite directory; the tests run
# .cache/azurite/node_modules/.bin/azurite-blob. Newer releases than this
# one need Node >= 21, which these machines do not have.
AZURITE_VERSION=3.35.0

azurite_installed_version() {
	local pkg=$CACHE/azurite/node_modules/azurite/package.json
	[ -f "$pkg" ] || return 0
	node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true
}

install_azurite() {
	local dir=$CACHE/azurite
	if [ "$(azurite_installed_version)" = "$AZURITE_VERSION" ] && [ -x "$dir/node_modules/.bin/azurite-blob" ]; then
		log "azurite $AZURITE_VERSION: present"
		return
	fi
	command -v npm >/dev/null || die "npm is needed to install azurite (apt-get install nodejs npm)"
	mkdir -p "$dir"
	[ -f "$dir/package.json" ] ||
		echo '{"name":"pgstow-test-azurite","private":true}' >"$dir/package.json"
	log "npm install azurite@$AZURITE_VERSION (into .cache/azurite)"
	(cd "$dir" && npm install --save-exact --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION")
	[ -x "$dir/node_modules/.bin/azurite-blob" ] || die "no $dir/node_modules/.bin/azurite-blob after npm install azurite@$AZURITE_VERSION"
	log "azurite $(azurite_installed_version): installed"
}
