package repository

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// ErrCorrupt marks a stored object whose bytes are not what the manifest
// recorded: wrong size, a broken LZ4 frame, or a hash mismatch. Restore
// and verify tell it apart from a missing object or a failed download.
var ErrCorrupt = errors.New("corrupt")

// corruptf makes an error that says what is wrong and matches ErrCorrupt
// without repeating the word in the message.
func corruptf(format string, args ...any) error {
	return corruptError{fmt.Errorf(format, args...)}
}

type corruptError struct{ err error }

func (e corruptError) Error() string   { return e.err.Error() }
func (e corruptError) Unwrap() []error { return []error{e.err, ErrCorrupt} }

// HasChunk reports whether chunk id is stored and, if so, its stored
// size. A backup asks before compressing a chunk, so that unchanged data
// costs a hash and a stat.
func (r *Repository) HasChunk(ctx context.Context, id string) (storedSize int64, found bool, err error) {
	info, err := r.store.Stat(ctx, ChunkKey(id))
	switch {
	case err == nil:
		return info.Size, true, nil
	case errors.Is(err, providers.ErrNotExist):
		return 0, false, nil
	default:
		return 0, false, err
	}
}

// PutChunk stores the frame of chunk id, whose CRC32C is crc32c (checked
// by the store where it can), only if no object of that id exists:
// objects are immutable, and a chunk's id says its content. It reports
// false when another writer (a concurrent backup, or the same content
// earlier in this one) stored the chunk first. The frame is read in
// place, never copied, so the caller may reuse it once PutChunk returns.
//
// In an immutable repository the chunk is locked as it is written.
func (r *Repository) PutChunk(ctx context.Context, id string, frame []byte, crc32c uint32) (stored bool, err error) {
	ret, err := r.objectRetention(ctx)
	if err != nil {
		return false, err
	}
	err = r.store.Put(ctx, ChunkKey(id), bytes.NewReader(frame), int64(len(frame)),
		providers.PutOptions{IfAbsent: true, CRC32C: crc32c, HasCRC32C: true, Retention: ret})
	switch {
	case err == nil:
		r.wrote(ChunkKey(id), ret)
		return true, nil
	case errors.Is(err, providers.ErrExist):
		return false, nil
	default:
		return false, err
	}
}

// DownloadChunk reads the stored bytes of one chunk into *buf (grown as
// needed and reused across calls). It is split from DecodeChunk so a
// caller can bound how many chunks are decompressed at once separately
// from how many are downloaded.
//
// The object is read whole, up to maxStoredSize: its size is not held to
// ref.StoredSize, because a chunk quarantined and uploaded again by a
// later backup may have been framed by another encoder (liblz4 or pure Go)
// and so differ in size from what older backups recorded, yet decode to
// the same content. DecodeChunk's LZ4 checksum and content hash judge the
// content; CheckStoredCRC tells whether the bytes are those recorded.
//
// A read that fails is returned as it is, never as ErrCorrupt: a
// connection cut mid-object (the retry layer gives up with a transient
// io.ErrUnexpectedEOF) says nothing about the stored bytes, and a repair
// must not quarantine a sound chunk over it.
func (r *Repository) DownloadChunk(ctx context.Context, ref manifest.ChunkRef, buf *[]byte) ([]byte, error) {
	rc, err := r.store.Get(ctx, ChunkKey(ref.ID), 0, -1)
	if errors.Is(err, providers.ErrChecksum) && !errors.Is(err, providers.ErrTransient) {
		return nil, corruptf("%w", err) // an encrypted chunk that fails authentication
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	limit := maxStoredSize(ref)
	// One byte spare, so that the expected size ends in io.EOF without
	// growing the buffer.
	if want := min(ref.StoredSize, limit) + 1; int64(cap(*buf)) < want {
		*buf = make([]byte, 0, want)
	}
	data := (*buf)[:0]
	for {
		if len(data) == cap(data) {
			if int64(len(data)) > limit {
				return nil, corruptf("stored object is longer than the %d bytes any frame of this chunk can take", limit)
			}
			grown := min(2*int64(cap(data)), limit+1)
			data = append(make([]byte, 0, grown), data...)
			*buf = data
		}
		n, err := rc.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, providers.ErrChecksum) && !errors.Is(err, providers.ErrTransient) {
				return nil, corruptf("%w", err)
			}
			return nil, err
		}
	}
	if int64(len(data)) > limit {
		return nil, corruptf("stored object has %d bytes, more than the %d any frame of this chunk can take", len(data), limit)
	}
	return data, nil
}

