package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

const (
	// bigFile spans ten 64 KiB chunks: its tar record (header and
	// content, no padding) is exactly ten chunks, so all but the first
	// lie whole inside its content.
	bigFile = "base/1/16400"
	bigSize = 10*(64<<10) - 512
)

func deltaFixture(t *testing.T, store providers.Store) *fixture {
	t.Helper()
	return newFixture(t, store, fixtureOptions{extra: []repotest.Member{
		repotest.File("base/1/pg_filenode.map", 14, sealed(repotest.PseudoRandom(6, 508), 512)),
		repotest.File(bigFile, 14, repotest.PseudoRandom(5, bigSize)),
	}})
}

// chunkBytes is the raw size of the chunks holding the paths' content,
// each chunk counted once.
func chunkBytes(b *manifest.Backup, paths ...string) int64 {
	var n int64
	seen := map[[2]int]bool{}
	for _, f := range b.Files {
		if !slices.Contains(paths, f.Path) {
			continue
		}
		offs := b.ChunkOffsets(f.Archive)
		for ci, c := range b.Archives[f.Archive].Chunks {
			if offs[ci] < f.Offset+f.Size && offs[ci]+c.RawSize > f.Offset && !seen[[2]int{f.Archive, ci}] {
				seen[[2]int{f.Archive, ci}] = true
				n += c.RawSize
			}
		}
	}
	return n
}

// restoreFresh restores f's backup normally into a new directory.
func restoreFresh(t *testing.T, f *fixture) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "data")
	if _, err := Run(t.Context(), f.repo, testOptions(target)); err != nil {
		t.Fatal(err)
	}
	return target
}

