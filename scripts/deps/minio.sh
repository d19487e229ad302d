# shellcheck shell=bash
# MinIO (S3-compatible server) for the S3 provider tests. Sourced by
# scripts/install-deps.sh, which provides install_go_tool.
#
# The community edition is archived upstream and has no semver tags: pin the
# pseudo-version. A cold build takes 2.5–4.5 minutes; the binary is cached in
# .cache/bin and the build skipped while it is present at this version.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

install_minio() {
	install_go_tool minio github.com/minio/minio "$MINIO_VERSION"
}
