package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/uploader"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openFileRepo(t *testing.T, dir string) *repository.Repository {
	t.Helper()
	return repository.New(openFileStore(t, dir))
}

// openFileStore opens the file store under dir, for tests that put
// something between the repository and its store.
func openFileStore(t *testing.T, dir string) providers.Store {
	t.Helper()
	s, err := file.Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func backupOpts(t *testing.T, c *pgtest.Cluster) backup.Options {
	return backup.Options{
		DSN:            c.DSN("postgres"),
		Label:          t.Name(),
		FastCheckpoint: true,
		WALTimeout:     2 * time.Minute,
		ToolVersion:    "test",
		Log:            testLogger(t),
		// Small chunks exercise the packing and cutting with a small
		// database.
		Uploader: uploader.Config{ChunkSize: 1 << 20, Concurrency: 4},
	}
}

// TestBackupUnderLoad backs a database up while pgbench writes to it, on
// every supported major, and checks the repository independently of the
// code that wrote it: chunk ids, PostgreSQL's manifest, and the WAL.
func TestBackupUnderLoad(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major})
			c.Exec(t, "postgres", "CREATE TABLESPACE ts1 LOCATION '"+tablespaceDir(t, c)+"'")
			c.Exec(t, "postgres", "CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
			c.Pgbench(t, "-i", "-s", "5", "postgres")
			stop := c.StartPgbenchLoad(t, "postgres", 2)
			repo := openFileRepo(t, t.TempDir())
			b, err := backup.Run(t.Context(), repo, backupOpts(t, c))
			stop()
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			if len(b.Archives) != 2 || len(b.Tablespaces) != 1 {
				t.Fatalf("archives %d, tablespaces %d: want base.tar and one tablespace", len(b.Archives), len(b.Tablespaces))
			}
			verifyRepository(t, repo, b)

			got, err := repo.Backups(t.Context())
			if err != nil || len(got) != 1 || got[0].ID != b.ID {
				t.Fatalf("Backups() = %v, %v; want the one backup", got, err)
			}
		})
	}
}

// tablespaceDir makes a directory the server user owns, for a tablespace.
func tablespaceDir(t *testing.T, c *pgtest.Cluster) string {
	dir := filepath.Join(c.Dir, "ts1")
	c.Exec(t, "postgres", "SELECT 1") // the server is up
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("chown %s: %v %s", dir, err, out)
		}
	}
	return dir
}