// checkFullRestore checks that target holds exactly what a restore of f
// (WAL embedded) writes: every member, backup_manifest and the WAL
// segment, and nothing else.
func checkFullRestore(t *testing.T, f *fixture, target string) {
	t.Helper()
	base := f.archives[len(f.archives)-1]
	checkRestored(t, target, base, nil)
	got, err := os.ReadFile(filepath.Join(target, pgManifestPath))
	if err != nil || string(got) != string(f.pgm) {
		t.Errorf("backup_manifest differs from the stored one (err %v)", err)
	}
	if data, err := os.ReadFile(filepath.Join(target, "pg_wal", f.segment)); err != nil || string(data) != string(f.walData) {
		t.Errorf("WAL segment differs (err %v)", err)
	}
	want := []string{pgManifestPath, "pg_wal/" + f.segment}
	for _, m := range base.members {
		want = append(want, strings.TrimSuffix(m.Name, "/"))
	}
	slices.Sort(want)
	var have []string
	err = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != target {
			rel, _ := filepath.Rel(target, p)
			have = append(have, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("entries of %s (-want +got):\n%s", target, diff)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestDeltaRestore(t *testing.T) {
	const chunk = 64 << 10
	outside := filepath.Join(t.TempDir(), "outside")
	for _, tc := range []struct {
		name   string
		check  DeltaCheck
		damage func(t *testing.T, dir string)
		// want: FilesRewritten, EntriesRemoved, BytesFetched (-1: any)
		// besides pg_control, which is always written from the backup,
		// and the raw size of its chunks and of those of the paths in
		// fetchedToo.
		rewritten, removed int
		fetched            int64
		fetchedToo         []string
		fsync              bool // --sync-method fsync, not syncfs
	}{
		{name: "identical", removed: 2},
		{name: "identical size-mtime", check: DeltaSizeMTime, removed: 2},
		{name: "middle chunk of a large file changed", damage: func(t *testing.T, dir string) {
			patch(t, filepath.Join(dir, bigFile), 5*chunk+100, []byte("changed"))
		}, rewritten: 1, removed: 2, fetched: 2 * chunk},
		{name: "large file changed, size-mtime", check: DeltaSizeMTime, damage: func(t *testing.T, dir string) {
			patch(t, filepath.Join(dir, bigFile), 5*chunk+100, []byte("changed"))
			touch(t, filepath.Join(dir, bigFile), time.Now())
		}, rewritten: 1, removed: 2, fetched: 2 * chunk},
		{name: "truncated", damage: func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, bigFile), 3*chunk); err != nil {
				t.Fatal(err)
			}
		}, rewritten: 1, removed: 2, fetched: 8 * chunk},
		{name: "extended", damage: func(t *testing.T, dir string) {
			appendTo(t, filepath.Join(dir, bigFile), []byte("more bytes"))
		}, rewritten: 1, removed: 2, fetched: chunk},
		{name: "missing", damage: func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, "base/1/1259"))
			rm(t, filepath.Join(dir, "base/1/empty"))
			rm(t, filepath.Join(dir, "backup_label"))
		}, rewritten: 3, removed: 2, fetched: -1},
		{name: "extra entries", damage: func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "base/1/99999"), "x")
			writeFile(t, filepath.Join(dir, "junk/a/b"), "x")
			writeFile(t, filepath.Join(dir, "pg_wal/000000020000000000000009"), "old WAL")
			writeFile(t, filepath.Join(dir, "postmaster.pid"), strconv.Itoa(deadPID(t))+"\n/data\n")
			writeFile(t, filepath.Join(dir, "recovery.signal"), "")
		}, removed: 2 + 7, fsync: true},
		{name: "directory where a file belongs", damage: func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, "base/1/empty"))
			writeFile(t, filepath.Join(dir, "base/1/empty/inside"), "x")
		}, rewritten: 1, removed: 2 + 2},
		{name: "symlink where a file belongs", damage: func(t *testing.T, dir string) {
			writeFile(t, outside, "not to be touched")
			rm(t, filepath.Join(dir, "postgresql.auto.conf"))
			if err := os.Symlink(outside, filepath.Join(dir, "postgresql.auto.conf")); err != nil {
				t.Fatal(err)
			}
			rm(t, filepath.Join(dir, "base/1/1259"))
			if err := os.Symlink(outside, filepath.Join(dir, "base/1/1259")); err != nil {
				t.Fatal(err)
			}
		}, rewritten: 2, removed: 2 + 2, fetched: -1, fsync: true},
		// Every valid pg_control or pg_filenode.map has the same
		// CRC32C: these are a later state, which the CRC cannot tell;
		// the map's SHA-256 does.
		{name: "pg_control of a later state, same mtime", damage: func(t *testing.T, dir string) {
			replaceKeepMTime(t, filepath.Join(dir, pgControlPath), testPGControlSeed(testSystemID, 99))
		}, rewritten: 1, removed: 2, fetchedToo: []string{pgControlPath}},
		{name: "pg_control of a later state, moved aside", damage: func(t *testing.T, dir string) {
			replaceKeepMTime(t, filepath.Join(dir, pgControlPath), testPGControlSeed(testSystemID, 99))
			if err := os.Rename(filepath.Join(dir, pgControlPath), filepath.Join(dir, deltaControlPath)); err != nil {
				t.Fatal(err)
			}
		}, rewritten: 1, removed: 2, fetchedToo: []string{pgControlPath}},
		{name: "pg_filenode.map of a later state, same mtime", damage: func(t *testing.T, dir string) {
			replaceKeepMTime(t, filepath.Join(dir, "base/1/pg_filenode.map"), sealed(repotest.PseudoRandom(60, 508), 512))
		}, rewritten: 1, removed: 2, fetchedToo: []string{"base/1/pg_filenode.map"}},
		{name: "pg_filenode.map of a later state, size-mtime", check: DeltaSizeMTime, damage: func(t *testing.T, dir string) {
			replaceKeepMTime(t, filepath.Join(dir, "base/1/pg_filenode.map"), sealed(repotest.PseudoRandom(60, 508), 512))
		}, rewritten: 1, removed: 2, fetchedToo: []string{"base/1/pg_filenode.map"}},
		{name: "modes and times", damage: func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, bigFile), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(dir, "base"), 0o755); err != nil {
				t.Fatal(err)
			}
			touch(t, filepath.Join(dir, "PG_VERSION"), time.Now())
		}, removed: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := deltaFixture(t, mem.New())
			target := restoreFresh(t, f)
			if tc.damage != nil {
				tc.damage(t, target)
			}
			o := testOptions(target)
			o.Delta, o.DeltaCheck = true, tc.check
			if tc.fsync {
				o.SyncMethod = SyncFsync
			}
			res, err := Run(t.Context(), f.repo, o)
			if err != nil {
				t.Fatal(err)
			}
			checkFullRestore(t, f, target)
			if data, err := os.ReadFile(outside); err == nil && string(data) != "not to be touched" {
				t.Errorf("a symlink was followed: %s holds %q", outside, data)
			}
			files := 0
			for _, fl := range f.backup.Files {
				if fl.Type == manifest.TypeFile {
					files++
				}
			}
			// pg_control is kept too: the copy the delta moved aside is
			// the backup's (its recorded SHA-256 says so).
			rewritten := tc.rewritten
			if res.FilesRewritten != rewritten || res.FilesKept != files-rewritten || res.EntriesRemoved != tc.removed ||
				res.Files != files || res.Placeholders != 0 {
				t.Errorf("files kept %d, rewritten %d, removed %d, placeholders %d, files %d; want %d, %d, %d, 0, %d",
					res.FilesKept, res.FilesRewritten, res.EntriesRemoved, res.Placeholders, res.Files,
					files-rewritten, rewritten, tc.removed, files)
			}
			if want := tc.fetched + chunkBytes(f.backup, tc.fetchedToo...); tc.fetched >= 0 && res.BytesFetched != want {
				t.Errorf("fetched %d bytes, want %d", res.BytesFetched, want)
			}
			if tc.rewritten == 0 && res.BytesKept != res.Bytes {
				t.Errorf("kept %d bytes of %d, want all", res.BytesKept, res.Bytes)
			}
		})
	}
}