// storedSizeSlack is a margin over LZ4's worst case, for a header written
// with fields our encoders leave out.
const storedSizeSlack = 256

// maxStoredSize is the longest object chunk ref can be stored as, by any
// encoder: the larger of what the manifest recorded and LZ4's worst case
// for its raw size, plus a margin.
func maxStoredSize(ref manifest.ChunkRef) int64 {
	return max(ref.StoredSize, int64(chunker.CompressBound(int(ref.RawSize)))) + storedSizeSlack
}

// DecodeChunk decompresses stored chunk bytes into raw (reset first) and
// checks the LZ4 content checksum, the content against the chunk's id and
// the raw size. Every failure wraps ErrCorrupt.
func (r *Repository) DecodeChunk(dec *chunker.Decompressor, ref manifest.ChunkRef, stored []byte, raw *bytes.Buffer) error {
	raw.Reset()
	// Size the buffer exactly: left to grow by doubling while
	// decompressing, it would end up twice the chunk size.
	raw.Grow(int(ref.RawSize))
	want := ref.ID // the Decompressor checks SHA-256 ids itself
	if r.key != nil {
		want = ""
	}
	if err := dec.Decompress(raw, stored, want); err != nil {
		return corruptf("%w", err)
	}
	if int64(raw.Len()) != ref.RawSize {
		return corruptf("%d bytes decompressed, the manifest says %d", raw.Len(), ref.RawSize)
	}
	if r.key != nil {
		if got := r.key.ChunkID(raw.Bytes()); got != ref.ID {
			return corruptf("content hashes to %s, not to its id", got[:12])
		}
	}
	return nil
}

// ChunkID is a chunk id in binary, half the memory of its hex form, for
// sets that hold every chunk of a repository.
type ChunkID [32]byte

// ParseChunkID converts a hex chunk id.
func ParseChunkID(id string) (ChunkID, bool) {
	var c ChunkID
	if !manifest.ValidChunkID(id) {
		return c, false
	}
	_, err := hex.Decode(c[:], []byte(id))
	return c, err == nil
}

// String returns the hex id.
func (c ChunkID) String() string { return hex.EncodeToString(c[:]) }

// ChunkSizes lists every stored chunk once, in one listing pass, and
// returns its stored size by id. Keys under chunks/ that are not chunk
// keys are not ours and are left out.
func (r *Repository) ChunkSizes(ctx context.Context) (map[ChunkID]int64, error) {
	sizes := make(map[ChunkID]int64)
	for obj, err := range r.store.List(ctx, ChunksPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list chunks in %s: %w", r, err)
		}
		if id, ok := ChunkIDFromKey(obj.Key); ok {
			if c, ok := ParseChunkID(id); ok {
				sizes[c] = obj.Size
			}
		}
	}
	return sizes, nil
}

// CheckStored confirms, with one listing of the chunks and one of the
// WAL, that every chunk and WAL segment b references is stored with its
// recorded size. A backup whose lease lapsed runs it before committing:
// a gc may have judged it dead and removed what it deduplicated against.
func (r *Repository) CheckStored(ctx context.Context, b *manifest.Backup) error {
	sizes, err := r.ChunkSizes(ctx)
	if err != nil {
		return err
	}
	var missing []string
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			id, _ := ParseChunkID(c.ID)
			if s, ok := sizes[id]; !ok || s != c.StoredSize {
				missing = append(missing, ChunkKey(c.ID))
			}
		}
	}
	sizes = nil
	wal := make(map[string]int64)
	for obj, err := range r.store.List(ctx, WALPrefix) {
		if err != nil {
			return fmt.Errorf("list WAL in %s: %w", r, err)
		}
		wal[obj.Key] = obj.Size
	}
	for _, w := range b.WAL {
		if s, ok := wal[WALKey(w.Name)]; !ok || s != w.StoredSize {
			missing = append(missing, WALKey(w.Name))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d object(s) this backup references are no longer stored in %s, first %s", len(missing), r, missing[0])
	}
	return nil
}
