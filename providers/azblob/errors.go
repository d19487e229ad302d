package azblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/pgstow/pgstow/providers"
)

// classified is a failure of the service in one line ("404 BlobNotFound"
// and what it means), wrapping the class sentinel of providers, if any,
// and the SDK's error. The SDK's own message spans a dozen lines with the
// response body; the callers' messages name the operation, key and store.
type classified struct {
	msg  string
	errs []error
}

func (e *classified) Error() string   { return e.msg }
func (e *classified) Unwrap() []error { return e.errs }

// errExists is what an "only if absent" write found.
func errExists(what string) error {
	return &classified{msg: "object already exists (" + what + ")", errs: []error{providers.ErrExist}}
}

// classify turns an error of the SDK or of the network into one whose
// class providers' callers can test with errors.Is: ErrNotExist,
// ErrExist, ErrChecksum, ErrAccessDenied, ErrNoBucket, or ErrTransient
// for what is worth retrying. ctx is the caller's: once it is done, the
// failure is the cancellation, which is not transient.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return classifyResponse(re)
	}
	if ctx.Err() != nil {
		return err
	}
	err = redactURL(err)
	if isTransient(err) {
		return providers.MarkTransient(err)
	}
	// The SDK marks the failures of getting a token for an Azure
	// identity (no identity available, or refused) as not to be retried;
	// nothing else it returns is so marked.
	var tokenErr interface {
		error
		NonRetriable()
	}
	if errors.As(err, &tokenErr) {
		return &classified{msg: "Azure identity: cannot get a token: " + firstLine(err.Error()), errs: []error{providers.ErrAccessDenied, err}}
	}
	return err
}

// classifyResponse maps the service's error codes
// (https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes)
// and, where a response has none, its status.
func classifyResponse(re *azcore.ResponseError) error {
	code := re.ErrorCode
	if code == "" {
		code = http.StatusText(re.StatusCode)
	}
	what := fmt.Sprintf("%d %s", re.StatusCode, code)
	class := func(msg string, sentinel error) error {
		return &classified{msg: msg + " (" + what + ")", errs: []error{sentinel, re}}
	}
	switch bloberror.Code(re.ErrorCode) {
	case bloberror.ContainerNotFound:
		return class("container does not exist", providers.ErrNoBucket)
	case bloberror.BlobNotFound:
		return class("object does not exist", providers.ErrNotExist)
	case bloberror.BlobAlreadyExists, bloberror.ConditionNotMet:
		// Only IfAbsent writes carry a condition.
		return class("object already exists", providers.ErrExist)
	case bloberror.MD5Mismatch, bloberror.CRC64Mismatch:
		return class("the store received other bytes than were sent", providers.ErrChecksum)
	case bloberror.AuthenticationFailed, bloberror.AuthorizationFailure, bloberror.AuthorizationPermissionMismatch,
		bloberror.AuthorizationProtocolMismatch, bloberror.AuthorizationResourceTypeMismatch,
		bloberror.AuthorizationServiceMismatch, bloberror.AuthorizationSourceIPMismatch,
		bloberror.InsufficientAccountPermissions, bloberror.AccountIsDisabled, bloberror.NoAuthenticationInformation:
		return class("access denied: "+credentialHint, providers.ErrAccessDenied)
	}
	switch s := re.StatusCode; {
	case s == http.StatusBadRequest && re.RawResponse != nil && strings.Contains(strings.ToLower(re.RawResponse.Status), "md5"):
		// Azurite refuses a Put Blob whose body does not match its
		// Content-MD5 with 400 InvalidOperation "Provided contentMD5
		// doesn't match." rather than Md5Mismatch.
		return class("the store received other bytes than were sent", providers.ErrChecksum)
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return class("access denied: "+credentialHint, providers.ErrAccessDenied)
	case s == http.StatusNotFound:
		return class("object does not exist", providers.ErrNotExist)
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		// ServerBusy (503) is Azure's throttling; InternalError and
		// OperationTimedOut (500) are worth another try too.
		return providers.MarkTransient(&classified{msg: "store answered " + what, errs: []error{re}})
	}
	return &classified{msg: "store answered " + what, errs: []error{re}}
}

// isTransient reports network failures worth retrying: timeouts, refused
// and reset connections, a connection closed mid-answer. A host name that
// does not resolve (a mistyped account) is not.
func isTransient(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return !dnsErr.IsNotFound
	}
	for _, target := range []error{io.ErrUnexpectedEOF, io.EOF, syscall.ECONNRESET, syscall.ECONNREFUSED,
		syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, target) {
			return true
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr)
}

// redactURL drops the query of the URL net/http quotes in its errors: with
// a SAS token it holds the signature.
func redactURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u := ue.URL
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
}

// isNetworkFailure reports whether err means no answer came from the
// service at all, as opposed to an answer refusing the request.
func isNetworkFailure(err error) bool {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return false
	}
	var ue *url.Error
	var opErr *net.OpError
	return errors.As(err, &ue) || errors.As(err, &opErr) || errors.Is(err, providers.ErrTransient)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