// verifyRepository checks a committed backup the slow, independent way.
func verifyRepository(t *testing.T, repo *repository.Repository, b *manifest.Backup) {
	t.Helper()
	ctx := t.Context()
	pgmData, err := repo.PGManifest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	pgm, err := manifest.ParsePGManifest(pgmData)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]manifest.PGFile{}
	for _, f := range pgm.Files {
		want[f.Path] = f
	}
	seen := 0
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for _, a := range b.Archives {
		// Decompress the chunks one by one, checking each id, and read the
		// concatenation with the standard library's tar reader.
		pr, pw := io.Pipe()
		go func() {
			pw.CloseWithError(writeArchive(ctx, repo, a, pw))
		}()
		tr := tar.NewReader(pr)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("archive %s: %v", a.Name, err)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			crc := crc32.New(castagnoli)
			n, err := io.Copy(crc, tr)
			if err != nil {
				t.Fatalf("archive %s: %s: %v", a.Name, h.Name, err)
			}
			path := h.Name
			if a.TablespaceOID != 0 {
				path = fmt.Sprintf("pg_tblspc/%d/%s", a.TablespaceOID, h.Name)
			}
			if strings.HasPrefix(path, "pg_wal/") {
				continue
			}
			pf, ok := want[path]
			if !ok {
				t.Errorf("%s is in the archive but not in PostgreSQL's manifest", path)
				continue
			}
			if pf.Size != n {
				t.Errorf("%s: %d bytes, manifest says %d", path, n, pf.Size)
			}
			if pf.ChecksumAlgorithm != "CRC32C" {
				t.Fatalf("%s: checksum algorithm %q, want CRC32C", path, pf.ChecksumAlgorithm)
			}
			wantCRC, err := manifest.PGChecksumCRC32C(pf.Checksum)
			if err != nil {
				t.Fatal(err)
			}
			if crc.Sum32() != wantCRC {
				t.Errorf("%s: CRC32C %08x, manifest says %08x", path, crc.Sum32(), wantCRC)
			}
			seen++
		}
		io.Copy(io.Discard, pr)
	}
	if seen != len(pgm.Files) {
		t.Errorf("matched %d files, PostgreSQL's manifest lists %d", seen, len(pgm.Files))
	}
	// WAL: exactly the segments the rule names, each stored intact.
	names, err := manifest.RequiredSegments(b.StartTimeline, b.StartLSN, b.EndLSN, b.WALSegmentSize)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range b.WAL {
		got = append(got, w.Name)
		data, _, err := repo.FetchWAL(ctx, w.Name)
		if err != nil {
			t.Fatalf("WAL %s: %v", w.Name, err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != w.SHA256 || uint64(len(data)) != b.WALSegmentSize {
			t.Errorf("WAL %s: %d bytes, sha256 %x; manifest says %s", w.Name, len(data), sum, w.SHA256)
		}
	}
	if !slices.Equal(got, names) || len(names) == 0 {
		t.Errorf("WAL in manifest %v, required %v", got, names)
	}
}

// writeArchive writes an archive's chunks, decompressed and verified
// against their ids, to w.
func writeArchive(ctx context.Context, repo *repository.Repository, a manifest.Archive, w io.Writer) error {
	d := chunker.NewDecompressor()
	var buf bytes.Buffer
	var stored []byte
	for _, c := range a.Chunks {
		data, err := repo.DownloadChunk(ctx, c, &stored)
		if err != nil {
			return err
		}
		if int64(len(data)) != c.StoredSize {
			return fmt.Errorf("chunk %s: stored %d bytes, manifest says %d", c.ID, len(data), c.StoredSize)
		}
		buf.Reset()
		if err := d.Decompress(&buf, data, c.ID); err != nil {
			return err
		}
		if int64(buf.Len()) != c.RawSize {
			return fmt.Errorf("chunk %s: %d bytes, manifest says %d", c.ID, buf.Len(), c.RawSize)
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// TestChunksAreStandardLZ4 proves the claim that lets people restore
// without pgstow: the stored chunks of an archive, concatenated and
// decompressed by the lz4 command, are the original tar.
func TestChunksAreStandardLZ4(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	dir := t.TempDir()
	repo := openFileRepo(t, dir)
	b, err := backup.Run(t.Context(), repo, backupOpts(t, c))
	if err != nil {
		t.Fatal(err)
	}
	a := b.Archives[0]
	var files []string
	for _, ch := range a.Chunks {
		files = append(files, filepath.Join(dir, repository.ChunkKey(ch.ID)))
	}
	cmd := exec.Command("sh", "-c", `cat "$@" | lz4 -dc`, "sh")
	cmd.Args = append(cmd.Args, files...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 -dc: %v", err)
	}
	var ours bytes.Buffer
	if err := writeArchive(t.Context(), repo, a, &ours); err != nil {
		t.Fatal(err)
	}
	if int64(len(out)) != a.RawSize || !bytes.Equal(out, ours.Bytes()) {
		t.Fatalf("lz4 -dc gave %d bytes, archive is %d", len(out), a.RawSize)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	h, err := tr.Next()
	if err != nil || h.Name != "backup_label" {
		t.Fatalf("first member %v, %v; want backup_label", h, err)
	}
}

// TestDedupSecondBackup: a second backup of an unchanged idle database
// stores less than a tenth of the first one's bytes again. Autovacuum is
// off: its first round, a minute after the start, would change pages
// between the two backups when the machine is slow.
func TestDedupSecondBackup(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{"autovacuum = off"}})
	c.Pgbench(t, "-i", "-s", "10", "postgres")
	c.Exec(t, "postgres", "VACUUM (FREEZE, ANALYZE)")
	c.Exec(t, "postgres", "CHECKPOINT")
	repo := openFileRepo(t, t.TempDir())
	o := backupOpts(t, c)
	o.Uploader = uploader.Config{} // the defaults users get
	first, err := backup.Run(t.Context(), repo, o)
	if err != nil {
		t.Fatal(err)
	}
	second, err := backup.Run(t.Context(), repo, o)
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(second.Totals.NewBytes) / float64(first.Totals.StoredBytes)
	t.Logf("first: %d raw, %d stored, %d new; second: %d new of %d stored (%.2f%%)",
		first.Totals.RawBytes, first.Totals.StoredBytes, first.Totals.NewBytes,
		second.Totals.NewBytes, second.Totals.StoredBytes, 100*ratio)
	if first.Totals.NewBytes != first.Totals.StoredBytes {
		t.Errorf("first backup into an empty repository uploaded %d of %d bytes", first.Totals.NewBytes, first.Totals.StoredBytes)
	}
	if ratio >= 0.10 {
		t.Fatalf("second backup stored %.1f%% new bytes, want < 10%%", 100*ratio)
	}
	if first.ID == second.ID {
		t.Fatalf("both backups have id %s", first.ID)
	}
	verifyRepository(t, repo, second)
}
