package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pgstow/pgstow/providers"
)

// classify wraps an SDK error with the providers class it belongs to, so
// that callers test with errors.Is and the retry layer knows what to
// retry. The SDK error stays reachable (and readable) inside.
func classify(err error) error {
	if err == nil {
		return nil
	}
	err = reword(err)
	if errors.Is(err, context.Canceled) {
		// The caller gave up; nothing to retry.
		return err
	}
	code, status := errorCode(err), httpStatus(err)
	switch code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%w: %w", providers.ErrNotExist, err)
	case "NoSuchBucket":
		return fmt.Errorf("%w: %w", providers.ErrNoBucket, err)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
		"InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
		"InvalidSecurity", "RequestTimeTooSkewed", "AuthorizationHeaderMalformed",
		"AuthorizationQueryParametersError", "MissingSecurityHeader",
		"XAdminUserNotFound": // versitygw's 404 for an unknown access key
		return fmt.Errorf("%w: %w", providers.ErrAccessDenied, err)
	case "BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch":
		return fmt.Errorf("%w: %w", providers.ErrChecksum, err)
	case "PreconditionFailed":
		// Only conditional requests (If-None-Match: *) get 412.
		return fmt.Errorf("%w: %w", providers.ErrExist, err)
	case "ConditionalRequestConflict":
		// 409: another conditional write to the key was in flight.
		// It may yet fail, so this is not ErrExist (a writer of
		// content-addressed chunks would take that as stored): S3
		// asks for a retry, which then sees 412 or succeeds.
		return providers.MarkTransient(err)
	case "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled",
		"TooManyRequestsException", "RequestTimeout", "InternalError",
		"ServiceUnavailable", "OperationAborted", "XMinioServerNotInitialized":
		return providers.MarkTransient(err)
	}
	switch {
	case status == http.StatusNotFound:
		// HEAD answers carry no error code; a 404 there is a missing
		// object (or bucket, which Open has ruled out).
		return fmt.Errorf("%w: %w", providers.ErrNotExist, err)
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", providers.ErrAccessDenied, err)
	case status == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", providers.ErrExist, err)
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		return providers.MarkTransient(err)
	case status != 0:
		return err
	}
	if isTransportError(err) {
		return providers.MarkTransient(err)
	}
	return err
}

// reword gives an error that carries the store's answer a message of our
// own. The SDK's says "https response error" whatever the scheme, which
// misleads on a plain-HTTP endpoint (MinIO, versitygw) where TLS is the
// first suspect: ours says "HTTP status 403 (request id …)". The SDK's
// error stays inside for errors.As and errors.Is; errors without an HTTP
// answer (connection failures) are left as they are.
func reword(err error) error {
	var resp *smithyhttp.ResponseError
	if err == nil || !errors.As(err, &resp) || resp.Response == nil {
		return err
	}
	if _, done := err.(storeAnswer); done {
		return err
	}
	return storeAnswer{err: err, resp: resp}
}

// storeAnswer is an SDK error that holds the store's HTTP answer; see
// reword.
type storeAnswer struct {
	err  error
	resp *smithyhttp.ResponseError
}

func (a storeAnswer) Unwrap() error { return a.err }

func (a storeAnswer) Error() string {
	var b strings.Builder
	var op *smithy.OperationError
	if errors.As(a.err, &op) {
		fmt.Fprintf(&b, "%s %s: ", op.ServiceID, op.OperationName)
	}
	fmt.Fprintf(&b, "HTTP status %d", a.resp.HTTPStatusCode())
	var ids []string
	var rid interface{ ServiceRequestID() string }
	if errors.As(a.err, &rid) && rid.ServiceRequestID() != "" {
		ids = append(ids, "request id "+rid.ServiceRequestID())
	}
	var hid interface{ ServiceHostID() string }
	if errors.As(a.err, &hid) && hid.ServiceHostID() != "" {
		ids = append(ids, "host id "+hid.ServiceHostID())
	}
	if len(ids) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(ids, ", "))
	}
	if a.resp.Err != nil {
		fmt.Fprintf(&b, ": %v", a.resp.Err)
	}
	return b.String()
}

// classed is err, also of class: it reads as err alone, for messages
// that already say the class in words.
type classed struct{ err, class error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.err, c.class} }

// classifyRead classifies an error reading a response body.
func classifyRead(err error) error {
	if strings.Contains(err.Error(), "checksum did not match") {
		// The SDK's validation of the response's x-amz-checksum.
		return fmt.Errorf("%w: %w", providers.ErrChecksum, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if isTransportError(err) {
		return providers.MarkTransient(err)
	}
	return err
}

// isTransportError reports failures of the connection rather than answers
// of the store: timeouts, refused and reset connections, bodies cut short.
// A host name that does not resolve is not one: retrying will not help.
func isTransportError(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var sendErr *smithyhttp.RequestSendError
	return errors.As(err, &sendErr)
}

// errorCode returns the S3 error code of an API error, or "".
func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

func isAPIError(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) || httpStatus(err) != 0
}

// httpStatus returns the HTTP status of the store's answer, or 0 if there
// was none.
func httpStatus(err error) int {
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		return respErr.HTTPStatusCode()
	}
	return 0
}

// isInvalidRange reports S3's 416 answer to a range past the end.
func isInvalidRange(err error) bool {
	return errorCode(err) == "InvalidRange" || httpStatus(err) == http.StatusRequestedRangeNotSatisfiable
}

// isRedirect reports S3's answer to a request sent to the wrong region.
func isRedirect(err error) bool {
	code := errorCode(err)
	status := httpStatus(err)
	return code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" && bucketRegion(err) != "" ||
		status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect
}

// bucketRegion returns the region S3 says the bucket is in, or "".
func bucketRegion(err error) string {
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) && respErr.Response != nil {
		return respErr.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}
