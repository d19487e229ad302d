package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

func TestFetchWALPrefetch(t *testing.T) {
	const seg = 1 << 20
	store := mem.New()
	repo := repository.New(store)
	ctx := t.Context()
	if err := repo.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	comp := chunker.NewCompressor()
	content := func(no uint64) []byte { return bytes.Repeat([]byte{byte(no)}, seg) }
	for no := uint64(1); no <= 10; no++ {
		if _, err := repo.PutWAL(ctx, comp, manifest.SegmentName(1, no, seg), content(no)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	p := Prefetch{Ahead: 4, Spool: filepath.Join(dir, "spool")}
	dest := filepath.Join(dir, "RECOVERYXLOG")
	fetch := func(no uint64) error {
		return FetchWALPrefetch(ctx, repo, manifest.SegmentName(1, no, seg), dest, p)
	}
	if err := fetch(1); err != nil {
		t.Fatal(err)
	}
	for no := uint64(2); no <= 5; no++ {
		if _, err := os.Stat(filepath.Join(p.Spool, manifest.SegmentName(1, no, seg)+spoolSuffix)); err != nil {
			t.Fatalf("segment %d not prefetched: %v", no, err)
		}
	}
	// Segment 2 is served from the spool: the store no longer has it.
	store.Delete(ctx, repository.WALKey(manifest.SegmentName(1, 2, seg)))
	if err := fetch(2); err != nil {
		t.Fatalf("fetch from the spool: %v", err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, content(2)) {
		t.Fatal("the spooled segment has other content")
	}
	// A damaged spool file is not used.
	damaged := filepath.Join(p.Spool, manifest.SegmentName(1, 3, seg)+spoolSuffix)
	os.WriteFile(damaged, []byte("short"), 0o600)
	if err := fetch(3); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, content(3)) {
		t.Fatal("a damaged spool file was served")
	}
	for no := uint64(4); no <= 10; no++ {
		if err := fetch(no); err != nil {
			t.Fatalf("segment %d: %v", no, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, content(no)) {
			t.Fatalf("segment %d: other content", no)
		}
	}
	// The end of the archive: not found, and the spool is gone.
	if err := fetch(11); !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("past the end: %v", err)
	}
	if _, err := os.Stat(p.Spool); !os.IsNotExist(err) {
		t.Fatal("the spool was left behind at the end of the archive")
	}
}
