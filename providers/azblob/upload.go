package azblob

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

const (
	// blocksInFlight bounds the blocks of one Put being read or sent at
	// once. A body without io.ReaderAt is copied into one buffer of the
	// block size per block, so such a Put holds at most
	// blocksInFlight × block size (64 MiB by default), plus one buffer of
	// at most the threshold for a single-request Put.
	blocksInFlight = 4
	// readChunkBytes is how much is read from a sequential body between
	// context checks, so that a cancelled Put stops reading promptly.
	readChunkBytes = 1 << 20
	// blockNonceBytes is the random part of a block ID; see blockID.
	blockNonceBytes = 10
)

// Put stores the object with one Put Blob request up to the multipart
// threshold, and as staged blocks committed with Put Block List above it.
// Either way the bytes are read, counted and hashed before they are sent:
// each request carries the MD5 of its body, which the service verifies
// (Md5Mismatch → ErrChecksum), and the CRC32C of the whole body is
// compared with opts.CRC32C before the object is created or the blocks
// committed, since Azure has no CRC32C check of its own. With IfAbsent the
// creating request carries If-None-Match: *, so the write is atomic.
//
// Nothing is left behind on failure: a refused Put Blob creates nothing,
// and blocks that were staged but never committed belong to no object —
// they are invisible to Get, Stat and List, and the service discards them
// after a week. Azure has no call to discard them earlier (there is no
// upload to abort, and deleting the blob would delete an existing object
// of the same name), so there is nothing to clean up.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	name, err := providers.CheckPut(ctx, s, key, size, s.objectName)
	if err != nil {
		return err
	}
	var lock lockPolicy
	lock.until, lock.mode, err = s.lockOptions(ctx, key, opts.Retention)
	if err != nil {
		return err
	}
	br, err := s.newBodyReader(key, body, size)
	if err != nil {
		return err
	}
	bb := s.client.NewBlockBlobClient(name)
	if size <= s.threshold {
		return s.putSingle(ctx, key, bb, br, opts, lock)
	}
	return s.putBlocks(ctx, key, bb, br, opts, lock)
}

// lockPolicy is the immutability policy a Put sets on the version it
// creates; the zero value sets none.
type lockPolicy struct {
	until *time.Time
	mode  *blob.ImmutabilityPolicySetting
}

// putSingle reads the whole body, checks it and sends it with Put Blob.
func (s *Store) putSingle(ctx context.Context, key string, bb *blockblob.Client, br *bodyReader, opts providers.PutOptions, lock lockPolicy) error {
	p, err := br.next(ctx, br.size)
	if err != nil {
		return err
	}
	defer s.release(p)
	if err := br.finish(opts); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	return s.upload(ctx, key, bb, p, opts.IfAbsent, lock)
}

// upload sends one part as the whole blob.
//
// Azurite (3.35) differs from Azure here: it refuses a conditional Put
// Blob with 409 BlobAlreadyExists when the name has only uncommitted
// blocks, left by a failed staged upload, although such a blob does not
// exist. A retry of that upload has the same size and is staged again,
// where the conditional commit treats such blobs right.
func (s *Store) upload(ctx context.Context, key string, bb *blockblob.Client, p *part, ifAbsent bool, lock lockPolicy) error {
	o := &blockblob.UploadOptions{
		TransactionalValidation:      blob.TransferValidationTypeMD5(p.md5),
		ImmutabilityPolicyExpiryTime: lock.until,
		ImmutabilityPolicyMode:       lock.mode,
	}
	if ifAbsent {
		o.AccessConditions = ifNoneMatchAny()
	}
	if _, err := bb.Upload(ctx, p.body, o); err != nil {
		return fmt.Errorf("put %q into %s: %w", key, s, classify(ctx, err))
	}
	return nil
}

