package repository

import (
	"bytes"
	"context"
	"fmt"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
)

// What copying between repositories (package copier) needs of the
// format: whether two repositories name chunks alike, and a chunk read
// and checked as stored. Writes at the destination go through PutChunk,
// PutWALFrom and Commit like a backup's, so whatever those apply to new
// objects applies to copied ones too.

// KeyFingerprint is the fingerprint of the repository's key, "" for a
// plain repository, for messages and reports.
func (r *Repository) KeyFingerprint() string {
	if r.key == nil {
		return ""
	}
	return r.key.Fingerprint()
}

// SameChunkIDs reports whether r and o give a chunk of the same content
// the same id: both plain (SHA-256), or both encrypted with the same key
// (the keyed hash under a key derived from it). When they do not, a
// copier must decompress each chunk to learn its id in the other.
func (r *Repository) SameChunkIDs(o *Repository) bool {
	return r.KeyFingerprint() == o.KeyFingerprint()
}

// ReadChunk downloads chunk ref as stored (the LZ4 frame, opened if the
// repository is encrypted) into *frame and decompresses it into raw,
// checking it as DecodeChunk does: the frame's checksum, the content
// against the chunk's id and the raw size. A damaged chunk wraps
// ErrCorrupt; a failed read does not. Both buffers are reused across
// calls.
func (r *Repository) ReadChunk(ctx context.Context, dec *chunker.Decompressor, ref manifest.ChunkRef, frame *[]byte, raw *bytes.Buffer) ([]byte, error) {
	data, err := r.DownloadChunk(ctx, ref, frame)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from %s: %w", ref.ID, r, err)
	}
	if err := r.DecodeChunk(dec, ref, data, raw); err != nil {
		return nil, fmt.Errorf("chunk %s in %s: %w", ref.ID, r, err)
	}
	return data, nil
}
