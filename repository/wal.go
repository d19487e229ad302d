package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/spool"
)

// WAL files are streamed, never held whole: a segment can be 1 GiB. A
// store needs an upload's size before it starts and may replay the body
// on a retry, and a compressed frame's size is only known once it is
// written, so PutWALFrom compresses into a spool file (unlinked at once)
// and uploads from there; ReadWAL decompresses the download straight
// into its destination. Memory is the lz4 Writer's or Reader's buffers
// (about 8 MB each), whatever the segment size; the spool needs room
// for one compressed segment per upload in flight.

// SetSpoolDir sets the directory WAL is staged in before upload; empty
// (the default) means os.TempDir(). Call it before the repository is used.
func (r *Repository) SetSpoolDir(dir string) { r.spoolDir = dir }

// SpoolDir is the directory SetSpoolDir set ("" for os.TempDir()), for
// the WAL stream's own spool of the segment it is receiving.
func (r *Repository) SpoolDir() string { return r.spoolDir }

// PutWAL stores one small WAL file held in memory (a timeline history
// file, or a test's segment); segments go through PutWALFrom.
func (r *Repository) PutWAL(ctx context.Context, comp *chunker.Compressor, name string, data []byte) (manifest.WALSegment, error) {
	return r.PutWALFrom(ctx, comp, name, bytes.NewReader(data), int64(len(data)))
}

// PutWALFrom stores one WAL file (a segment or a .history file), the
// first size bytes of raw, compressed. An identical file already there is
// fine (a re-run, or another archiver); different content under the same
// name is an error, never an overwrite. The comparison streams the stored
// copy: its SHA-256 against the new one's.
func (r *Repository) PutWALFrom(ctx context.Context, comp *chunker.Compressor, name string, raw io.Reader, size int64) (manifest.WALSegment, error) {
	seg := manifest.WALSegment{Name: name}
	staged, err := r.stageWAL(ctx, comp, name, raw, size)
	if err != nil {
		return seg, err
	}
	defer staged.close()
	seg.SHA256 = hex.EncodeToString(staged.sum[:])
	seg.StoredSize = staged.frameSize
	ret, err := r.objectRetention(ctx)
	if err != nil {
		return seg, fmt.Errorf("store WAL %s: %w", name, err)
	}
	err = r.store.Put(ctx, WALKey(name), staged.body(), staged.frameSize,
		providers.PutOptions{IfAbsent: true, CRC32C: staged.crc, HasCRC32C: true, Retention: ret})
	if err == nil {
		r.wrote(WALKey(name), ret)
		return seg, nil
	}
	if !errors.Is(err, providers.ErrExist) {
		return seg, fmt.Errorf("store WAL %s: %w", name, err)
	}
	existing, err := r.WALSum(ctx, chunker.NewDecompressor(), name)
	if err != nil {
		return seg, fmt.Errorf("WAL %s exists; reading it to compare: %w", name, err)
	}
	if existing.SHA256 != staged.sum {
		return seg, fmt.Errorf("%w: %s in %s differs from what the server sent (sha256 %x vs %x); refusing to overwrite",
			ErrWALConflict, name, r, existing.SHA256[:8], staged.sum[:8])
	}
	seg.StoredSize = existing.StoredSize
	return seg, nil
}

// PutWALPartial stores a small unfinished segment held in memory (tests);
// WAL receivers use PutWALPartialFrom.
func (r *Repository) PutWALPartial(ctx context.Context, comp *chunker.Compressor, segment string, data []byte) error {
	return r.PutWALPartialFrom(ctx, comp, segment, bytes.NewReader(data), int64(len(data)))
}

// PutWALPartialFrom stores the unfinished segment a WAL receiver holds
// when it stops (the first size bytes of raw), as <segment>.partial.
// Unlike complete WAL files it may be replaced: it is a snapshot that
// grows until the segment is complete.
func (r *Repository) PutWALPartialFrom(ctx context.Context, comp *chunker.Compressor, segment string, raw io.Reader, size int64) error {
	name := segment + ".partial"
	staged, err := r.stageWAL(ctx, comp, name, raw, size)
	if err != nil {
		return err
	}
	defer staged.close()
	// In an immutable repository the snapshot is locked too, and never
	// replaced: a replacement would leave the earlier one behind as a
	// locked older version (docs/immutability.md).
	ret, err := r.objectRetention(ctx)
	if err != nil {
		return fmt.Errorf("store WAL %s: %w", name, err)
	}
	err = r.store.Put(ctx, WALKey(name), staged.body(), staged.frameSize,
		providers.PutOptions{CRC32C: staged.crc, HasCRC32C: true, Retention: ret, IfAbsent: !ret.IsZero()})
	if errors.Is(err, providers.ErrExist) {
		return fmt.Errorf("store WAL %s: %w", name, ErrPartialKept)
	}
	if err != nil {
		return fmt.Errorf("store WAL %s: %w", name, err)
	}
	return nil
}

