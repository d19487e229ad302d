package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

func TestFetchWAL(t *testing.T) {
	history := []byte("1\t0/3000000\tno recovery target specified\n")
	short := manifest.SegmentName(1, 9, testSegSize)
	for _, tc := range []struct {
		name     string
		file     func(f *fixture) string
		damage   func(t *testing.T, store *mem.Store, f *fixture)
		want     func(f *fixture) []byte // nil: an error is expected
		notExist bool                    // the error wraps ErrNotExist
		wantErr  string
	}{
		{
			name: "segment",
			file: func(f *fixture) string { return f.segment },
			want: func(f *fixture) []byte { return f.walData },
		},
		{
			name: "history file",
			file: func(*fixture) string { return "00000002.history" },
			want: func(*fixture) []byte { return history },
		},
		{
			name:     "missing segment",
			file:     func(*fixture) string { return manifest.SegmentName(1, 4, testSegSize) },
			notExist: true,
			wantErr:  manifest.SegmentName(1, 4, testSegSize),
		},
		{
			name: "corrupt segment",
			file: func(f *fixture) string { return f.segment },
			damage: func(t *testing.T, store *mem.Store, f *fixture) {
				store.Corrupt(repository.WALKey(f.segment), 200)
			},
			wantErr: "corrupt",
		},
		{
			name:    "segment of the wrong length",
			file:    func(*fixture) string { return short },
			wantErr: "segment size",
		},
		{
			name:    "name that is a path",
			file:    func(*fixture) string { return "../../000000010000000000000003" },
			wantErr: "invalid WAL file name",
		},
		{
			name: "no repository configuration",
			file: func(f *fixture) string { return f.segment },
			damage: func(t *testing.T, store *mem.Store, f *fixture) {
				if err := store.Delete(t.Context(), repository.RepoKey); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "configuration",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := mem.New()
			f := newFixture(t, store, fixtureOptions{})
			comp := chunker.NewCompressor()
			if _, err := f.repo.PutWAL(t.Context(), comp, "00000002.history", history); err != nil {
				t.Fatal(err)
			}
			if _, err := f.repo.PutWAL(t.Context(), comp, short, []byte("too short")); err != nil {
				t.Fatal(err)
			}
			if tc.damage != nil {
				tc.damage(t, store, f)
			}
			dir := t.TempDir()
			dest := filepath.Join(dir, "RECOVERYXLOG")
			err := FetchWAL(t.Context(), f.repo, tc.file(f), dest)
			if tc.want != nil {
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(dest)
				if err != nil || !bytes.Equal(got, tc.want(f)) {
					t.Errorf("fetched file differs (%d bytes, err %v)", len(got), err)
				}
				if diff := cmp.Diff([]string{"RECOVERYXLOG"}, dirEntries(t, dir)); diff != "" {
					t.Errorf("destination directory (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, providers.ErrNotExist); got != tc.notExist {
				t.Errorf("errors.Is(%v, ErrNotExist) = %v, want %v", err, got, tc.notExist)
			}
			if got := dirEntries(t, dir); len(got) > 0 {
				t.Errorf("a failed fetch left %v in the destination directory", got)
			}
		})
	}
}

func TestFetchWALReplacesDestination(t *testing.T) {
	f := newFixture(t, mem.New(), fixtureOptions{})
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	if err := os.WriteFile(dest, []byte("an earlier segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := FetchWAL(t.Context(), f.repo, f.segment, dest); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, f.walData) {
		t.Errorf("destination not replaced (err %v)", err)
	}
}

func TestFetchWALRefusesForeignFrame(t *testing.T) {
	// A frame without a content checksum cannot be verified: refused.
	store := mem.New()
	repo := repository.New(store)
	if err := repo.Bind(t.Context(), testSystemID, testSegSize); err != nil {
		t.Fatal(err)
	}
	name := manifest.HistoryFileName(3)
	frame := []byte("\x04\x22\x4d\x18\x60\x40\x82\x00\x00\x00\x00") // header only, no checksum flag
	if err := store.Put(t.Context(), repository.WALKey(name), bytes.NewReader(frame), int64(len(frame)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "h")
	err := FetchWAL(t.Context(), repo, name, dest)
	if err == nil || !strings.Contains(err.Error(), "content checksum") {
		t.Fatalf("error %v, want one about the content checksum", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("destination created: %v", err)
	}
}

func TestConfQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"cp /a/%f %p", `'cp /a/%f %p'`},
		{`'/usr/bin/pgstow' wal-fetch %f %p`, `'''/usr/bin/pgstow'' wal-fetch %f %p'`},
		{`C:\pg\x '%f'`, `'C:\\pg\\x ''%f'''`},
		{"", "''"},
	} {
		if got := ConfQuote(tc.in); got != tc.want {
			t.Errorf("ConfQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestRunStandbyPartialSegment: a standby backup's partial last segment is
// written under the segment's name, padded with zeros to the segment size.
func TestRunStandbyPartialSegment(t *testing.T) {
	store := mem.New()
	seg := manifest.SegmentName(1, 3, testSegSize)
	part := repotest.SegmentData(3)[:5000]
	name := manifest.PartialSegmentName(seg, uint64(len(part)))
	ws, err := repository.New(store).PutWAL(t.Context(), chunker.NewCompressor(), name, part)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, store, fixtureOptions{edit: func(b *manifest.Backup) {
		b.WAL = []manifest.WALSegment{ws}
		b.Totals.WALBytes = ws.StoredSize
	}})
	// With --wal=fetch too: restore_command cannot supply the segment
	// until the primary archives it whole.
	for _, mode := range []WALMode{WALEmbed, WALFetch} {
		target := filepath.Join(t.TempDir(), "data")
		o := testOptions(target)
		o.WAL = mode
		if mode == WALFetch {
			o.RestoreCommand = "pgstow wal-fetch %f %p"
		}
		res, err := Run(t.Context(), f.repo, o)
		if err != nil {
			t.Fatal(err)
		}
		if res.WALSegments != 1 {
			t.Errorf("%s: %d WAL segments written, want 1", mode, res.WALSegments)
		}
		got, err := os.ReadFile(filepath.Join(target, "pg_wal", seg))
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		want := append(bytes.Clone(part), make([]byte, testSegSize-len(part))...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: pg_wal/%s: %d bytes, want the partial segment's %d padded with zeros to %d", mode, seg, len(got), len(part), testSegSize)
		}
		if fi, err := os.Stat(filepath.Join(target, "pg_wal", seg)); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 < int64(testSegSize) {
				t.Errorf("%s: pg_wal/%s has holes (%d bytes allocated of %d): the padding must be written", mode, seg, st.Blocks*512, testSegSize)
			}
		}
		if _, err := os.Stat(filepath.Join(target, "pg_wal", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: pg_wal/%s exists (%v); only the segment's own name belongs there", mode, name, err)
		}
	}

	// A partial segment shorter than its name says is corrupt.
	short := manifest.PartialSegmentName(seg, uint64(len(part)+1))
	if _, err := f.repo.PutWAL(t.Context(), chunker.NewCompressor(), short, part); err != nil {
		t.Fatal(err)
	}
	err = FetchWAL(t.Context(), f.repo, short, filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "its name says") {
		t.Errorf("fetching a partial segment of the wrong length: %v, want an error saying so", err)
	}
}
