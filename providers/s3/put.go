package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// readBlockBytes is how much is read between context checks when a part
// is read into a buffer or checksummed, so a cancelled Put stops promptly.
const readBlockBytes = 1 << 20

// crcHeader formats a CRC32C as S3's x-amz-checksum-crc32c: the base64 of
// its four big-endian bytes.
func crcHeader(crc uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc)
	return base64.StdEncoding.EncodeToString(b[:])
}

// Put stores size bytes of body under key: below the multipart threshold
// in one PutObject, above it as a multipart upload. Either way the store
// checks a CRC32C of what it received, the byte count is checked before
// the object is committed, and a failed or cancelled Put leaves neither
// an object nor an unfinished upload behind.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	name, err := providers.CheckPut(ctx, s, key, size, s.objectName)
	if err != nil {
		return err
	}
	start, err := body.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("put %q into %s: find the body's position: %w", key, s, err)
	}
	if size < s.threshold {
		return s.putSingle(ctx, key, name, body, start, size, opts)
	}
	return s.putMultipart(ctx, key, name, body, start, size, opts)
}

// putSingle stores the object with one PutObject. The body is streamed
// through an exactBody, which fails the request before its last byte
// leaves if the body is shorter or longer than size or its CRC32C is not
// the promised one, so the store never sees a complete, wrong body.
func (s *Store) putSingle(ctx context.Context, key, name string, body io.ReadSeeker, start, size int64, opts providers.PutOptions) error {
	what := fmt.Sprintf("put %q into %s", key, s)
	eb := &exactBody{ctx: ctx, r: body, start: start, size: size, wantCRC: opts.CRC32C, checkCRC: opts.HasCRC32C}
	defer eb.finish()
	if size == 0 {
		// No request body is read for an empty object: check now
		// that the body is empty too.
		if _, err := eb.Read(nil); err != io.EOF {
			return fmt.Errorf("%s: %w", what, err)
		}
		if _, err := eb.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(name),
		Body:          eb,
		ContentLength: aws.Int64(size),
	}
	switch {
	case opts.HasCRC32C:
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
		in.ChecksumCRC32C = aws.String(crcHeader(opts.CRC32C))
	case !s.whenRequired:
		// The SDK computes the CRC32C (a header over plain HTTP, a
		// trailer over HTTPS).
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
	}
	if opts.IfAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	var err error
	if in.ObjectLockMode, in.ObjectLockRetainUntilDate, err = lockFields(opts.Retention); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !opts.Retention.IsZero() && in.ChecksumAlgorithm == "" {
		// A locked write must carry a checksum of its body (S3 asks
		// for Content-MD5 or an x-amz-checksum).
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
	}
	var sign []func(*s3.Options)
	if opts.HasCRC32C {
		sign = append(sign, unsignedOnLoopback)
	}
	_, err = s.client.PutObject(ctx, in, sign...)
	if err == nil {
		return nil
	}
	if berr := eb.failure(); berr != nil {
		return fmt.Errorf("%s: %w", what, berr)
	}
	cerr := lockRefusal(classify(err), opts.Retention)
	if opts.IfAbsent && !isAPIError(err) && errors.Is(cerr, providers.ErrTransient) {
		// versitygw refuses a conditional write to an existing key
		// (412) before reading the body and closes the connection;
		// the client, still sending, gets a reset that can destroy
		// the answer. So look: an existing object means the key was
		// taken, unless it has exactly this body, when it may be this
		// very request's (whose answer was lost). Not wrapped: the
		// lost answer must not read as transient.
		if head, herr := s.head(ctx, name); herr == nil {
			if opts.HasCRC32C && aws.ToInt64(head.ContentLength) == size && aws.ToString(head.ChecksumCRC32C) == crcHeader(opts.CRC32C) {
				return nil
			}
			return fmt.Errorf("%s: %w (the store broke the connection, as some do when refusing a conditional write: %v)", what, providers.ErrExist, err)
		}
	}
	return fmt.Errorf("%s: %w", what, cerr)
}

// head returns the object's metadata, with its checksum if the store
// keeps one.
func (s *Store) head(ctx context.Context, name string) (*s3.HeadObjectOutput, error) {
	return s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       aws.String(s.bucket),
		Key:          aws.String(name),
		ChecksumMode: types.ChecksumModeEnabled,
	})
}

