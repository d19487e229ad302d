package gcs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// contentType is what every object is stored as.
const contentType = "application/octet-stream"

// cancelTimeout bounds the request that cancels a failed resumable upload.
const cancelTimeout = 5 * time.Second

// Put uploads body: an object below MultipartThreshold in one multipart
// request (its metadata and its bytes), a larger one as a resumable
// upload in requests of ChunkSize. Either way the body is streamed from
// the caller's reader through one pooled 256 KiB buffer, and every upload
// declares the object's CRC32C, which GCS checks before it creates the
// object: the caller's, or, without one, a CRC32C Put computes by reading
// the bytes of the last request twice (the body is an io.ReadSeeker), so
// that the request can declare it before it sends them.
//
// The object appears only when the last request has delivered all of its
// bytes. Put holds back the last bytes it read until it has checked that
// the body ends there, that the CRC32C is right and that ctx is not
// cancelled; on any failure it fails the request's body instead, so the
// request never completes and no object is created. A failed resumable
// upload is cancelled. IfAbsent is GCS's ifGenerationMatch=0, checked
// atomically when the object is created (412 → ErrExist).
//
// A resumable upload sends its chunks one after another: the protocol
// has each chunk continue where the last one ended, so parts of one
// object cannot be sent in parallel (only GCS's XML multipart API, which
// fake-gcs-server lacks, could). Parallelism comes from the callers'
// concurrent Puts.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("put into %s: %w", s, err)
	}
	what := fmt.Sprintf("put %q into %s", key, s)
	if size < 0 || size > maxObjectBytes {
		return fmt.Errorf("%s: size %d out of range (0 to 5 TiB)", what, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	start, err := body.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("%s: find the body's position: %w", what, err)
	}
	var retention *objectRetention
	if !opts.Retention.IsZero() {
		if retention, err = gcsRetention(opts.Retention); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := s.checkLockable(ctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	bufp := s.buffers.Get().(*[]byte)
	defer s.buffers.Put(bufp)
	u := &upload{s: s, what: what, name: s.objectName(key), body: body, start: start, size: size, opts: opts, buf: *bufp, retention: retention}
	if size < s.cfg.MultipartThreshold {
		return u.single(ctx)
	}
	return u.resumable(ctx)
}

// upload is one Put under way.
type upload struct {
	s    *Store
	what string
	name string
	body io.ReadSeeker
	// start is the body's position at the object's first byte.
	start int64
	size  int64
	opts  providers.PutOptions
	buf   []byte
	// retention is opts.Retention as the object resource has it, or nil.
	retention *objectRetention
}

// objectMetadata is the metadata an upload sends before the bytes.
type objectMetadata struct {
	Name        string           `json:"name"`
	ContentType string           `json:"contentType"`
	CRC32C      string           `json:"crc32c,omitempty"`
	Retention   *objectRetention `json:"retention,omitempty"`
}

// single uploads the object in one multipart/related request: a JSON part
// with the metadata, then the bytes.
func (u *upload) single(ctx context.Context) error {
	want := u.opts.CRC32C
	if !u.opts.HasCRC32C {
		var err error
		if want, err = u.readCRC(ctx, 0, u.size, 0); err != nil {
			return err
		}
		if err := u.seek(0); err != nil {
			return err
		}
	}
	meta, err := json.Marshal(objectMetadata{Name: u.name, ContentType: contentType, CRC32C: encodeCRC32C(want), Retention: u.retention})
	if err != nil {
		return fmt.Errorf("%s: %w", u.what, err)
	}
	// A random boundary of 130 bits cannot be expected to occur in the
	// bytes; GCS finds the end of the bytes by the Content-Length anyway.
	boundary := rand.Text()
	head := "--" + boundary + "\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + string(meta) +
		"\r\n--" + boundary + "\r\nContent-Type: " + contentType + "\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"

	q := url.Values{"uploadType": {"multipart"}, "fields": {uploadFields}}
	if u.opts.IfAbsent {
		q.Set("ifGenerationMatch", "0")
	}
	p := u.newPart(ctx, 0, u.size, 0, want)
	header := http.Header{"Content-Type": {"multipart/related; boundary=" + boundary}}
	body := io.MultiReader(strings.NewReader(head), p, strings.NewReader(tail))
	length := int64(len(head)) + u.size + int64(len(tail))
	return u.roundTrip(ctx, http.MethodPost, u.s.uploadURL(q), header, p, body, length, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return u.s.fail(u.what, responseError(resp), providers.ErrNoBucket)
		}
		return u.created(ctx, resp, want)
	})
}

