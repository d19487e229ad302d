package gcs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"golang.org/x/oauth2"
	"google.golang.org/api/googleapi"

	"github.com/pgstow/pgstow/providers"
)

// fail wraps a failed call's error with what was being done and with its
// class (see classify). A missing object is reported without the SDK's
// wording, as the other stores do.
func (s *Store) fail(what string, err error, notFound error) error {
	class, transient := classify(err, notFound)
	var out error
	switch {
	case class == providers.ErrNotExist:
		out = fmt.Errorf("%s: %w", what, class)
	case class != nil:
		out = fmt.Errorf("%s: %w: %w", what, class, err)
	default:
		out = fmt.Errorf("%s: %w", what, err)
	}
	if transient {
		out = providers.MarkTransient(out)
	}
	return out
}

// classed returns an error that reads as the formatted message and cause,
// and that errors.Is and errors.As find both class and cause in: a class
// and cause that say the same ("bucket does not exist: storage: bucket
// doesn't exist") need not both be in the message.
func classed(class, cause error, format string, args ...any) error {
	return &classedError{msg: fmt.Sprintf(format, args...), class: class, cause: cause}
}

type classedError struct {
	msg          string
	class, cause error
}

func (e *classedError) Error() string   { return e.msg + ": " + e.cause.Error() }
func (e *classedError) Unwrap() []error { return []error{e.class, e.cause} }

// classify returns the providers error class of an SDK error (or nil) and
// whether it is worth retrying. notFound is what a 404 means for the call:
// ErrNotExist for calls on an object, ErrNoBucket for uploads and
// listings, which need no object.
func classify(err error, notFound error) (class error, transient bool) {
	// The caller's own cancellation or deadline is theirs to judge; it
	// must not read as a timeout of the store.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, false
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return providers.ErrNoBucket, false
	}

	var apiErr *googleapi.Error
	if errors.As(err, &apiErr) {
		return classifyStatus(apiErr.Code, apiErr.Message+" "+apiErr.Body, notFound)
	}
	if errors.Is(err, storage.ErrObjectNotExist) {
		return notFound, false
	}
	if isChecksumError(err) {
		// On a download, a corrupted transfer is worth another try.
		return providers.ErrChecksum, true
	}

	// Fetching an access token failed.
	var authErr *auth.Error
	if errors.As(err, &authErr) && authErr.Response != nil {
		return classifyTokenStatus(authErr.Response.StatusCode)
	}
	var oauthErr *oauth2.RetrieveError
	if errors.As(err, &oauthErr) && oauthErr.Response != nil {
		return classifyTokenStatus(oauthErr.Response.StatusCode)
	}

	// A certificate that does not verify stays so: not transient.
	var certErr *tls.CertificateVerificationError
	var authorityErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &authorityErr) || errors.As(err, &hostErr) {
		return nil, false
	}
	var netErr net.Error
	if errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ETIMEDOUT) {
		return nil, true
	}
	return nil, false
}

// classifyStatus classifies an HTTP status with the answer's message.
func classifyStatus(code int, message string, notFound error) (class error, transient bool) {
	switch {
	case code == http.StatusNotFound:
		// GCS says which of the two is missing; the XML API's
		// NoSuchBucket code and the JSON API's message both name it.
		if strings.Contains(message, "NoSuchBucket") || strings.Contains(strings.ToLower(message), "bucket does not exist") {
			return providers.ErrNoBucket, false
		}
		return notFound, false
	case code == http.StatusPreconditionFailed:
		// The only precondition the store sends is "does not exist".
		return providers.ErrExist, false
	case code == http.StatusBadRequest && isChecksumMessage(message):
		return providers.ErrChecksum, false
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return providers.ErrAccessDenied, false
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return nil, true
	case code == http.StatusConflict:
		// A concurrent change of the same object: another attempt
		// settles it (with 412 if the racing write created the object
		// an IfAbsent Put needs absent). Not ErrExist, which writers
		// of immutable objects take for success.
		return nil, true
	}
	return nil, false
}

// classifyTokenStatus classifies the token endpoint's answer: it refuses
// bad credentials with 400 (invalid_grant, e.g. a revoked key) or 401
// (invalid_client), which are denied access; throttling and 5xx are
// transient.
func classifyTokenStatus(code int) (class error, transient bool) {
	switch {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return nil, true
	case code >= 400:
		return providers.ErrAccessDenied, false
	}
	return nil, false
}

// isChecksumMessage recognises GCS's refusal of a body whose checksum does
// not match the declared one ("Provided CRC32C ... doesn't match
// calculated CRC32C ...").
func isChecksumMessage(message string) bool {
	m := strings.ToLower(message)
	return strings.Contains(m, "crc32c") || strings.Contains(m, "md5") || strings.Contains(m, "checksum")
}

// isChecksumError recognises the SDK's own checksum failures: the CRC32C of
// a download ("bad CRC on read") or of a streamed upload that the server
// reports differently ("object checksum mismatch").
func isChecksumError(err error) bool {
	m := err.Error()
	return strings.Contains(m, "storage: bad CRC on read") || strings.Contains(m, "checksum mismatch")
}

// isRangeNotSatisfiable reports GCS's answer to a range that starts at or
// past the end of the object.
func isRangeNotSatisfiable(err error) bool {
	var apiErr *googleapi.Error
	return errors.As(err, &apiErr) && apiErr.Code == http.StatusRequestedRangeNotSatisfiable
}