// replaceKeepMTime gives name new content and its old modification time.
func replaceKeepMTime(t *testing.T, name string, data []byte) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, name, fi.ModTime())
}

func patch(t *testing.T, name string, off int64, data []byte) {
	t.Helper()
	fh, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, name string, data []byte) {
	t.Helper()
	fh, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, name string, tm time.Time) {
	t.Helper()
	if err := os.Chtimes(name, tm, tm); err != nil {
		t.Fatal(err)
	}
}

func rm(t *testing.T, name string) {
	t.Helper()
	if err := os.RemoveAll(name); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshot describes every entry below dir: type, mode, size, mtime,
// content hash or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	s := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(h[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		}
		s[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeltaRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    []string
	}{
		{"running server", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "postmaster.pid"), strconv.Itoa(os.Getpid())+"\n"+dir+"\n")
		}, []string{"a server is running", strconv.Itoa(os.Getpid()), "stop it first"}},
		{"other system identifier", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, pgControlPath), string(testPGControl("7300000000000000999")))
		}, []string{"system identifier", "7300000000000000999", testSystemID}},
		{"other system identifier, moved aside", func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, pgControlPath))
			writeFile(t, filepath.Join(dir, deltaControlPath), string(testPGControl("7300000000000000999")))
		}, []string{"system identifier", "7300000000000000999", testSystemID}},
		{"no PG_VERSION", func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, "PG_VERSION"))
		}, []string{"not a PostgreSQL data directory", "PG_VERSION"}},
		{"no pg_control", func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, pgControlPath))
		}, []string{"not a PostgreSQL data directory", "pg_control"}},
		{"some other directory", func(t *testing.T, dir string) {
			rm(t, dir)
			writeFile(t, filepath.Join(dir, "notes.txt"), "mine")
		}, []string{"not a PostgreSQL data directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := deltaFixture(t, mem.New())
			target := restoreFresh(t, f)
			tc.prepare(t, target)
			before := snapshot(t, target)
			o := testOptions(target)
			o.Delta = true
			_, err := Run(t.Context(), f.repo, o)
			if err == nil {
				t.Fatal("delta restore was not refused")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if diff := cmp.Diff(before, snapshot(t, target)); diff != "" {
				t.Errorf("a refused delta restore changed the directory (-before +after):\n%s", diff)
			}
		})
	}
}

