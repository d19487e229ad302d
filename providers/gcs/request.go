package gcs

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// bucketURL is the JSON API's URL of the objects in the bucket, for
// listings, with the query q.
func (s *Store) bucketURL(q url.Values) *url.URL {
	return join(s.api, q, "b", s.cfg.Bucket, "o")
}

// objectURL is the JSON API's URL of an object, with the query q.
func (s *Store) objectURL(name string, q url.Values) *url.URL {
	return join(s.api, q, "b", s.cfg.Bucket, "o", name)
}

// uploadURL is the URL that uploads create objects in the bucket at.
func (s *Store) uploadURL(q url.Values) *url.URL {
	return join(s.upload, q, "b", s.cfg.Bucket, "o")
}

// join appends path segments to root, each escaped whole: an object name's
// slashes are part of the segment, so "a/b" is "a%2Fb", as the JSON API
// wants.
func join(root *url.URL, q url.Values, segments ...string) *url.URL {
	u := *root
	var raw strings.Builder
	raw.WriteString(root.EscapedPath())
	for i, seg := range segments {
		if i > 0 {
			u.Path += "/"
			raw.WriteByte('/')
		}
		u.Path += seg
		raw.WriteString(escapeSegment(seg))
	}
	u.RawPath = raw.String()
	u.RawQuery = q.Encode()
	return &u
}

// escapeSegment percent-encodes every byte of s but the unreserved ones
// of RFC 3986. GCS reads "+" in a path as a plus and url.PathEscape keeps
// several such characters as they are; escaping them too leaves no doubt.
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// send makes a request with a body that needs no care (nil or small and
// in memory) and returns the answer if its status is one of want, else
// the error it carries.
func (s *Store) send(ctx context.Context, method string, u *url.URL, body io.Reader, want ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	}
	resp, err := s.do(req)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(want, resp.StatusCode) {
		return nil, responseError(resp)
	}
	return resp, nil
}

// do sends a request, with an access token if the store has credentials
// and the request goes to the API's host (an upload session's URL comes
// from the server, and a token is only for Google). A transport error
// comes back as a url.Error, still a net.Error for classify, but with the
// URL's query left out: an upload session's ID in it is as good as a
// credential for that upload.
func (s *Store) do(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", userAgent)
	if s.tokens != nil && req.URL.Host == s.api.Host {
		tok, err := s.tokens.Token()
		if err != nil {
			// As the transport would have: a caller may wait for it.
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, &tokenError{err}
		}
		tok.SetAuthHeader(req)
		if s.quotaProject != "" {
			req.Header.Set("X-Goog-User-Project", s.quotaProject)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			u := *req.URL
			u.RawQuery = ""
			return nil, &url.Error{Op: urlErr.Op, URL: u.Redacted(), Err: urlErr.Err}
		}
		return nil, err
	}
	return resp, nil
}

// tokenError is a failure to get an access token. Its message is on one
// line: oauth2's puts the token endpoint's answer on a second one.
type tokenError struct{ err error }

func (e *tokenError) Error() string {
	return "get an access token: " + oneLine(e.err.Error(), maxErrorMessageBytes)
}

func (e *tokenError) Unwrap() error { return e.err }

// maxJSONBytes bounds a JSON answer: a page of a listing is the largest
// the store asks for, about 200 KiB for 1,000 long names.
const maxJSONBytes = 16 << 20

// decodeJSON decodes the answer's JSON body into v and closes it.
func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBytes)).Decode(v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read the answer: %w", err) // cut short: transient
		}
		return fmt.Errorf("decode the answer: %w", err)
	}
	return nil
}

// discard reads a little of an answer's body and closes it, so that its
// connection can be reused.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// encodeCRC32C is GCS's form of a CRC32C: the four bytes big-endian, in
// base64.
func encodeCRC32C(crc uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc))
}

// decodeCRC32C parses what encodeCRC32C makes, and only that, so that one
// CRC32C has one form. Strict base64 alone is not enough: the decoder
// skips CR and LF anywhere in its input.
func decodeCRC32C(s string) (uint32, bool) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 4 {
		return 0, false
	}
	crc := binary.BigEndian.Uint32(b)
	if encodeCRC32C(crc) != s {
		return 0, false
	}
	return crc, true
}
