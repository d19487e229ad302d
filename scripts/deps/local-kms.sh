# shellcheck shell=bash
# local-kms (an AWS KMS emulator) for the tests of the awskms:// key
# wrapper (encryption/kms, integration/kms_test.go). Sourced by
# scripts/install-deps.sh, which provides log and die.
#
# Upstream has no semver tags: pin the pseudo-version. Upstream listens on
# every interface (":"+PORT, no address setting), and our servers bind
# 127.0.0.1 only: so it is built from the pinned module source with that one
# line changed to "127.0.0.1:"+PORT. About 20 s cold; a stamp next to the
# binary names the version and the change, and the build is skipped while
# it matches.
LOCAL_KMS_VERSION=v0.0.0-20260228092603-2a5e92d09ab6

install_local_kms() {
	local stamp="$CACHE/bin/local-kms.version" want="$LOCAL_KMS_VERSION loopback-only"
	if [ -x "$CACHE/bin/local-kms" ] && [ -r "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		log "local-kms $LOCAL_KMS_VERSION: present"
		return
	fi
	log "build local-kms $LOCAL_KMS_VERSION (listening on 127.0.0.1 only)"
	local info dir work
	info=$(GOFLAGS= go mod download -json "github.com/nsmithuk/local-kms@$LOCAL_KMS_VERSION") || die "download local-kms $LOCAL_KMS_VERSION"
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
	[ -d "$dir" ] || die "local-kms $LOCAL_KMS_VERSION: no module directory in: $info"
	work=$(mktemp -d)
	cp -r "$dir/." "$work/"
	chmod -R u+w "$work"
	grep -q 'addr := ":"+port' "$work/src/server.go" || die "local-kms $LOCAL_KMS_VERSION: src/server.go no longer has the listen line this script changes"
	sed -i 's|addr := ":"+port|addr := "127.0.0.1:"+port|' "$work/src/server.go"
	mkdir -p "$CACHE/bin"
	(cd "$work" && GOFLAGS= go build -o "$CACHE/bin/local-kms" .) || die "build local-kms"
	rm -rf "$work"
	printf '%s\n' "$want" >"$stamp"
}