// TestDeltaIntoEmpty: with nothing there, a delta restore is a normal one.
func TestDeltaIntoEmpty(t *testing.T) {
	f := deltaFixture(t, mem.New())
	for _, mk := range []bool{false, true} {
		target := filepath.Join(t.TempDir(), "data")
		if mk {
			mkdir(t, target)
		}
		o := testOptions(target)
		o.Delta = true
		res, err := Run(t.Context(), f.repo, o)
		if err != nil {
			t.Fatal(err)
		}
		checkFullRestore(t, f, target)
		if res.BytesFetched != f.backup.Totals.RawBytes || res.FilesKept != 0 {
			t.Errorf("fetched %d bytes, kept %d files; want every chunk (%d bytes), none kept", res.BytesFetched, res.FilesKept, f.backup.Totals.RawBytes)
		}
	}
}

// TestDeltaInterrupted: a delta restore cancelled while it downloads
// leaves a directory without pg_control, which a second run completes.
func TestDeltaInterrupted(t *testing.T) {
	f := deltaFixture(t, mem.New())
	target := restoreFresh(t, f)
	patch(t, filepath.Join(target, bigFile), 3*(64<<10), []byte("changed"))
	rm(t, filepath.Join(target, "base/1/1259"))

	bs := &blockingStore{Store: f.store, started: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		<-bs.started
		cancel()
	}()
	o := testOptions(target)
	o.Delta = true
	_, err := Run(ctx, repository.New(bs), o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "run the delta restore again") {
		t.Errorf("error %q does not say to run the delta restore again", err)
	}
	checkNoPGControl(t, target, "cancellation")
	if _, err := os.Stat(filepath.Join(target, deltaControlPath)); err != nil {
		t.Errorf("the moved-aside pg_control is gone: %v", err)
	}
	if _, err := Run(t.Context(), f.repo, o); err != nil {
		t.Fatal(err)
	}
	checkFullRestore(t, f, target)
}

// countingStore records the keys read.
type countingStore struct {
	providers.Store
	mu   sync.Mutex
	gets map[string]int
}

func (s *countingStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets[key]++
	s.mu.Unlock()
	return s.Store.Get(ctx, key, offset, length)
}

func TestDeltaFetchesEachChunkOnce(t *testing.T) {
	f := deltaFixture(t, mem.New())
	target := filepath.Join(t.TempDir(), "data")
	mkdir(t, target)
	writeFile(t, filepath.Join(target, "PG_VERSION"), "15\n")
	writeFile(t, filepath.Join(target, pgControlPath), string(testPGControl(testSystemID)))
	cs := &countingStore{Store: f.store, gets: map[string]int{}}
	o := testOptions(target)
	o.Delta = true
	res, err := Run(t.Context(), repository.New(cs), o)
	if err != nil {
		t.Fatal(err)
	}
	checkFullRestore(t, f, target)
	n := 0
	for k, c := range cs.gets {
		if strings.HasPrefix(k, repository.ChunksPrefix) {
			n++
			if c != 1 {
				t.Errorf("%s read %d times", k, c)
			}
		}
	}
	wantN, wantBytes := contentChunks(f.backup)
	if n != wantN || res.BytesFetched != wantBytes {
		t.Errorf("%d chunks, %d bytes fetched; want %d, %d", n, res.BytesFetched, wantN, wantBytes)
	}
}

// contentChunks counts the chunks of b that hold some file's content
// (not only tar headers or the trailer), and their raw bytes.
func contentChunks(b *manifest.Backup) (int, int64) {
	n, bytes := 0, int64(0)
	for ai, a := range b.Archives {
		offs := b.ChunkOffsets(ai)
		for ci, c := range a.Chunks {
			for _, f := range b.Files {
				if f.Archive == ai && f.Size > 0 && f.Offset < offs[ci]+c.RawSize && f.Offset+f.Size > offs[ci] {
					n++
					bytes += c.RawSize
					break
				}
			}
		}
	}
	return n, bytes
}