// roundTrip sends an upload request whose body (length bytes) reads from
// p, and hands the answer to handle, which reads and closes its body.
// It returns only once the HTTP transport is done with p: the transport
// may go on reading a request's body after Do returned, where the server
// answered before it had all of it (a 412, say), and p reads the caller's
// body into the upload's buffer, which both go back to their owners when
// Put returns. Cancelling the request makes the transport stop; it then
// closes p.
//
// A failure of p itself comes first (it names the cause better than the
// transport's report of it), then the caller's cancellation, then the
// transport's error or handle's.
func (u *upload) roundTrip(ctx context.Context, method string, target *url.URL, header http.Header, p *part, body io.Reader, length int64, handle func(*http.Response) error) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, target.String(), partBody{body, p})
	if err != nil {
		return fmt.Errorf("%s: %w", u.what, err)
	}
	req.ContentLength = length
	maps.Copy(req.Header, header)
	resp, err := u.s.do(req)
	if err != nil {
		err = u.s.fail(u.what, err, providers.ErrNoBucket)
	} else {
		err = handle(resp)
	}
	cancel()
	<-p.closed
	switch {
	case p.err != nil:
		return p.err
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", u.what, ctx.Err())
	}
	return err
}

// partBody is a request body that reads from a part, or from a reader
// around it, and closes the part.
type partBody struct {
	io.Reader
	p *part
}

func (b partBody) Close() error { return b.p.Close() }

// resumable uploads the object as a resumable upload: a request that
// opens a session with the metadata, then the bytes in chunks of
// ChunkSize, each continuing where GCS says the last one ended.
func (u *upload) resumable(ctx context.Context) (err error) {
	session, err := u.openSession(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// A 412 ended the session; anything else may leave it open.
		if err != nil && !errors.Is(err, providers.ErrExist) {
			u.cancelSession(ctx, session)
		}
	}()

	want, wantKnown := u.opts.CRC32C, u.opts.HasCRC32C
	var off int64
	var crc uint32 // of the bytes before off
	for off < u.size {
		n := min(int64(u.s.cfg.ChunkSize), u.size-off)
		final := off+n == u.size
		if final && !wantKnown {
			if want, err = u.readCRC(ctx, off, n, crc); err != nil {
				return err
			}
			if err := u.seek(off); err != nil {
				return err
			}
			wantKnown = true
		}
		p := u.newPart(ctx, off, n, crc, want)
		header := http.Header{
			"Content-Type":  {contentType},
			"Content-Range": {fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, u.size)},
			// Ask for 200 with a header rather than 308 for "go
			// on", which proxies may take for a redirect.
			"X-Guploader-No-308": {"yes"},
		}
		if final {
			// GCS checks a CRC32C declared with the last chunk
			// against the whole object's.
			header.Set("X-Goog-Hash", "crc32c="+encodeCRC32C(want))
		}
		persisted, done := int64(-1), false
		err := u.roundTrip(ctx, http.MethodPut, session, header, p, p, n, func(resp *http.Response) error {
			switch {
			case resumeIncomplete(resp):
				h := resp.Header.Get("Range")
				discard(resp)
				var ok bool
				if persisted, ok = persistedBytes(h); !ok {
					return fmt.Errorf("%s: the server's answer to chunk %d-%d has a bad Range header %q", u.what, off, off+n-1, oneLine(h, 100))
				}
				return nil
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
				if !final {
					discard(resp)
					return fmt.Errorf("%s: the server finished the upload after chunk %d-%d of %d bytes", u.what, off, off+n-1, u.size)
				}
				done = true
				return u.created(ctx, resp, want)
			default:
				return u.s.fail(u.what, responseError(resp), providers.ErrNoBucket)
			}
		})
		switch {
		case err != nil:
			return err
		case done:
			return nil
		case persisted == off+n && !final:
			off, crc = persisted, p.crc
		case persisted > off && persisted < off+n:
			// GCS kept only part of the chunk: go on from there,
			// with the CRC32C up to there.
			if err := u.seek(off); err != nil {
				return err
			}
			if crc, err = u.readCRC(ctx, off, persisted-off, crc); err != nil {
				return err
			}
			off = persisted
		default:
			return providers.MarkTransient(fmt.Errorf("%s: after chunk %d-%d the server has %d bytes", u.what, off, off+n-1, persisted))
		}
	}
	// Unreachable: resumable uploads are for objects of at least
	// MultipartThreshold > 0 bytes, whose last chunk returns above.
	return fmt.Errorf("%s: resumable upload of an empty object", u.what)
}

