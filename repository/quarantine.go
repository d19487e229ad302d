package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Damaged chunks are moved aside rather than deleted or left in place. Left
// in place, a damaged chunk would be reused by every later backup, because
// deduplication trusts a chunk's name; deleted, it could not be examined.
// Under its quarantine key nothing reads it: backups, restores, verify and
// gc only look under chunks/, so the next backup that cuts the same
// content finds the chunk missing and uploads it again, which heals every
// backup that references it.

// QuarantinePrefix is where damaged objects are moved (docs/
// repository-format.md). gc leaves it alone: what is there is kept for
// inspection and removed by hand.
const QuarantinePrefix = "quarantine/"

const quarantineChunks = QuarantinePrefix + "chunks/"

// maxQuarantineBytes bounds the object QuarantineChunk reads into memory:
// more than the largest chunk a backup writes (1 GiB raw, LZ4's worst case
// and the encryption overhead), so it only refuses what no backup wrote.
const maxQuarantineBytes = 1<<30 + 64<<20

// ErrStoredCRC marks a chunk whose stored bytes do not have the CRC32C the
// manifest records, whatever they decode to. It comes with ErrCorrupt.
var ErrStoredCRC = errors.New("stored bytes differ from the bytes uploaded")

// QuarantineChunkKey is where a damaged copy of chunk id is moved: one
// folder per chunk, so that every copy moved aside can be listed, named by
// when it was moved (UTC) and the CRC32C of its bytes.
func QuarantineChunkKey(id string, at time.Time, crc uint32) string {
	return fmt.Sprintf("%s%s/%s-%08x", quarantineChunks, id, at.UTC().Format("20060102T150405Z"), crc)
}

// CheckStoredCRC compares stored chunk bytes with the CRC32C the manifest
// records for them, when it records one. A frame can be changed so that
// it still decodes to the right content (a match offset in repetitive
// data, a header flag that does not matter for one block), and only this
// check sees it.
//
// It also compares the size with the recorded one, which every manifest
// has: DownloadChunk does not, since a chunk uploaded again may be framed
// differently.
func CheckStoredCRC(ref manifest.ChunkRef, stored []byte) error {
	if int64(len(stored)) != ref.StoredSize {
		return corruptf("%w: stored object has %d bytes, the manifest says %d", ErrStoredCRC, len(stored), ref.StoredSize)
	}
	if ref.StoredCRC32C == nil {
		return nil
	}
	if got := crc32.Checksum(stored, manifest.Castagnoli); got != *ref.StoredCRC32C {
		return corruptf("%w: CRC32C %08x, the manifest says %08x", ErrStoredCRC, got, *ref.StoredCRC32C)
	}
	return nil
}

// Quarantined reports whether a copy of chunk id has ever been moved
// aside. The stored object is then a later upload, whose frame may differ
// from the one that backups before it recorded the CRC of (another
// encoder, another version): for such a chunk a CRC mismatch over content
// that decodes right is not evidence of damage.
func (r *Repository) Quarantined(ctx context.Context, id string) (bool, error) {
	for _, err := range r.raw.List(ctx, quarantineChunks+id+"/") {
		if err != nil {
			return false, fmt.Errorf("list quarantined copies of chunk %s in %s: %w", id[:12], r, err)
		}
		return true, nil
	}
	return false, nil
}

// QuarantineChunk moves the stored object of chunk id to a quarantine key
// and returns that key: a copy, then the removal of the original, so that
// an interruption leaves both and never neither. The bytes move as they
// are (in an encrypted repository, still sealed). A missing chunk is
// ErrNotExist. The caller holds the prune lock, so no other process
// removes or replaces the chunk meanwhile.
//
// In an immutable repository nothing is copied (a copy then a delete is
// what the locks are there to prevent, and would leave a version behind):
// the damaged chunk is deleted if its lock has expired, and the result is
// "" for "removed, not kept"; while it is locked the error is a
// *providers.LockedError and the chunk stays.
func (r *Repository) QuarantineChunk(ctx context.Context, id string) (string, error) {
	src := ChunkKey(id)
	p, err := r.policy(ctx)
	if err != nil {
		return "", fmt.Errorf("quarantine chunk %s: %w", id[:12], err)
	}
	if p != nil {
		if err := r.raw.Delete(ctx, src); err != nil {
			return "", fmt.Errorf("quarantine chunk %s: remove %s: %w", id[:12], src, err)
		}
		return "", nil
	}
	rc, err := r.raw.Get(ctx, src, 0, -1)
	if err != nil {
		return "", fmt.Errorf("quarantine chunk %s: %w", id[:12], err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxQuarantineBytes+1))
	rc.Close()
	switch {
	case err != nil:
		return "", fmt.Errorf("quarantine chunk %s: read %s: %w", id[:12], src, err)
	case len(data) > maxQuarantineBytes:
		return "", fmt.Errorf("quarantine chunk %s: %s is larger than any chunk pgstow writes (%d bytes); move it aside by hand", id[:12], src, maxQuarantineBytes)
	}
	crc := crc32.Checksum(data, manifest.Castagnoli)
	dst := QuarantineChunkKey(id, time.Now(), crc)
	err = r.raw.Put(ctx, dst, bytes.NewReader(data), int64(len(data)), providers.PutOptions{IfAbsent: true, CRC32C: crc, HasCRC32C: true})
	// Taken: the same bytes were moved aside in the same second.
	if err != nil && !errors.Is(err, providers.ErrExist) {
		return "", fmt.Errorf("quarantine chunk %s: copy to %s: %w", id[:12], dst, err)
	}
	if err := r.raw.Delete(ctx, src); err != nil && !errors.Is(err, providers.ErrNotExist) {
		return "", fmt.Errorf("quarantine chunk %s: copied to %s, but removing %s failed: %w", id[:12], dst, src, err)
	}
	return dst, nil
}

// ChunkCRCs returns the stored-bytes CRC32C that backup b records for
// each of its chunks, for a new backup to carry forward for the chunks it
// deduplicates (uploader.Config.KnownCRC32C): the stored frame cannot be
// recomputed from the content, and without this a chunk's CRC would be
// known only to the backup that uploaded it. Memory is about 40 bytes per
// chunk.
func ChunkCRCs(b *manifest.Backup) func(id string) (uint32, bool) {
	crcs := make(map[ChunkID]uint32)
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			if id, ok := ParseChunkID(c.ID); ok && c.StoredCRC32C != nil {
				crcs[id] = *c.StoredCRC32C
			}
		}
	}
	return func(id string) (uint32, bool) {
		cid, ok := ParseChunkID(id)
		if !ok {
			return 0, false
		}
		crc, ok := crcs[cid]
		return crc, ok
	}
}
