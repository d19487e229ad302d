# shellcheck shell=bash
# fake-gcs-server: an in-memory Google Cloud Storage emulator for the GCS
# provider tests (providers/gcs, integration/testserver/gcs.go). Sourced by
# scripts/install-deps.sh, which provides install_go_tool and log.

FAKE_GCS_SERVER_VERSION=v1.56.1 # pinned in shared ENVIRONMENT.md

# Builds .cache/bin/fake-gcs-server (about a minute); skipped when the
# binary there is already this version.
install_fake_gcs_server() {
	install_go_tool fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_SERVER_VERSION"
}
