package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

const seg = 16 << 20

func TestBind(t *testing.T) {
	r := New(mem.New())
	ctx := t.Context()
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatalf("same cluster again: %v", err)
	}
	err := r.Bind(ctx, "7000000000000000002", seg)
	if !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), "7000000000000000001") {
		t.Fatalf("other cluster: %v", err)
	}
	if err := r.Bind(ctx, "7000000000000000001", 64<<20); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("other segment size: %v", err)
	}
}

func TestPutWAL(t *testing.T) {
	r := New(mem.New())
	ctx := t.Context()
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	comp := chunker.NewCompressor()
	name := "000000010000000000000003"
	data := bytes.Repeat([]byte("wal!"), seg/4)
	s1, err := r.PutWAL(ctx, comp, name, data)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := r.PutWAL(ctx, comp, name, data)
	if err != nil || s2 != s1 {
		t.Fatalf("identical again: %+v %v, first %+v", s2, err, s1)
	}
	other := bytes.Clone(data)
	other[12345] ^= 1
	if _, err := r.PutWAL(ctx, comp, name, other); !errors.Is(err, ErrWALConflict) {
		t.Fatalf("different content: %v", err)
	}
	got, _, err := r.FetchWAL(ctx, name)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("FetchWAL after conflict: %v (content kept: %v)", err, bytes.Equal(got, data))
	}
	if ok, err := r.HasWAL(ctx, "000000010000000000000004"); ok || err != nil {
		t.Fatalf("HasWAL of a missing segment: %v %v", ok, err)
	}
	if _, _, err := r.FetchWAL(ctx, "000000010000000000000004"); !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("FetchWAL of a missing segment: %v", err)
	}
	s := r.Store().(*mem.Store)
	s.Corrupt(WALKey(name), 40)
	if _, _, err := r.FetchWAL(ctx, name); err == nil {
		t.Fatal("a corrupt WAL object was read without error")
	}
}

func testBackup(id string) *manifest.Backup {
	return &manifest.Backup{
		FormatVersion:  manifest.FormatVersion,
		ID:             id,
		SystemID:       "7000000000000000001",
		StartTimeline:  1,
		EndTimeline:    1,
		StartLSN:       0x3000028,
		EndLSN:         0x3000100,
		WALSegmentSize: seg,
		WAL:            []manifest.WALSegment{{Name: "000000010000000000000003", SHA256: strings.Repeat("a", 64), StoredSize: 10}},
		Archives:       []manifest.Archive{{Name: "base.tar"}},
		Timings:        manifest.Timings{Started: time.Unix(1700000000, 0).UTC(), Finished: time.Unix(1700000001, 0).UTC()},
	}
}

func TestCommitAndList(t *testing.T) {
	r := New(mem.New())
	ctx := t.Context()
	if _, err := r.Backup(ctx, "latest"); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("latest of an empty repository: %v", err)
	}
	ids := []string{"20261123T100000Z", "20261123T090000Z", "20261124T000000Z"}
	for _, id := range ids {
		if err := r.Commit(ctx, testBackup(id), strings.NewReader("pg manifest of "+id)); err != nil {
			t.Fatal(err)
		}
	}
	// A leftover without manifest.json is not a backup.
	r.Store().Put(ctx, PGManifestKey("20261125T000000Z"), bytes.NewReader([]byte("x")), 1, providers.PutOptions{})
	bs, err := r.Backups(ctx)
	if err != nil || len(bs) != 3 || bs[0].ID != ids[1] || bs[2].ID != ids[2] {
		t.Fatalf("Backups = %v, %v", bs, err)
	}
	latest, err := r.Backup(ctx, "latest")
	if err != nil || latest.ID != ids[2] {
		t.Fatalf("latest = %v, %v", latest, err)
	}
	pgm, err := r.PGManifest(ctx, latest)
	if err != nil || string(pgm) != "pg manifest of "+ids[2] {
		t.Fatalf("PGManifest = %q, %v", pgm, err)
	}
	// Another backup with a taken id.
	if err := r.Commit(ctx, testBackup(ids[0]), strings.NewReader("other")); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("commit with a taken id: %v", err)
	}
	// The same commit retried (its first answer lost) is a success.
	if err := r.Commit(ctx, testBackup(ids[0]), strings.NewReader("pg manifest of "+ids[0])); err != nil {
		t.Fatalf("repeated identical commit: %v", err)
	}
	if _, err := r.Backup(ctx, "nonsense"); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := r.Backup(ctx, "20200101T000000Z"); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("missing id: %v", err)
	}
	// A corrupted backup_manifest is caught by its hash.
	s := r.Store().(*mem.Store)
	s.Corrupt(PGManifestKey(ids[1]), 0)
	b, _ := r.Backup(ctx, ids[1])
	if _, err := r.PGManifest(ctx, b); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt backup_manifest: %v", err)
	}
}

// pgManifestDoc is a minimal backup_manifest, sealed as PostgreSQL does.
func pgManifestDoc() []byte {
	body := "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"PG_VERSION\", \"Size\": 3 }\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n"
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n")
}

func TestPGManifestStreams(t *testing.T) {
	ctx := t.Context()
	store := mem.New()
	r := New(store)
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	ids := []string{"20261123T000000Z", "20261124T000000Z"}
	for _, id := range ids {
		if err := r.Commit(ctx, testBackup(id), bytes.NewReader(pgManifestDoc())); err != nil {
			t.Fatal(err)
		}
	}
	good, err := r.Backup(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if n, err := r.PGManifestTo(ctx, good, &buf); err != nil || n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), pgManifestDoc()) {
		t.Fatalf("PGManifestTo = %d, %v; wrote %d bytes, equal %v", n, err, buf.Len(), bytes.Equal(buf.Bytes(), pgManifestDoc()))
	}
	if pg, err := r.ParsePGManifest(ctx, good); err != nil || len(pg.Files) != 1 {
		t.Fatalf("ParsePGManifest = %+v, %v", pg, err)
	}

	store.Corrupt(PGManifestKey(ids[1]), 5)
	bad, err := r.Backup(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PGManifestTo(ctx, bad, io.Discard); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PGManifestTo of a corrupt backup_manifest: %v, want ErrCorrupt", err)
	}
	if _, err := r.ParsePGManifest(ctx, bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ParsePGManifest of a corrupt backup_manifest: %v, want ErrCorrupt", err)
	}

	// A read that fails is reported as such, not as corruption.
	boom := errors.New("connection reset")
	fr := New(&failingStore{Store: store, err: boom})
	if _, err := fr.ParsePGManifest(ctx, good); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("ParsePGManifest with a failing read: %v, want the read error", err)
	}
	if _, err := fr.Backup(ctx, ids[0]); !errors.Is(err, boom) {
		t.Errorf("Backup with a failing read: %v, want the read error", err)
	}
}

// failingStore returns objects whose reads fail after a few bytes.
type failingStore struct {
	providers.Store
	err error
}

func (s *failingStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 20), iotest.ErrReader(s.err)), rc}, nil
}