// putBlocks reads the body block by block in order (which is what lets
// it keep one running CRC32C), stages up to blocksInFlight blocks in
// parallel, and commits the block list once every block is staged, the
// byte count is exact and the CRC32C matches.
func (s *Store) putBlocks(ctx context.Context, key string, bb *blockblob.Client, br *bodyReader, opts providers.PutOptions, lock lockPolicy) error {
	blockSize, err := blockSizeFor(br.size, s.blockSize, s.maxBlocks)
	if err != nil {
		return fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	count := int((br.size + blockSize - 1) / blockSize)
	if opts.IfAbsent {
		// Not for atomicity (the commit is conditional) but to avoid
		// sending gigabytes only to find the object already there.
		if err := s.checkAbsent(ctx, key, bb); err != nil {
			return err
		}
	}
	var nonce [blockNonceBytes]byte
	_, _ = rand.Read(nonce[:]) // never fails
	ids := make([]string, count)
	for i := range ids {
		ids[i] = blockID(nonce, i)
	}

	stageCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(stageCtx)
	slots := make(chan struct{}, blocksInFlight)
	var readErr error
	for i := range count {
		select {
		case slots <- struct{}{}:
		case <-gctx.Done():
		}
		if gctx.Err() != nil {
			break // a block failed, or ctx is done
		}
		p, err := br.next(gctx, min(blockSize, br.size-int64(i)*blockSize))
		if err != nil {
			readErr = err
			break
		}
		g.Go(func() error {
			defer func() {
				s.release(p)
				<-slots
			}()
			return s.stageBlock(gctx, key, bb, ids[i], i, count, p)
		})
	}
	if readErr != nil {
		cancel() // stop the blocks in flight: they will not be committed
	}
	stageErr := g.Wait()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("put %q into %s: %w", key, s, ctx.Err())
	case readErr != nil && (stageErr == nil || !errors.Is(readErr, context.Canceled)):
		return readErr // the body's fault, not a consequence of a failed block
	case stageErr != nil:
		return stageErr
	case readErr != nil:
		return readErr
	}
	if err := br.finish(opts); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	return s.commitBlocks(ctx, key, bb, ids, opts.IfAbsent, lock)
}

// checkAbsent fails with ErrExist if the blob exists.
func (s *Store) checkAbsent(ctx context.Context, key string, bb *blockblob.Client) error {
	_, err := bb.GetProperties(ctx, nil)
	switch {
	case err == nil:
		return fmt.Errorf("put %q into %s: %w", key, s, errExists("found before staging blocks"))
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil
	}
	return fmt.Errorf("put %q into %s: check whether it exists: %w", key, s, classify(ctx, err))
}

// stageBlock sends block i of count with Put Block.
func (s *Store) stageBlock(ctx context.Context, key string, bb *blockblob.Client, id string, i, count int, p *part) error {
	_, err := bb.StageBlock(ctx, id, p.body, &blockblob.StageBlockOptions{
		TransactionalValidation: blob.TransferValidationTypeMD5(p.md5),
	})
	if err != nil {
		return fmt.Errorf("put %q into %s: stage block %d of %d: %w", key, s, i+1, count, classify(ctx, err))
	}
	return nil
}

// commitBlocks makes the staged blocks the blob's content, atomically.
func (s *Store) commitBlocks(ctx context.Context, key string, bb *blockblob.Client, ids []string, ifAbsent bool, lock lockPolicy) error {
	o := &blockblob.CommitBlockListOptions{ImmutabilityPolicyExpiryTime: lock.until, ImmutabilityPolicyMode: lock.mode}
	if ifAbsent {
		o.AccessConditions = ifNoneMatchAny()
	}
	_, err := bb.CommitBlockList(ctx, ids, o)
	if err == nil {
		return nil
	}
	if bloberror.HasCode(err, bloberror.InvalidBlockList) {
		// A commit of any upload to the same name discards all other
		// uncommitted blocks of that name, ours included. A new
		// attempt stages them again (or, with IfAbsent, finds the
		// object there).
		err = providers.MarkTransient(&classified{
			msg:  "the staged blocks are gone: another upload of this key committed first, or they expired (400 InvalidBlockList)",
			errs: []error{err},
		})
		return fmt.Errorf("put %q into %s: commit %d blocks: %w", key, s, len(ids), err)
	}
	return fmt.Errorf("put %q into %s: commit %d blocks: %w", key, s, len(ids), classify(ctx, err))
}

func ifNoneMatchAny() *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
}

// blockID names block i of one upload: a random nonce of the upload and
// the block's number, base64-encoded. All IDs of a blob must have the
// same length, so the number is fixed-width. The nonce matters because
// staged blocks belong to the blob name, not to an upload: two concurrent
// uploads of one key numbering their blocks alike would replace each
// other's blocks, and a commit could mix both bodies.
func blockID(nonce [blockNonceBytes]byte, i int) string {
	var b [blockNonceBytes + 8]byte
	copy(b[:], nonce[:])
	binary.BigEndian.PutUint64(b[blockNonceBytes:], uint64(i))
	return base64.StdEncoding.EncodeToString(b[:])
}

// bodyReader hands out a Put's body in consecutive parts, counting the
// bytes and keeping the CRC32C of all of them. A body that implements
// io.ReaderAt (bytes.Reader, os.File) is read in place: each part is
// read once to hash it and again, as a section, by the request, so it
// needs no buffer; the service's MD5 check proves the second read saw the
// bytes the first one hashed. Other bodies are copied into pooled buffers.
type bodyReader struct {
	s    *Store
	key  string
	size int64
	ra   io.ReaderAt // nil: read r sequentially
	base int64       // the body's position when Put was called
	r    io.Reader
	done int64
	crc  hash.Hash32
}