// ErrPartialKept is returned by PutWALPartialFrom in an immutable
// repository that holds a snapshot of the segment already: it is kept,
// and the new one is not stored.
var ErrPartialKept = errors.New("an immutable repository keeps the partial segment stored earlier")

// stagedWAL is a WAL file compressed into a spool file, ready to upload.
type stagedWAL struct {
	f         *spool.File
	frameSize int64
	crc       uint32 // of the frame
	sum       [sha256.Size]byte
}

func (s *stagedWAL) body() *io.SectionReader { return io.NewSectionReader(s.f, 0, s.frameSize) }
func (s *stagedWAL) close()                  { _ = s.f.Close() }

// stageWAL compresses size bytes of raw into a new spool file, hashing
// the raw bytes on the way. A cancelled ctx stops it between reads.
func (r *Repository) stageWAL(ctx context.Context, comp *chunker.Compressor, name string, raw io.Reader, size int64) (*stagedWAL, error) {
	f, err := spool.Create(r.spoolDir, "pgstow-wal-*.lz4")
	if err != nil {
		return nil, fmt.Errorf("stage WAL %s: %w", name, err)
	}
	h := sha256.New()
	cancellable := readFunc(func(p []byte) (int, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return raw.Read(p)
	})
	n, crc, err := comp.CompressStream(f, io.TeeReader(cancellable, h), size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("compress WAL %s: %w", name, err)
	}
	s := &stagedWAL{f: f, frameSize: n, crc: crc}
	h.Sum(s.sum[:0])
	return s, nil
}

// ErrWALName is returned for a name that is not a WAL file name
// (manifest.ValidWALName).
var ErrWALName = errors.New("invalid WAL file name")

// CheckWALName refuses what is not a WAL file name, before the name is
// used in a path or a key.
func CheckWALName(name string) error {
	if !manifest.ValidWALName(name) {
		return fmt.Errorf("%w %q", ErrWALName, name)
	}
	return nil
}

// WALWant is what a reader knows of a WAL file before reading it.
type WALWant struct {
	// SegmentSize is the repository's WAL segment size: no WAL file is
	// larger, and a segment is exactly that long. Required.
	SegmentSize uint64
	// SHA256 is the hex SHA-256 a manifest recorded; "" where nothing
	// recorded one (wal-fetch, a --wal=none backup collecting what
	// others archived, the continuity check).
	SHA256 string
}

// ReadWAL is the one way WAL is read out of the repository: wal-fetch and
// its prefetch, a restore embedding WAL, verify, a --wal=none backup and
// the continuity check all go through it, so they all trust the same
// rule. It streams WAL file name, decompressed, into dst (nil: only
// check it) and returns its sizes and SHA-256. The rule:
//   - the name is a WAL file name (CheckWALName);
//   - the stored object is no larger than the worst case a segment
//     compresses to;
//   - the codec's content checksum holds;
//   - a segment is exactly SegmentSize bytes, a standby backup's partial
//     segment the size its name declares;
//   - the SHA-256 is the one recorded, where one is.
//
// All but the first are known only at the end, after the bytes reached
// dst: on an error dst holds a part, or bad bytes, and must be discarded.
// A missing file wraps providers.ErrNotExist, an invalid name ErrWALName,
// a file breaking the rule ErrCorrupt; failures to read the store or to
// write dst wrap none of them.
func (r *Repository) ReadWAL(ctx context.Context, dec *chunker.Decompressor, name string, want WALWant, dst io.Writer) (WALSum, error) {
	if err := CheckWALName(name); err != nil {
		return WALSum{}, err
	}
	seg := want.SegmentSize
	if !manifest.ValidSegmentSize(seg) {
		return WALSum{}, fmt.Errorf("read WAL %s from %s: invalid segment size %d", name, r, seg)
	}
	h := sha256.New()
	w := io.Writer(h)
	if dst != nil {
		w = io.MultiWriter(dst, h)
	}
	n, stored, err := r.fetchWALTo(ctx, dec, name, w, int64(seg))
	sum := WALSum{RawSize: n, StoredSize: stored}
	if err != nil {
		return sum, err
	}
	h.Sum(sum.SHA256[:0])
	if _, _, err := manifest.ParseSegmentName(name, seg); err == nil && uint64(n) != seg {
		return sum, corruptf("WAL segment %s in %s is corrupt: %d bytes, the segment size is %d", name, r, n, seg)
	}
	if _, _, _, size, err := manifest.ParsePartialSegmentName(name, seg); err == nil && uint64(n) != size {
		return sum, corruptf("partial WAL segment %s in %s is corrupt: %d bytes, its name says %d", name, r, n, size)
	}
	if want.SHA256 != "" && sum.Hex() != want.SHA256 {
		return sum, corruptf("WAL file %s in %s is corrupt: SHA-256 %s, the manifest says %s", name, r, sum.Hex(), want.SHA256)
	}
	return sum, nil
}

