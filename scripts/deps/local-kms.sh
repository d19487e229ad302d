# shellcheck shell=bash
# local-kms (an AWS KMS emulator) for the tests of the awskms:// key
# wrapper (encryption/kms, integration/kms_test.go). Sourced by
# scripts/install-deps.sh, which provides install_go_tool.
#
# Upstream has no semver tags: pin the pseudo-version. About 20 s to build.
LOCAL_KMS_VERSION=v0.0.0-20260228092603-2a5e92d09ab6

install_local_kms() {
	install_go_tool local-kms github.com/nsmithuk/local-kms "$LOCAL_KMS_VERSION"
}