// multipartUpload is one multipart Put in progress.
type multipartUpload struct {
	s        *Store
	key      string // for messages
	name     string
	uploadID string
	what     string

	// Per part, indexed by part number - 1, each written only by the
	// part's own goroutine: what CompleteMultipartUpload needs, the
	// CRC32C and the bytes the store acknowledged.
	parts []types.CompletedPart
	crcs  []uint32
	sent  []int64
}

// putMultipart stores the object as a multipart upload: parts of
// partSizeFor bytes, at most maxConcurrentParts in flight, each with its
// own CRC32C that the store checks; then the byte count and the whole
// object's CRC32C are checked before CompleteMultipartUpload, which
// carries If-None-Match for IfAbsent. Any failure aborts the upload.
func (s *Store) putMultipart(ctx context.Context, key, name string, body io.ReadSeeker, start, size int64, opts providers.PutOptions) (err error) {
	what := fmt.Sprintf("put %q into %s", key, s)
	partSize, err := partSizeFor(size, s.partSize, s.maxParts)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	nParts := int((size + partSize - 1) / partSize)
	ra, random := body.(io.ReaderAt)
	if random {
		// Check the size before uploading anything: the last byte must
		// be there and nothing after it.
		if err := checkReaderAtSize(ra, start, size); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}

	cin := &s3.CreateMultipartUploadInput{
		Bucket:            aws.String(s.bucket),
		Key:               aws.String(name),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
	}
	if cin.ObjectLockMode, cin.ObjectLockRetainUntilDate, err = lockFields(opts.Retention); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	created, err := s.client.CreateMultipartUpload(ctx, cin)
	if err != nil {
		return fmt.Errorf("%s: create multipart upload: %w", what, lockRefusal(classify(err), opts.Retention))
	}
	up := &multipartUpload{s: s, key: key, name: name, uploadID: aws.ToString(created.UploadId), what: what}
	completed := false
	defer func() {
		if !completed {
			if aerr := up.abort(ctx); aerr != nil {
				err = fmt.Errorf("%w (and %w)", err, aerr)
			}
		}
	}()

	up.parts = make([]types.CompletedPart, nParts)
	up.crcs = make([]uint32, nParts)
	up.sent = make([]int64, nParts)
	if random {
		err = up.uploadReaderAt(ctx, ra, start, size, partSize)
	} else {
		err = up.uploadSequential(ctx, body, size, partSize)
	}
	if err != nil {
		return err
	}
	// Every part must have been stored, and the bytes sent add up to
	// size.
	var uploaded int64
	for i, p := range up.parts {
		if aws.ToInt32(p.PartNumber) != int32(i+1) {
			return fmt.Errorf("%s: part %d of %d was not uploaded", what, i+1, nParts)
		}
		uploaded += up.sent[i]
	}
	if uploaded != size {
		return fmt.Errorf("%s: uploaded %d bytes, expected %d", what, uploaded, size)
	}
	if opts.HasCRC32C {
		whole := up.crcs[0]
		for i := 1; i < nParts; i++ {
			whole = crc32cCombine(whole, up.crcs[i], up.sent[i])
		}
		if whole != opts.CRC32C {
			return fmt.Errorf("%s: body has CRC32C %08x, expected %08x: %w", what, whole, opts.CRC32C, providers.ErrChecksum)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(name),
		UploadId:        aws.String(up.uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: up.parts},
	}
	if opts.IfAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, in); err != nil {
		return fmt.Errorf("%s: complete multipart upload: %w", what, classify(err))
	}
	completed = true
	return nil
}

