package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
)

// TestServerCompression: archives the server compresses are decompressed
// on arrival and stored exactly as an uncompressed backup would be.
func TestServerCompression(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	for _, codec := range []string{"lz4", "zstd", "gzip"} {
		t.Run(codec, func(t *testing.T) {
			repo := openFileRepo(t, t.TempDir())
			o := backupOpts(t, c)
			o.Compression = codec
			b, err := backup.Run(t.Context(), repo, o)
			if err != nil {
				t.Fatal(err)
			}
			verifyRepository(t, repo, b)
		})
	}
}

// TestSegmentNamesMatchServer checks our LSN and segment arithmetic
// against the server's own pg_walfile_name and pg_lsn parsing.
func TestSegmentNamesMatchServer(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	lsns := []string{"0/0", "0/1", "0/FFFFFF", "0/1000000", "0/3000028", "1/0", "1/FF000000", "5/ABCDEF12", "FF/FFFFFFFF", "123/4567890A"}
	for _, s := range lsns {
		row := c.Query(t, "postgres", fmt.Sprintf("SELECT pg_walfile_name('%s'::pg_lsn), ('%s'::pg_lsn - '0/0'::pg_lsn)::text", s, s))[0]
		lsn, err := manifest.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(uint64(lsn)) != row[1] {
			t.Errorf("ParseLSN(%s) = %d, server says %s", s, uint64(lsn), row[1])
		}
		// pg_walfile_name names the segment holding lsn-1 when lsn is on a
		// boundary, i.e. XLByteToPrevSeg, on the server's timeline 1.
		want := row[0]
		got := manifest.SegmentName(1, manifest.PrevSegmentNo(lsn, 16<<20), 16<<20)
		if lsn == 0 {
			continue // the server special-cases 0
		}
		if got != want {
			t.Errorf("segment of %s: %s, server says %s", s, got, want)
		}
	}
}

// TestWALNone: with --wal=none the backup waits, bounded, for another
// archiver to store the WAL, names what is missing when it does not, and
// commits when it does.
func TestWALNone(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")

	t.Run("missing", func(t *testing.T) {
		repo := openFileRepo(t, t.TempDir())
		o := backupOpts(t, c)
		o.WAL = backup.WALNone
		o.WALTimeout = 3 * time.Second
		_, err := backup.Run(t.Context(), repo, o)
		if err == nil || !strings.Contains(err.Error(), "still missing: 0000000") || !strings.Contains(err.Error(), "--wal=none") {
			t.Fatalf("error %v, want one naming the missing segments", err)
		}
		if bs, _ := repo.Backups(t.Context()); len(bs) != 0 {
			t.Fatalf("a backup was committed without its WAL")
		}
	})

	t.Run("archived by another process", func(t *testing.T) {
		repo := openFileRepo(t, t.TempDir())
		// Stand in for archive_command: copy completed segments from the
		// server's pg_wal into the repository while the backup waits.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			comp := chunker.NewCompressor()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				cur := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
				names, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "0000000*"))
				for _, p := range names {
					n := filepath.Base(p)
					if len(n) != 24 || n >= cur {
						continue
					}
					if ok, _ := repo.HasWAL(ctx, n); ok {
						continue
					}
					data, err := os.ReadFile(p)
					if err == nil {
						repo.PutWAL(ctx, comp, n, data)
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
		o := backupOpts(t, c)
		o.WAL = backup.WALNone
		o.WALTimeout = time.Minute
		b, err := backup.Run(t.Context(), repo, o)
		cancel()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		verifyRepository(t, repo, b)
	})
}
