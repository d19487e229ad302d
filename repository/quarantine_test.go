package repository_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/uploader"
)

// storeChunks uploads data as one archive of 64 KiB chunks and returns
// its record.
func storeChunks(t *testing.T, r *repository.Repository, data []byte) (manifest.Archive, uploader.Stats) {
	t.Helper()
	u := uploader.New(r, uploader.Config{ChunkSize: 64 << 10}, slog.New(slog.DiscardHandler))
	a, _, err := u.Archive(t.Context(), bytes.NewReader(tarOf(t, data)), 0, "base.tar", 0)
	if err != nil {
		t.Fatal(err)
	}
	return a, u.Stats()
}

func tarOf(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "base/1/1259", Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A damaged chunk moved aside keeps its bytes under its quarantine key,
// leaves its chunk key free, and the next upload of the same content
// stores it again (the quarantined copy is never found by the
// deduplication check), in a plain and in an encrypted repository, where
// the damaged object no longer opens.
func TestQuarantineChunk(t *testing.T) {
	key, err := encryption.ParseKey([]byte(strings.Repeat("ab", 32)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		open func(providers.Store) *repository.Repository
	}{
		{"plain", repository.New},
		{"encrypted", func(s providers.Store) *repository.Repository { return repository.NewEncrypted(s, key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			raw := mem.New()
			r := tc.open(raw)
			data := bytes.Repeat([]byte("pgstow heals "), 20000)
			a, _ := storeChunks(t, r, data)
			ref := a.Chunks[1]
			ck := repository.ChunkKey(ref.ID)
			damaged, err := providers.ReadAll(ctx, raw, ck)
			if err != nil {
				t.Fatal(err)
			}
			damaged[len(damaged)/2] ^= 0x40
			if err := raw.Delete(ctx, ck); err != nil {
				t.Fatal(err)
			}
			if err := raw.Put(ctx, ck, bytes.NewReader(damaged), int64(len(damaged)), providers.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if q, err := r.Quarantined(ctx, ref.ID); err != nil || q {
				t.Fatalf("Quarantined before: %v, %v", q, err)
			}

			before := time.Now().UTC().Truncate(time.Second)
			qk, err := r.QuarantineChunk(ctx, ref.ID)
			if err != nil {
				t.Fatal(err)
			}
			prefix := "quarantine/chunks/" + ref.ID + "/"
			stamp, crc, ok := strings.Cut(strings.TrimPrefix(qk, prefix), "-")
			at, perr := time.Parse("20060102T150405Z", stamp)
			if !strings.HasPrefix(qk, prefix) || !ok || perr != nil || at.Before(before) || crc != hex8(crc32.Checksum(damaged, crc32.MakeTable(crc32.Castagnoli))) {
				t.Fatalf("quarantine key %q: want %s<time from %s>-<CRC32C of the damaged bytes>", qk, prefix, before.Format("20060102T150405Z"))
			}
			if got, err := providers.ReadAll(ctx, raw, qk); err != nil || !bytes.Equal(got, damaged) {
				t.Fatalf("quarantined copy: %v; equal to the damaged bytes: %v", err, bytes.Equal(got, damaged))
			}
			if _, err := raw.Stat(ctx, ck); !errors.Is(err, providers.ErrNotExist) {
				t.Fatalf("chunk key after quarantine: %v, want ErrNotExist", err)
			}
			if q, err := r.Quarantined(ctx, ref.ID); err != nil || !q {
				t.Fatalf("Quarantined after: %v, %v", q, err)
			}
			if _, err := r.QuarantineChunk(ctx, ref.ID); !errors.Is(err, providers.ErrNotExist) {
				t.Fatalf("quarantine of a chunk already moved: %v, want ErrNotExist", err)
			}

			again, stats := storeChunks(t, r, data)
			if stats.NewChunks != 1 {
				t.Fatalf("the next upload stored %d chunks, want 1 (the quarantined one)", stats.NewChunks)
			}
			var buf []byte
			var out bytes.Buffer
			for _, c := range again.Chunks {
				stored, err := r.DownloadChunk(ctx, c, &buf)
				if err == nil {
					err = r.DecodeChunk(chunker.NewDecompressor(), c, stored, &out)
				}
				if err == nil {
					err = repository.CheckStoredCRC(c, stored)
				}
				if err != nil {
					t.Fatalf("chunk %s after the new upload: %v", c.ID[:12], err)
				}
			}
			if got, _ := providers.ReadAll(ctx, raw, qk); !bytes.Equal(got, damaged) {
				t.Fatal("the new upload changed the quarantined copy")
			}
		})
	}
}

func hex8(v uint32) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

func TestCheckStoredCRC(t *testing.T) {
	stored := []byte("an lz4 frame")
	good := crc32.Checksum(stored, crc32.MakeTable(crc32.Castagnoli))
	bad := good ^ 1
	for _, tc := range []struct {
		name string
		size int64
		crc  *uint32
		ok   bool
	}{
		{"not recorded", 12, nil, true},
		{"matches", 12, &good, true},
		{"differs", 12, &bad, false},
		{"other size, not recorded", 13, nil, false},
		{"other size", 11, &good, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := repository.CheckStoredCRC(manifest.ChunkRef{ID: strings.Repeat("0", 64), StoredSize: tc.size, StoredCRC32C: tc.crc}, stored)
			if tc.ok != (err == nil) || (err != nil && (!errors.Is(err, repository.ErrCorrupt) || !errors.Is(err, repository.ErrStoredCRC))) {
				t.Fatalf("got %v; want ok %v, else repository.ErrCorrupt and repository.ErrStoredCRC", err, tc.ok)
			}
		})
	}
}

// ChunkCRCs gives the CRCs a committed backup records, as read back.
func TestChunkCRCs(t *testing.T) {
	ctx := t.Context()
	r := repository.New(mem.New())
	a, _ := storeChunks(t, r, []byte(strings.Repeat("x", 100000)+strings.Repeat("y", 100000)))
	b := &manifest.Backup{
		FormatVersion: manifest.FormatVersion, ID: "20260101T000000Z", Label: "t", ToolVersion: "t", PGVersion: 150000,
		SystemID: "7000000000000000001", StartTimeline: 1, EndTimeline: 1, StartLSN: 0x3000028, EndLSN: 0x3000138,
		WALSegmentSize: 16 << 20, Archives: []manifest.Archive{a},
		WAL:              []manifest.WALSegment{{Name: "000000010000000000000003", SHA256: strings.Repeat("0", 64), StoredSize: 1}},
		Totals:           manifest.Totals{RawBytes: a.RawSize, StoredBytes: a.StoredSize, Chunks: len(a.Chunks)},
		Timings:          manifest.Timings{Started: time.Unix(1767225600, 0).UTC(), Finished: time.Unix(1767225660, 0).UTC()},
		Files:            []manifest.File{},
		PGManifestSHA256: strings.Repeat("0", 64),
	}
	data, err := manifest.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store().Put(ctx, repository.BackupManifestKey(b.ID), bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	latest, err := r.BackupWithoutFiles(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	known := repository.ChunkCRCs(latest)
	checked := 0
	for _, c := range a.Chunks {
		if c.StoredCRC32C == nil {
			continue // a repeat within the archive
		}
		checked++
		if crc, ok := known(c.ID); !ok || crc != *c.StoredCRC32C {
			t.Errorf("chunk %s: known %08x %v, recorded %08x", c.ID[:12], crc, ok, *c.StoredCRC32C)
		}
	}
	if checked == 0 {
		t.Fatal("no chunk of the archive has a CRC")
	}
	if _, ok := known(strings.Repeat("f", 64)); ok {
		t.Error("a chunk the backup does not reference is known")
	}
}

// failingPuts fails every Put under a prefix.
type failingPuts struct {
	providers.Store
	prefix string
}

func (f failingPuts) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	if strings.HasPrefix(key, f.prefix) {
		return errors.New("store unavailable")
	}
	return f.Store.Put(ctx, key, body, size, opts)
}

// A copy that fails leaves the chunk where it was: never neither.
func TestQuarantineCopyFails(t *testing.T) {
	ctx := t.Context()
	store := mem.New()
	a, _ := storeChunks(t, repository.New(store), bytes.Repeat([]byte("abc"), 50000))
	r := repository.New(failingPuts{Store: store, prefix: repository.QuarantinePrefix})
	_, err := r.QuarantineChunk(ctx, a.Chunks[0].ID)
	if err == nil || !strings.Contains(err.Error(), "copy to quarantine/chunks/") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v; want one line naming the failed copy", err)
	}
	if _, err := store.Stat(ctx, repository.ChunkKey(a.Chunks[0].ID)); err != nil {
		t.Fatalf("the chunk after a failed quarantine: %v", err)
	}
}