// databaseFixture has two user databases besides template1 (oid 1): app
// (16384) and other (16385), whose large relation file spans several
// whole chunks.
func databaseFixture(t *testing.T, store providers.Store) *fixture {
	t.Helper()
	return newFixture(t, store, fixtureOptions{extra: []repotest.Member{
		repotest.File("global/1262", 15, repotest.PseudoRandom(10, 8192)),
		repotest.File("global/1262.1", 15, repotest.PseudoRandom(11, 8192)),
		repotest.Dir("pg_xact/", 15),
		repotest.File("pg_xact/0000", 15, repotest.PseudoRandom(12, 8192)),
		repotest.Dir("base/16384/", 16),
		repotest.File("base/16384/PG_VERSION", 16, []byte("15\n")),
		repotest.File("base/16384/2600", 16, repotest.PseudoRandom(13, 3*8192)),
		repotest.Dir("base/16385/", 17),
		repotest.File("base/16385/PG_VERSION", 17, []byte("15\n")),
		repotest.File("base/16385/pg_filenode.map", 17, repotest.PseudoRandom(14, 512)),
		repotest.File("base/16385/3000", 17, repotest.PseudoRandom(15, 6*(64<<10)-512)),
		repotest.File("base/16385/3000_fsm", 17, repotest.PseudoRandom(16, 3*8192)),
	}})
}

// fakeDatabases stands in for pgdata.Databases: it checks it is given
// pg_database's segments in order and pg_xact, and names the fixture's
// databases.
func fakeDatabases(f *fixture) func([]byte, pgdata.XactStatusFunc) ([]pgdata.Database, error) {
	data := func(name string) []byte {
		for _, m := range f.archives[len(f.archives)-1].members {
			if m.Name == name {
				return m.Data
			}
		}
		return nil
	}
	return func(pgDatabase []byte, xact pgdata.XactStatusFunc) ([]pgdata.Database, error) {
		if want := append(slices.Clone(data("global/1262")), data("global/1262.1")...); !bytes.Equal(pgDatabase, want) {
			return nil, errors.New("pg_database is not global/1262 and global/1262.1 in order")
		}
		if x, err := xact("0000"); err != nil || !bytes.Equal(x, data("pg_xact/0000")) {
			return nil, fmt.Errorf("pg_xact/0000 differs (%v)", err)
		}
		if _, err := xact("0001"); !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pg_xact/0001: %v, want fs.ErrNotExist", err)
		}
		return []pgdata.Database{{OID: 1, Name: "template1"}, {OID: 4, Name: "template0"}, {OID: 5, Name: "postgres"},
			{OID: 16384, Name: "app"}, {OID: 16385, Name: "other"}}, nil
	}
}

func TestRestoreDatabases(t *testing.T) {
	f := databaseFixture(t, mem.New())
	cs := &countingStore{Store: f.store, gets: map[string]int{}}
	target := filepath.Join(t.TempDir(), "data")
	o := testOptions(target)
	o.Databases = []string{"app"}
	o.listDatabases = fakeDatabases(f)
	res, err := Run(t.Context(), repository.New(cs), o)
	if err != nil {
		t.Fatal(err)
	}
	placeholders := map[string]bool{"base/16385/3000": true, "base/16385/3000_fsm": true, "base/16385/pg_filenode.map": true}
	checkRestored(t, target, f.archives[len(f.archives)-1], placeholders)
	for _, fl := range f.backup.Files {
		if !placeholders[fl.Path] {
			continue
		}
		fi, err := os.Stat(filepath.Join(target, fl.Path))
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(target, fl.Path))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != fl.Size || strings.Trim(string(data), "\x00") != "" || fi.Mode().Perm() != 0o600 ||
			!fi.ModTime().Equal(time.Unix(fl.MTime, 0)) {
			t.Errorf("placeholder %s: %d bytes (want %d of zeros), mode %v, mtime %v", fl.Path, len(data), fl.Size, fi.Mode(), fi.ModTime())
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= fl.Size {
			t.Errorf("placeholder %s is not sparse: %d blocks", fl.Path, st.Blocks)
		}
		// The chunks that hold nothing but placeholder content must not
		// have been downloaded.
		offs := f.backup.ChunkOffsets(fl.Archive)
		for ci, c := range f.backup.Archives[fl.Archive].Chunks {
			if offs[ci] >= fl.Offset && offs[ci]+c.RawSize <= fl.Offset+fl.Size && cs.gets[repository.ChunkKey(c.ID)] > 0 {
				t.Errorf("chunk %d of %s, all placeholder content, was downloaded", ci, fl.Path)
			}
		}
	}
	if res.Placeholders != 3 || res.FilesKept != 0 || res.EntriesRemoved != 0 {
		t.Errorf("placeholders %d, kept %d, removed %d; want 3, 0, 0", res.Placeholders, res.FilesKept, res.EntriesRemoved)
	}
	if res.BytesFetched >= f.backup.Totals.RawBytes-5*(64<<10) {
		t.Errorf("fetched %d of %d bytes: the placeholder's chunks were downloaded", res.BytesFetched, f.backup.Totals.RawBytes)
	}
	if data, err := os.ReadFile(filepath.Join(target, "pg_wal", f.segment)); err != nil || !bytes.Equal(data, f.walData) {
		t.Errorf("WAL segment differs (err %v)", err)
	}
}