// checkReaderAtSize checks that the body has exactly size bytes from
// start.
func checkReaderAtSize(ra io.ReaderAt, start, size int64) error {
	var b [1]byte
	if size > 0 {
		if n, err := ra.ReadAt(b[:], start+size-1); n != 1 {
			return fmt.Errorf("body is shorter than the given size %d: %w", size, errors.Join(io.ErrUnexpectedEOF, err))
		}
	}
	n, err := ra.ReadAt(b[:], start+size)
	if n > 0 {
		return fmt.Errorf("body is longer than the given size %d", size)
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

// uploadReaderAt uploads the parts straight from the body's ReaderAt, up
// to maxConcurrentParts at once, each read twice (its CRC32C first, then
// the upload) but never copied.
func (up *multipartUpload) uploadReaderAt(ctx context.Context, ra io.ReaderAt, start, size, partSize int64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxConcurrentParts)
	for i := range up.parts {
		if gctx.Err() != nil {
			break
		}
		off := int64(i) * partSize
		n := min(partSize, size-off)
		g.Go(func() error {
			section := io.NewSectionReader(ra, start+off, n)
			crc, err := readCRC(gctx, section, n)
			if err != nil {
				return fmt.Errorf("%s: part %d: %w", up.what, i+1, err)
			}
			up.crcs[i] = crc
			if _, err := section.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("%s: part %d: %w", up.what, i+1, err)
			}
			return up.uploadPart(gctx, i+1, section, n, crc)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", up.what, err)
	}
	return nil
}

// crcBuffers holds *[]byte of crcBufferBytes for readCRC.
var crcBuffers = sync.Pool{New: func() any {
	b := make([]byte, crcBufferBytes)
	return &b
}}

const crcBufferBytes = 256 << 10

// readCRC reads exactly n bytes of r and returns their CRC32C.
func readCRC(ctx context.Context, r io.Reader, n int64) (uint32, error) {
	bufp := crcBuffers.Get().(*[]byte)
	defer crcBuffers.Put(bufp)
	buf := *bufp
	var crc uint32
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-done)])
		crc = crc32.Update(crc, manifest.Castagnoli, buf[:m])
		done += int64(m)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("body ended after %d of %d bytes: %w", done, n, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("read body: %w", err)
		}
	}
	return crc, nil
}

// uploadSequential reads the body part by part into pooled buffers and
// uploads each while the next is read. A buffer is taken before its part
// is read and returned after its upload, so at most maxConcurrentParts
// buffers exist per Put.
func (up *multipartUpload) uploadSequential(ctx context.Context, body io.Reader, size, partSize int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	slots := make(chan struct{}, maxConcurrentParts)
	var readErr error
	for i := range up.parts {
		select {
		case slots <- struct{}{}:
		case <-gctx.Done():
		}
		if gctx.Err() != nil {
			break
		}
		off := int64(i) * partSize
		n := min(partSize, size-off)
		bufp := up.s.partBuffer(partSize)
		buf := (*bufp)[:n]
		if err := readFull(gctx, body, buf); err != nil {
			up.s.buffers.Put(bufp)
			<-slots
			readErr = fmt.Errorf("%s: part %d: %w", up.what, i+1, err)
			cancel()
			break
		}
		crc := crc32.Checksum(buf, manifest.Castagnoli)
		up.crcs[i] = crc
		g.Go(func() error {
			defer func() {
				up.s.buffers.Put(bufp)
				<-slots
			}()
			return up.uploadPart(gctx, i+1, bytes.NewReader(buf), n, crc)
		})
	}
	if readErr == nil && gctx.Err() == nil {
		// Nothing may follow the last part.
		var b [1]byte
		if m, err := io.ReadFull(body, b[:]); m > 0 {
			readErr = fmt.Errorf("%s: body is longer than the given size %d", up.what, size)
			cancel()
		} else if !errors.Is(err, io.EOF) {
			readErr = fmt.Errorf("%s: read body: %w", up.what, err)
			cancel()
		}
	}
	gerr := g.Wait()
	switch {
	case readErr != nil:
		return readErr
	case gerr != nil:
		return gerr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", up.what, err)
	}
	return nil
}