// openSession opens a resumable upload and returns the session's URL.
func (u *upload) openSession(ctx context.Context) (*url.URL, error) {
	meta := objectMetadata{Name: u.name, ContentType: contentType, Retention: u.retention}
	if u.opts.HasCRC32C {
		meta.CRC32C = encodeCRC32C(u.opts.CRC32C)
	}
	body, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.what, err)
	}
	q := url.Values{"uploadType": {"resumable"}, "fields": {uploadFields}}
	if u.opts.IfAbsent {
		q.Set("ifGenerationMatch", "0")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.s.uploadURL(q).String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.what, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	req.Header.Set("X-Upload-Content-Type", contentType)
	req.Header.Set("X-Upload-Content-Length", strconv.FormatInt(u.size, 10))
	resp, err := u.s.do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = responseError(resp)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("%s: %w", u.what, cerr)
		}
		return nil, u.s.fail(u.what+": start a resumable upload", err, providers.ErrNoBucket)
	}
	location := resp.Header.Get("Location")
	discard(resp)
	session, err := url.Parse(location)
	if err != nil || (session.Scheme != "http" && session.Scheme != "https") || session.Host == "" {
		return nil, fmt.Errorf("%s: the server opened a resumable upload without a usable session URL", u.what)
	}
	return session, nil
}

// cancelSession cancels a failed resumable upload, so that GCS drops the
// chunks it holds now rather than after a week. It is worth a try only:
// the upload creates no object either way.
func (u *upload) cancelSession(ctx context.Context, session *url.URL) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, session.String(), nil)
	if err != nil {
		return
	}
	if resp, err := u.s.do(req); err == nil {
		discard(resp)
	}
}

// resumeIncomplete reports GCS's answer to a chunk that leaves the upload
// open: 308, or 200 with the status in a header when asked for that.
func resumeIncomplete(resp *http.Response) bool {
	return resp.StatusCode == http.StatusPermanentRedirect || resp.Header.Get("X-Http-Status-Code-Override") == "308"
}

// persistedBytes parses the Range header of a resumable upload's 308
// answer ("bytes=0-262143": bytes 0 to 262143 are kept) into the number of
// bytes GCS keeps; no header means none.
func persistedBytes(h string) (int64, bool) {
	if h == "" {
		return 0, true
	}
	last, ok := strings.CutPrefix(h, "bytes=0-")
	if !ok || last == "" || last[0] < '0' || last[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseInt(last, 10, 64)
	if err != nil || n >= maxObjectBytes {
		return 0, false
	}
	return n + 1, true
}

// created checks GCS's description of the object an upload created (and,
// for a Put that asked for a lock, that the object has it: checkRetained). GCS
// has checked the CRC32C the upload declared; that it reports the size
// and CRC32C sent guards against a server that ignored the declaration.
func (u *upload) created(ctx context.Context, resp *http.Response, want uint32) error {
	var obj objectResource
	if err := decodeJSON(resp, &obj); err != nil {
		return u.s.fail(u.what+": the object was created, but", err, providers.ErrNoBucket)
	}
	if obj.Size != u.size {
		return fmt.Errorf("%s: the server stored %d bytes, %d were sent", u.what, obj.Size, u.size)
	}
	if got, ok := decodeCRC32C(obj.CRC32C); ok && got != want {
		return fmt.Errorf("%s: the server stored CRC32C %08x, %08x was sent: %w", u.what, got, want, providers.ErrChecksum)
	}
	return u.checkRetained(ctx, &obj)
}

// seek moves the body to the object's byte off.
func (u *upload) seek(off int64) error {
	if _, err := u.body.Seek(u.start+off, io.SeekStart); err != nil {
		return fmt.Errorf("%s: seek the body to byte %d: %w", u.what, off, err)
	}
	return nil
}

// readCRC reads n bytes from the body, the object's bytes from off on,
// and returns crc updated with them.
func (u *upload) readCRC(ctx context.Context, off, n int64, crc uint32) (uint32, error) {
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("%s: %w", u.what, err)
		}
		k, err := io.ReadFull(u.body, u.buf[:min(int64(len(u.buf)), n-done)])
		crc = crc32.Update(crc, manifest.Castagnoli, u.buf[:k])
		done += int64(k)
		if err != nil {
			return 0, bodyError(u.what, err, off+done, u.size)
		}
	}
	return crc, nil
}