func TestRestoreDatabasesRefusals(t *testing.T) {
	f := databaseFixture(t, mem.New())
	for _, tc := range []struct {
		name  string
		edit  func(o *Options)
		want  error
		words []string
	}{
		{"unknown database", func(o *Options) { o.Databases = []string{"app", "nosuch"} }, nil,
			[]string{`"nosuch"`, "app, other, postgres, template0, template1"}},
		{"with delta", func(o *Options) { o.Databases = []string{"app"}; o.Delta = true }, ErrDeltaWithDatabases, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "data")
			o := testOptions(target)
			o.listDatabases = fakeDatabases(f)
			tc.edit(&o)
			_, err := Run(t.Context(), f.repo, o)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("target created: %v", err)
			}
		})
	}
}

// TestDeltaTablespace: a tablespace's directory, remapped or not, is
// refreshed like the data directory, and its link made anew.
func TestDeltaTablespace(t *testing.T) {
	for _, remap := range []bool{false, true} {
		t.Run(fmt.Sprintf("remap=%v", remap), func(t *testing.T) {
			loc := filepath.Join(t.TempDir(), "ts")
			f := newFixture(t, mem.New(), fixtureOptions{tablespace: loc})
			target := filepath.Join(t.TempDir(), "data")
			o := testOptions(target)
			tsDir := loc
			if remap {
				tsDir = filepath.Join(t.TempDir(), "moved")
				o.Tablespaces = map[uint32]string{testTSOID: tsDir}
			}
			if _, err := Run(t.Context(), f.repo, o); err != nil {
				t.Fatal(err)
			}
			patch(t, filepath.Join(tsDir, "PG_15_202209061/5/16385"), 5000, []byte("changed"))
			writeFile(t, filepath.Join(tsDir, "PG_15_202209061/5/99999"), "extra")
			rm(t, filepath.Join(target, "pg_tblspc", strconv.Itoa(testTSOID)))
			o.Delta = true
			res, err := Run(t.Context(), f.repo, o)
			if err != nil {
				t.Fatal(err)
			}
			checkRestored(t, tsDir, f.archives[0], nil)
			skip := map[string]bool{}
			if remap {
				skip[tablespaceMapPath] = true
				if _, err := os.Lstat(filepath.Join(target, tablespaceMapPath)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("tablespace_map kept with a remapped tablespace: %v", err)
				}
			}
			checkRestored(t, target, f.archives[1], skip)
			if _, err := os.Stat(filepath.Join(tsDir, "PG_15_202209061/5/99999")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("extra file in the tablespace kept: %v", err)
			}
			if l, err := os.Readlink(filepath.Join(target, "pg_tblspc", strconv.Itoa(testTSOID))); err != nil || l != tsDir {
				t.Errorf("pg_tblspc link: %q, %v; want %s", l, err, tsDir)
			}
			if res.FilesRewritten != 1 || res.EntriesRemoved != 3 {
				t.Errorf("rewritten %d, removed %d; want 1 (the file; pg_control is the backup's), 3 (backup_manifest, the WAL segment, the extra file)", res.FilesRewritten, res.EntriesRemoved)
			}
		})
	}
}