// readFull fills buf from r, checking ctx between blocks.
func readFull(ctx context.Context, r io.Reader, buf []byte) error {
	for done := 0; done < len(buf); {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := io.ReadFull(r, buf[done:min(len(buf), done+readBlockBytes)])
		done += m
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("body ended %d bytes early: %w", len(buf)-done, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
	}
	return nil
}

// partBuffer returns a pooled buffer of at least n bytes. Parts are
// usually the configured size; buffers for larger, adapted parts replace
// smaller ones in the pool.
func (s *Store) partBuffer(n int64) *[]byte {
	if p, ok := s.buffers.Get().(*[]byte); ok && int64(cap(*p)) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

// uploadPart uploads part number from r, which holds its n bytes from its
// current position, telling the store their CRC32C, and records what
// CompleteMultipartUpload needs.
func (up *multipartUpload) uploadPart(ctx context.Context, number int, r io.ReadSeeker, n int64, crc uint32) error {
	eb := &exactBody{ctx: ctx, r: r, size: n, wantCRC: crc, checkCRC: true}
	defer eb.finish()
	sum := crcHeader(crc)
	out, err := up.s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:            aws.String(up.s.bucket),
		Key:               aws.String(up.name),
		UploadId:          aws.String(up.uploadID),
		PartNumber:        aws.Int32(int32(number)),
		Body:              eb,
		ContentLength:     aws.Int64(n),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
		ChecksumCRC32C:    aws.String(sum),
	}, unsignedOnLoopback)
	if err != nil {
		if berr := eb.failure(); berr != nil {
			err = berr
		} else {
			err = classify(err)
		}
		return fmt.Errorf("%s: upload part %d: %w", up.what, number, err)
	}
	if got := aws.ToString(out.ChecksumCRC32C); got != "" && got != sum {
		return fmt.Errorf("%s: upload part %d: store reports CRC32C %s, sent %s: %w", up.what, number, got, sum, providers.ErrChecksum)
	}
	if sent := eb.delivered(); sent != n {
		return fmt.Errorf("%s: upload part %d: sent %d bytes, expected %d", up.what, number, sent, n)
	}
	up.parts[number-1] = types.CompletedPart{
		PartNumber:     aws.Int32(int32(number)),
		ETag:           out.ETag,
		ChecksumCRC32C: aws.String(sum),
	}
	up.sent[number-1] = n
	return nil
}