// FetchWAL reads one small WAL file into memory (a timeline history
// file, or a test's segment) through ReadWAL, with the segment size of
// the repository's configuration. It also returns the stored size.
func (r *Repository) FetchWAL(ctx context.Context, name string) ([]byte, int64, error) {
	cfg, err := r.Config(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch WAL %s: read the configuration of %s: %w", name, r, err)
	}
	var out bytes.Buffer
	sum, err := r.ReadWAL(ctx, chunker.NewDecompressor(), name, WALWant{SegmentSize: cfg.WALSegmentSize}, &out)
	if err != nil {
		return nil, 0, err
	}
	return out.Bytes(), sum.StoredSize, nil
}

// fetchWALTo streams one WAL file, decompressed, into dst and returns how
// many raw bytes it wrote and the stored (compressed) size, checking the
// size bound and the codec's checksum of ReadWAL's rule; ReadWAL adds
// the rest. maxRaw >= 0 bounds the raw size; -1 is for comparing a file
// being written with the stored one (PutWALFrom, wal-push), where the
// content is checked byte for byte instead. Errors are ReadWAL's.
func (r *Repository) fetchWALTo(ctx context.Context, dec *chunker.Decompressor, name string, dst io.Writer, maxRaw int64) (raw, stored int64, err error) {
	rc, err := r.store.Get(ctx, WALKey(name), 0, -1)
	if errors.Is(err, providers.ErrChecksum) {
		return 0, 0, corruptf("WAL %s in %s is corrupt: %w", name, r, err)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("fetch WAL %s from %s: %w", name, r, err)
	}
	defer rc.Close()
	in := &countingReader{r: rc}
	var src io.Reader = in
	if maxRaw >= 0 {
		// An object larger than the most maxRaw bytes compress to is not
		// ours: read no further than that, plus one byte to notice.
		src = io.LimitReader(in, int64(chunker.CompressBound(int(maxRaw)))+1)
	}
	raw, err = dec.DecompressStream(dst, src, maxRaw)
	switch {
	case maxRaw >= 0 && in.n > int64(chunker.CompressBound(int(maxRaw))):
		return raw, in.n, corruptf("WAL %s in %s is corrupt: the stored object is larger than %d bytes", name, r, chunker.CompressBound(int(maxRaw)))
	case errors.Is(err, chunker.ErrFrame) || errors.Is(err, providers.ErrChecksum):
		return raw, in.n, corruptf("WAL %s in %s is corrupt: %w", name, r, err)
	case err != nil:
		return raw, in.n, fmt.Errorf("fetch WAL %s from %s: %w", name, r, err)
	}
	return raw, in.n, nil
}

// WALSum is what WALSum finds of a stored WAL file.
type WALSum struct {
	RawSize, StoredSize int64
	SHA256              [sha256.Size]byte
}

// Hex is the SHA-256 as manifests write it.
func (s WALSum) Hex() string { return hex.EncodeToString(s.SHA256[:]) }

// WALSum reads one stored WAL file through and returns its sizes and the
// SHA-256 of its content, holding none of it, to compare a file being
// archived with the copy already stored (PutWALFrom, wal-push): the
// content is what is compared, so only the codec's checksum is checked.
// Readers of WAL use ReadWAL. Errors are ReadWAL's.
func (r *Repository) WALSum(ctx context.Context, dec *chunker.Decompressor, name string) (WALSum, error) {
	h := sha256.New()
	n, stored, err := r.fetchWALTo(ctx, dec, name, h, -1)
	if err != nil {
		return WALSum{}, err
	}
	s := WALSum{RawSize: n, StoredSize: stored}
	h.Sum(s.SHA256[:0])
	return s, nil
}

// readFunc is a function as an io.Reader.
type readFunc func(p []byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// HasWAL reports whether a WAL file is stored.
func (r *Repository) HasWAL(ctx context.Context, name string) (bool, error) {
	return r.has(ctx, WALKey(name))
}