// part is one request body with its MD5.
type part struct {
	body *partBody
	md5  []byte
	buf  *[]byte // the pooled buffer behind body, or nil
}

func (s *Store) newBodyReader(key string, body io.ReadSeeker, size int64) (*bodyReader, error) {
	br := &bodyReader{s: s, key: key, size: size, r: body, crc: crc32.New(manifest.Castagnoli)}
	if ra, ok := body.(io.ReaderAt); ok {
		pos, err := body.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("put %q into %s: body position: %w", key, s, err)
		}
		br.ra, br.base = ra, pos
	}
	return br, nil
}

func (b *bodyReader) errorf(format string, args ...any) error {
	return fmt.Errorf("put %q into %s: %w", b.key, b.s, fmt.Errorf(format, args...))
}

func (b *bodyReader) short() error {
	return b.errorf("body ended after %d of %d bytes: %w", b.done, b.size, io.ErrUnexpectedEOF)
}

// next reads the next n bytes of the body and returns them as a part.
func (b *bodyReader) next(ctx context.Context, n int64) (*part, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.errorf("%w", err)
	}
	sum := md5.New()
	if b.ra != nil {
		start := b.base + b.done
		got, err := io.Copy(io.MultiWriter(sum, b.crc), io.NewSectionReader(b.ra, start, n))
		b.done += got
		if err != nil {
			return nil, b.errorf("read body: %w", err)
		}
		if got < n {
			return nil, b.short()
		}
		return &part{body: &partBody{r: io.NewSectionReader(b.ra, start, n)}, md5: sum.Sum(nil)}, nil
	}
	bufp := b.s.getBuffer(n)
	buf := (*bufp)[:n]
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			b.s.putBuffer(bufp)
			return nil, b.errorf("%w", err)
		}
		m, err := io.ReadFull(b.r, buf[off:min(off+readChunkBytes, n)])
		off += int64(m)
		b.done += int64(m)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			b.s.putBuffer(bufp)
			return nil, b.short()
		}
		if err != nil {
			b.s.putBuffer(bufp)
			return nil, b.errorf("read body: %w", err)
		}
	}
	sum.Write(buf)
	b.crc.Write(buf)
	return &part{body: &partBody{r: bytes.NewReader(buf)}, md5: sum.Sum(nil), buf: bufp}, nil
}

// finish checks, once all parts are read, that the body ends there and
// that its CRC32C is the expected one. Storing a prefix of a longer body
// would silently truncate the object.
func (b *bodyReader) finish(opts providers.PutOptions) error {
	if b.done != b.size {
		return b.errorf("read %d of %d bytes", b.done, b.size)
	}
	var one [1]byte
	var n int
	var err error
	if b.ra != nil {
		n, err = b.ra.ReadAt(one[:], b.base+b.size)
	} else {
		n, err = io.ReadFull(b.r, one[:])
	}
	if n > 0 {
		return b.errorf("body is longer than the given size %d", b.size)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return b.errorf("read body: %w", err)
	}
	if got := b.crc.Sum32(); opts.HasCRC32C && got != opts.CRC32C {
		return b.errorf("body has CRC32C %08x, expected %08x: %w", got, opts.CRC32C, providers.ErrChecksum)
	}
	return nil
}

// partBody is a request body that can be cut off from its bytes. The SDK
// closes a body as soon as the request returns, but net/http may go on
// reading it after a failed request; release detaches the body before its
// buffer goes back to the pool, so such a late read gets an error instead
// of another upload's bytes.
type partBody struct {
	mu sync.Mutex
	r  io.ReadSeeker // nil once released
}

var errReleased = errors.New("request body read after its request ended")

func (b *partBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return 0, errReleased
	}
	return b.r.Read(p)
}

func (b *partBody) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return 0, errReleased
	}
	return b.r.Seek(offset, whence)
}

// Close does nothing: the part is released by its owner (see release).
func (b *partBody) Close() error { return nil }

// release detaches the part's body and returns its buffer to the pool.
func (s *Store) release(p *part) {
	p.body.mu.Lock()
	p.body.r = nil
	p.body.mu.Unlock()
	if p.buf != nil {
		s.putBuffer(p.buf)
	}
}

// getBuffer returns a buffer of at least n bytes: a pooled one of the
// block size, or, for the larger blocks of huge objects, a new one.
func (s *Store) getBuffer(n int64) *[]byte {
	if n <= s.blockSize {
		return s.buffers.Get().(*[]byte)
	}
	b := make([]byte, n)
	return &b
}

func (s *Store) putBuffer(b *[]byte) {
	if int64(len(*b)) == s.blockSize {
		s.buffers.Put(b)
	}
}