// abort aborts the upload, also when ctx is cancelled (a cancelled Put
// must not leave its parts behind).
func (up *multipartUpload) abort(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	// S3 documents that a part upload still in progress when the upload
	// is aborted may yet succeed, so that an abort may need repeating
	// until ListParts no longer finds the upload (a failed part's body
	// can still be on its way when Put gives up on it).
	for attempt := 1; ; attempt++ {
		_, err := up.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket:   aws.String(up.s.bucket),
			Key:      aws.String(up.name),
			UploadId: aws.String(up.uploadID),
		})
		if err != nil && errorCode(err) != "NoSuchUpload" {
			return fmt.Errorf("abort multipart upload %s of %q: %w", up.uploadID, up.name, classify(err))
		}
		_, err = up.s.client.ListParts(ctx, &s3.ListPartsInput{
			Bucket:   aws.String(up.s.bucket),
			Key:      aws.String(up.name),
			UploadId: aws.String(up.uploadID),
			MaxParts: aws.Int32(1),
		})
		if err != nil {
			// NoSuchUpload: gone. Anything else (a policy without
			// s3:ListMultipartUploadParts, say): the abort itself
			// succeeded, which is all that can be known.
			return nil
		}
		if attempt == abortAttempts {
			return fmt.Errorf("multipart upload %s of %q is still there after %d aborts; the store's lifecycle rule for incomplete uploads will remove it", up.uploadID, up.name, attempt)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("abort multipart upload %s of %q: %w", up.uploadID, up.name, ctx.Err())
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// abortAttempts bounds the aborts of one multipart upload (see abort).
const abortAttempts = 4

// partSizeFor adapts the part size to the part-count limit
// (providers.PartSize) and refuses objects S3 cannot hold.
func partSizeFor(size, partSize int64, maxParts int) (int64, error) {
	partSize = providers.PartSize(size, partSize, maxParts)
	if partSize > maxPartSize {
		return 0, fmt.Errorf("object of %d bytes is too large for %d parts of at most 5 GiB", size, maxParts)
	}
	return partSize, nil
}

// exactBody is an upload's request body: exactly size bytes of r from
// start. It fails instead of returning the last bytes when r has fewer or
// more bytes, or when the bytes read in one pass from the start do not
// have the CRC32C wantCRC (if checkCRC): so the store never receives a
// complete body that is wrong. It checks ctx on every read, and after
// finish it never touches r again, since the HTTP transport may still
// read a request body after the response has arrived, when the caller
// may already reuse it.
type exactBody struct {
	ctx      context.Context
	r        io.ReadSeeker
	start    int64
	size     int64
	wantCRC  uint32
	checkCRC bool

	mu       sync.Mutex
	pos      int64
	crc      uint32 // of [0, pos) when crcValid
	crcValid bool
	err      error // sticky: the first failure of the body itself
	finished bool
}

var errFinished = errors.New("request body read after the request ended")

func (b *exactBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return 0, errFinished
	}
	if b.err != nil {
		return 0, b.err
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.pos == 0 {
		b.crc, b.crcValid = 0, true
	}
	if b.pos >= b.size {
		if b.pos == 0 {
			// An empty body: check that nothing follows.
			if err := b.checkEnd(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), b.size-b.pos)
	n, err := io.ReadFull(b.r, p[:want])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		b.err = fmt.Errorf("body ended after %d of %d bytes: %w", b.pos+int64(n), b.size, io.ErrUnexpectedEOF)
		return 0, b.err
	}
	if err != nil {
		b.err = fmt.Errorf("read body: %w", err)
		return 0, b.err
	}
	if b.crcValid {
		b.crc = crc32.Update(b.crc, manifest.Castagnoli, p[:n])
	}
	if b.pos+int64(n) == b.size {
		// Withhold the last bytes until the body is known good.
		if err := b.checkEnd(); err != nil {
			return 0, err
		}
	}
	b.pos += int64(n)
	return n, nil
}

// checkEnd checks, with r at start+size, that nothing follows and that
// the CRC32C matches. Called with mu held.
func (b *exactBody) checkEnd() error {
	var extra [1]byte
	m, err := io.ReadFull(b.r, extra[:])
	switch {
	case m > 0:
		b.err = fmt.Errorf("body is longer than the given size %d", b.size)
	case !errors.Is(err, io.EOF):
		b.err = fmt.Errorf("read body: %w", err)
	case b.checkCRC && b.crcValid && b.crc != b.wantCRC:
		b.err = fmt.Errorf("body has CRC32C %08x, expected %08x: %w", b.crc, b.wantCRC, providers.ErrChecksum)
	default:
		// Leave r where the last read ended.
		if _, err := b.r.Seek(b.start+b.size, io.SeekStart); err != nil {
			b.err = fmt.Errorf("seek body: %w", err)
		}
	}
	return b.err
}

func (b *exactBody) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return 0, errFinished
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = b.pos + offset
	case io.SeekEnd:
		abs = b.size + offset
	default:
		return 0, fmt.Errorf("seek body: invalid whence %d", whence)
	}
	if abs < 0 || abs > b.size {
		return 0, fmt.Errorf("seek body to %d: outside 0..%d", abs, b.size)
	}
	if abs == b.pos {
		return abs, nil
	}
	if _, err := b.r.Seek(b.start+abs, io.SeekStart); err != nil {
		return 0, fmt.Errorf("seek body: %w", err)
	}
	b.pos = abs
	// The CRC is only known for a pass from the start.
	b.crcValid = false
	return abs, nil
}

// failure returns the body's own failure, if any, which explains a failed
// request better than the SDK's wrapping of it.
func (b *exactBody) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	return nil
}

// delivered returns the bytes handed out by the last pass.
func (b *exactBody) delivered() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pos
}

// finish ends the body's use: it waits for a Read in progress and makes
// later ones fail.
func (b *exactBody) finish() {
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
}

// crc32cCombine returns the CRC32C of the concatenation of two byte
// strings from the CRC32C of each and the second one's length (the
// method of zlib's crc32_combine: appending len2 zero bytes is a linear
// map on the CRC, applied here by repeated squaring of its matrix over
// GF(2)). It lets parts read in parallel yield the whole object's CRC.
func crc32cCombine(crc1, crc2 uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crc1
	}
	var even, odd [32]uint32 // operators for 2^k zero bits
	odd[0] = crc32.Castagnoli
	for n, row := 1, uint32(1); n < 32; n, row = n+1, row<<1 {
		odd[n] = row
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	for {
		gf2Square(&even, &odd) // first pass: one zero byte
		if len2&1 != 0 {
			crc1 = gf2Times(&even, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
		gf2Square(&odd, &even)
		if len2&1 != 0 {
			crc1 = gf2Times(&odd, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
	}
	return crc1 ^ crc2
}

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for n := range 32 {
		square[n] = gf2Times(mat, mat[n])
	}
}
