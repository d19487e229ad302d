package gcs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2"

	"github.com/pgstow/pgstow/providers"
)

// fail wraps a failed call's error with what was being done and with its
// class (see classify). A missing object is reported without the server's
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
// and cause that say the same ("bucket does not exist: 404 Not Found: The
// specified bucket does not exist.") need not both be in the message.
func classed(class, cause error, format string, args ...any) error {
	return &classedError{msg: fmt.Sprintf(format, args...), class: class, cause: cause}
}

type classedError struct {
	msg          string
	class, cause error
}

func (e *classedError) Error() string   { return e.msg + ": " + e.cause.Error() }
func (e *classedError) Unwrap() []error { return []error{e.class, e.cause} }

// apiError is a JSON API answer with a status other than the one the call
// expects.
type apiError struct {
	code int
	// message is the error's message from a JSON error body, else the
	// body's text; one line, shortened.
	message string
	// body is the start of the body as received, for the classification:
	// XML answers name the problem only in their Code element.
	body string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%d %s", e.code, http.StatusText(e.code))
	if e.message != "" {
		s += ": " + e.message
	}
	return s
}

const (
	// maxErrorBodyBytes is how much of an error answer is read: JSON
	// errors are a few hundred bytes, and an HTML page from a proxy need
	// not be read whole.
	maxErrorBodyBytes = 16 << 10
	// maxErrorMessageBytes shortens the message an error shows.
	maxErrorMessageBytes = 512
)

// responseError reads and closes the body of an answer with an unexpected
// status and returns the error it describes.
func responseError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	// Drain a little more, so that the connection can be reused; a long
	// body is not worth waiting for.
	_, _ = io.CopyN(io.Discard, resp.Body, maxErrorBodyBytes)
	resp.Body.Close()
	return parseError(resp.StatusCode, body)
}

// parseError turns the status and body of an error answer into an
// apiError. GCS's JSON API answers {"error": {"code": 404, "message":
// "No such object: b/o", "errors": [...]}}; proxies, the XML API and
// emulators may answer anything else, whose text then is the message.
func parseError(code int, body []byte) *apiError {
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Errors  []struct {
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"error"`
	}
	message := ""
	if json.Unmarshal(body, &doc) == nil {
		message = doc.Error.Message
		if message == "" && len(doc.Error.Errors) > 0 {
			message = doc.Error.Errors[0].Message
		}
	}
	if message == "" {
		message = string(body)
	}
	return &apiError{code: code, message: oneLine(message, maxErrorMessageBytes), body: string(body)}
}

// oneLine folds s onto one line of printable text of at most max bytes,
// so that a server's answer cannot break up a log line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && s[cut]&0xc0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}

// classify returns the providers error class of a failed request (or nil)
// and whether it is worth retrying. notFound is what a 404 means for the
// call: ErrNotExist for calls on an object, ErrNoBucket for uploads and
// listings, which need no object.
func classify(err error, notFound error) (class error, transient bool) {
	// The caller's own cancellation or deadline is theirs to judge; it
	// must not read as a timeout of the store.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, false
	}
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		return classifyStatus(apiErr.code, apiErr.message+" "+apiErr.body, notFound)
	}
	if errors.Is(err, providers.ErrChecksum) {
		// Only downloads get here (Put returns its own checksum errors
		// directly): a corrupted transfer is worth another try.
		return providers.ErrChecksum, true
	}

	// Fetching an access token failed: from a token endpoint, or from the
	// metadata server on Google Cloud.
	var oauthErr *oauth2.RetrieveError
	if errors.As(err, &oauthErr) && oauthErr.Response != nil {
		return classifyTokenStatus(oauthErr.Response.StatusCode)
	}
	var metadataErr *metadata.Error
	if errors.As(err, &metadataErr) {
		return classifyTokenStatus(metadataErr.Code)
	}

	// A certificate that does not verify stays so: not transient.
	var certErr *tls.CertificateVerificationError
	var authorityErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &authorityErr) || errors.As(err, &hostErr) {
		return nil, false
	}
	// Any other failure of the transport (url.Error is a net.Error too),
	// or a body cut short.
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