// bodyError describes a failed read of the body after the object's first
// done bytes.
func bodyError(what string, err error, done, size int64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: body ended after %d of %d bytes: %w", what, done, size, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%s: read body: %w", what, err)
}

// newPart returns the body of a request that sends the object's n bytes
// from off on, with crc the CRC32C of the bytes before off and want the
// object's.
func (u *upload) newPart(ctx context.Context, off, n int64, crc, want uint32) *part {
	return &part{
		ctx: ctx, u: u, off: off, end: off + n, crc: crc, want: want,
		final:  off+n == u.size,
		closed: make(chan struct{}),
	}
}

// part is the body of an upload request: the object's bytes from off to
// end, read from the caller's body into the upload's buffer and handed on
// from there. If the part ends the object, it checks, before it hands on
// the last bytes, that the body ends there too, that the CRC32C is the
// one the request declared and that the context is not cancelled; so a
// failure stops the request short and GCS creates no object.
//
// It holds the request's context, as an http.Request does: a Read has no
// other way to see the caller's cancellation.
type part struct {
	ctx      context.Context
	u        *upload
	off, end int64
	crc      uint32 // of the object's bytes before off
	want     uint32
	final    bool
	verified bool
	pending  []byte
	// err is the first failure, returned from then on and preferred by
	// roundTrip to the transport's report of it.
	err error
	// closed is closed when the transport is done with the part.
	closed    chan struct{}
	closeOnce sync.Once
}

// Close tells roundTrip that the transport is done with the part.
func (p *part) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return nil
}

func (p *part) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if len(p.pending) == 0 {
		if p.off < p.end {
			if err := p.fill(); err != nil {
				p.err = err
				return 0, err
			}
		}
		if p.off == p.end && p.final && !p.verified {
			p.verified = true
			if err := p.verify(); err != nil {
				p.err = err
				return 0, err
			}
		}
		if len(p.pending) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

// fill reads the next block of the part into the buffer.
func (p *part) fill() error {
	u := p.u
	if err := p.ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", u.what, err)
	}
	n, err := io.ReadFull(u.body, u.buf[:min(int64(len(u.buf)), p.end-p.off)])
	p.crc = crc32.Update(p.crc, manifest.Castagnoli, u.buf[:n])
	p.off += int64(n)
	if err != nil {
		return bodyError(u.what, err, p.off, u.size)
	}
	p.pending = u.buf[:n]
	return nil
}

// verify checks the end of the object before its last bytes go out.
func (p *part) verify() error {
	u := p.u
	var extra [1]byte
	switch _, err := io.ReadFull(u.body, extra[:]); {
	case err == nil:
		return fmt.Errorf("%s: body is longer than the given size %d", u.what, u.size)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("%s: read body: %w", u.what, err)
	}
	if p.crc != p.want && !u.s.skipLocalCRC32C {
		return fmt.Errorf("%s: body has CRC32C %08x, expected %08x: %w", u.what, p.crc, p.want, providers.ErrChecksum)
	}
	if err := p.ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", u.what, err)
	}
	return nil
}