// TestDeltaEncrypted: in an encrypted repository a chunk's id is a keyed
// hash, which the comparison of local bytes must use too.
func TestDeltaEncrypted(t *testing.T) {
	key, err := encryption.ParseKey([]byte(strings.Repeat("ab", 32)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, mem.New(), fixtureOptions{key: key, extra: []repotest.Member{
		repotest.File(bigFile, 14, repotest.PseudoRandom(5, bigSize)),
	}})
	target := restoreFresh(t, f)
	patch(t, filepath.Join(target, bigFile), 7*(64<<10), []byte("changed"))
	o := testOptions(target)
	o.Delta = true
	res, err := Run(t.Context(), f.repo, o)
	if err != nil {
		t.Fatal(err)
	}
	checkFullRestore(t, f, target)
	want := int64(2 * (64 << 10))
	if res.BytesFetched != want || res.FilesRewritten != 1 {
		t.Errorf("fetched %d bytes, rewrote %d files; want %d, 1 (the file; pg_control is the backup's)", res.BytesFetched, res.FilesRewritten, want)
	}
}

// TestDeltaWALFetch: with --wal fetch a repeated delta restore leaves one
// restore_command and recovery.signal, and no WAL in pg_wal/.
func TestDeltaWALFetch(t *testing.T) {
	f := deltaFixture(t, mem.New())
	target := restoreFresh(t, f)
	o := testOptions(target)
	o.Delta, o.WAL, o.RestoreCommand = true, WALFetch, "pgstow wal-fetch %f %p"
	for range 2 {
		if _, err := Run(t.Context(), f.repo, o); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(target, autoConf))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(conf), "restore_command"); n != 1 {
		t.Errorf("%s has %d restore_command lines, want 1:\n%s", autoConf, n, conf)
	}
	if _, err := os.Stat(filepath.Join(target, "recovery.signal")); err != nil {
		t.Errorf("recovery.signal: %v", err)
	}
	if names := dirEntries(t, filepath.Join(target, "pg_wal")); !slices.Equal(names, []string{"archive_status"}) {
		t.Errorf("pg_wal holds %v, want archive_status alone", names)
	}
}

// The files PostgreSQL seals with a CRC32C in sealedFixture, by archive
// ("" for the data directory, "ts" for the tablespace), and the length
// of their content before the CRC and the zero padding.
var sealedPaths = []struct {
	archive, path string
	data          int
}{
	{"", "global/pg_filenode.map", 508},
	{"", "base/1/pg_filenode.map", 508},
	{"", "pg_twophase/000002E5", 200},
	{"", "pg_logical/replorigin_checkpoint", 12},
	{"ts", "PG_15_202209061/5/pg_filenode.map", 508},
}

// sealedFixture is a backup with every kind of file PostgreSQL seals
// with a CRC32C, a tablespace at loc included.
func sealedFixture(t *testing.T, loc string, edit func(*manifest.Backup)) *fixture {
	t.Helper()
	return newFixture(t, mem.New(), fixtureOptions{tablespace: loc, edit: edit,
		extra: []repotest.Member{
			repotest.File("global/pg_filenode.map", 14, sealed(repotest.PseudoRandom(6, 508), 512)),
			repotest.File("base/1/pg_filenode.map", 14, sealed(repotest.PseudoRandom(7, 508), 512)),
			repotest.Dir("pg_twophase/", 14),
			repotest.File("pg_twophase/000002E5", 14, sealed(repotest.PseudoRandom(8, 200), 208)),
			repotest.Dir("pg_logical/", 14),
			repotest.File("pg_logical/replorigin_checkpoint", 14, sealed(repotest.PseudoRandom(9, 12), 16)),
		},
		tablespaceExtra: []repotest.Member{
			repotest.File("PG_15_202209061/5/pg_filenode.map", 23, sealed(repotest.PseudoRandom(10, 508), 512)),
		},
	})
}

