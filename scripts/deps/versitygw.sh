# shellcheck shell=bash
# versitygw (S3 gateway, posix backend; stricter and closer to AWS than MinIO)
# for the S3 provider tests. Sourced by scripts/install-deps.sh, which provides
# install_go_tool. About 80 s to build cold; cached in .cache/bin.
VERSITYGW_VERSION=v1.8.0

install_versitygw() {
	install_go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
}