// TestDeltaSealedFiles: a file PostgreSQL seals with a CRC32C has the
// same CRC32C in every valid version, so the backup records its SHA-256:
// a delta restore keeps such a file when that matches (onto an identical
// directory, only pg_control's chunks are fetched, as it is always written
// from the backup), replaces an older version of the same size and mtime,
// and, from a manifest without the SHA-256 (before format 1.2), fetches
// every such file as before.
func TestDeltaSealedFiles(t *testing.T) {
	all := []string{pgControlPath}
	for _, s := range sealedPaths {
		all = append(all, s.path)
	}
	type testCase struct {
		name  string
		check DeltaCheck
		old   bool // the manifest as pgstow wrote it before format 1.2
		// replace is the sealed file (index into sealedPaths; -1: none)
		// given another valid version of the same size and mtime.
		replace   int
		rewritten int      // besides pg_control
		fetched   []string // besides pg_control, the paths whose chunks are fetched
	}
	tests := []testCase{
		{name: "identical", replace: -1},
		{name: "identical size-mtime", check: DeltaSizeMTime, replace: -1},
		{name: "identical, manifest 1.1", old: true, replace: -1, rewritten: len(sealedPaths), fetched: all[1:]},
		{name: "identical size-mtime, manifest 1.1", check: DeltaSizeMTime, old: true, replace: -1, rewritten: len(sealedPaths), fetched: all[1:]},
	}
	for i, s := range sealedPaths {
		tests = append(tests,
			testCase{name: "older " + s.path, replace: i, rewritten: 1, fetched: []string{s.path}},
			testCase{name: "older " + s.path + ", size-mtime", check: DeltaSizeMTime, replace: i, rewritten: 1, fetched: []string{s.path}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loc := filepath.Join(t.TempDir(), "ts")
			var edit func(*manifest.Backup)
			if tc.old {
				edit = func(b *manifest.Backup) {
					b.FormatVersion = "1.1"
					for i := range b.Files {
						b.Files[i].SHA256 = ""
					}
				}
			}
			f := sealedFixture(t, loc, edit)
			checkSealedRecorded(t, f.backup, !tc.old)
			target := restoreFresh(t, f)
			if tc.replace >= 0 {
				s := sealedPaths[tc.replace]
				dir := target
				if s.archive == "ts" {
					dir = loc
				}
				name := filepath.Join(dir, s.path)
				old, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				older := sealed(repotest.PseudoRandom(99, s.data), len(old))
				if crc32.Checksum(older, manifest.Castagnoli) != crc32.Checksum(old, manifest.Castagnoli) {
					t.Fatal("the older version's CRC32C differs: it would not test what it means to")
				}
				replaceKeepMTime(t, name, older)
			}
			o := testOptions(target)
			o.Delta, o.DeltaCheck = true, tc.check
			res, err := Run(t.Context(), f.repo, o)
			if err != nil {
				t.Fatal(err)
			}
			checkRestored(t, loc, f.archives[0], nil)
			checkRestored(t, target, f.archives[1], nil)
			files := 0
			for _, fl := range f.backup.Files {
				if fl.Type == manifest.TypeFile {
					files++
				}
			}
			rewritten, fetched := tc.rewritten, tc.fetched
			if tc.old {
				// No recorded SHA-256: pg_control is fetched too.
				rewritten, fetched = rewritten+1, append(fetched, pgControlPath)
			}
			if res.FilesRewritten != rewritten || res.FilesKept != files-rewritten {
				t.Errorf("files rewritten %d, kept %d; want %d, %d", res.FilesRewritten, res.FilesKept, rewritten, files-rewritten)
			}
			want := chunkBytes(f.backup, fetched...)
			if res.BytesFetched != want {
				t.Errorf("fetched %d bytes, want %d (the chunks of %v)", res.BytesFetched, want, fetched)
			}
			if len(fetched) == 1 && want >= chunkBytes(f.backup, all...) {
				t.Fatalf("the chunks of %v (%d bytes) hold all the sealed files: the test cannot tell kept from fetched", fetched, want)
			}
		})
	}
}

// checkSealedRecorded checks that b records the SHA-256 of the content of
// the files PostgreSQL seals with a CRC32C, as in the tar (want), and of
// no other file.
func checkSealedRecorded(t *testing.T, b *manifest.Backup, want bool) {
	t.Helper()
	n := 0
	for _, f := range b.Files {
		ts := b.Archives[f.Archive].TablespaceOID != 0
		switch {
		case f.Type == manifest.TypeFile && want && pgdata.SealedByCRC(ts, f.Path):
			n++
			if !isHexSHA256(f.SHA256) {
				t.Errorf("%s: sha256 %q, want one", f.Path, f.SHA256)
			}
		case f.SHA256 != "":
			t.Errorf("%s: sha256 %q recorded, want none", f.Path, f.SHA256)
		}
	}
	if want && n != len(sealedPaths)+1 {
		t.Errorf("%d files with a sha256, want %d", n, len(sealedPaths)+1)
	}
}

func isHexSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}
