package walarchive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

func walDir(t *testing.T, ready ...string) string {
	dir := filepath.Join(t.TempDir(), "pg_wal")
	os.MkdirAll(filepath.Join(dir, "archive_status"), 0o700)
	for _, n := range ready {
		os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte(n[:8]), 1<<17), 0o600)
		os.WriteFile(filepath.Join(dir, "archive_status", n+".ready"), nil, 0o600)
	}
	return dir
}

func TestPushAheadAndIdempotence(t *testing.T) {
	segs := []string{"000000010000000000000005", "000000010000000000000003", "00000002.history", "000000010000000000000004"}
	dir := walDir(t, segs...)
	os.WriteFile(filepath.Join(dir, "archive_status", "000000010000000000000001.done"), nil, 0o600)
	if got := readyFiles(dir, "000000010000000000000003", 2); !slices.Equal(got, []string{"00000002.history", "000000010000000000000004"}) {
		t.Fatalf("readyFiles = %v", got)
	}
	repo := repository.New(mem.New())
	ctx := t.Context()
	if err := Push(ctx, repo, filepath.Join(dir, "000000010000000000000003"), Options{Ahead: 8}); err != nil {
		t.Fatal(err)
	}
	for _, n := range segs {
		if ok, _ := repo.HasWAL(ctx, n); !ok {
			t.Errorf("%s was not pushed", n)
		}
	}
	// PostgreSQL's later call for a file pushed ahead succeeds.
	if err := Push(ctx, repo, filepath.Join(dir, "000000010000000000000005"), Options{}); err != nil {
		t.Fatal(err)
	}
	// A different file under an archived name fails and changes nothing.
	p := filepath.Join(dir, "000000010000000000000004")
	os.WriteFile(p, []byte("other content"), 0o600)
	err := Push(ctx, repo, p, Options{})
	if !errors.Is(err, repository.ErrWALConflict) {
		t.Fatalf("conflicting push: %v", err)
	}
	// Names PostgreSQL never archives: nonsense, and the partial segment
	// only a standby backup writes.
	for _, n := range []string{"nonsense", "000000010000000000000004.00000028.partial"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
		if err := Push(ctx, repo, filepath.Join(dir, n), Options{}); err == nil {
			t.Fatalf("%s was pushed", n)
		}
	}
}

func TestWALEnd(t *testing.T) {
	long := make([]byte, 200<<10) // several of walEnd's blocks
	long[70000] = 1
	for _, tt := range []struct {
		data []byte
		want int64
	}{{nil, 0}, {[]byte{0, 0}, 0}, {[]byte{1, 0, 0}, 1}, {[]byte{0, 2, 0, 3, 0}, 4}, {[]byte{1, 2}, 2}, {long, 70001}, {make([]byte, 200<<10), 0}} {
		got, err := walEnd(io.NewSectionReader(bytes.NewReader(tt.data), 0, int64(len(tt.data))))
		if err != nil || got != tt.want {
			t.Errorf("walEnd(%d bytes) = %d, %v, want %d", len(tt.data), got, err, tt.want)
		}
		// The writer finds the same, however the bytes are split.
		for _, step := range []int{1, 3, 64 << 10} {
			var w walEndWriter
			for b := tt.data; len(b) > 0; b = b[min(step, len(b)):] {
				w.Write(b[:min(step, len(b))])
			}
			if w.end != tt.want {
				t.Errorf("walEndWriter(%d bytes, writes of %d) = %d, want %d", len(tt.data), step, w.end, tt.want)
			}
		}
	}
}

// downStore is a store that can be taken offline: every request fails
// as an unreachable endpoint's would.
type downStore struct {
	*mem.Store
	name string
	down bool
}

var errDown = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

func (s *downStore) String() string { return s.name }
func (s *downStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	if s.down {
		return errDown
	}
	return s.Store.Put(ctx, key, body, size, o)
}
func (s *downStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if s.down {
		return nil, errDown
	}
	return s.Store.Get(ctx, key, off, n)
}
func (s *downStore) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	if s.down {
		return providers.ObjectInfo{}, errDown
	}
	return s.Store.Stat(ctx, key)
}

// TestPushAll: a file goes to every repository; one repository down fails
// the push with one line naming it, the others get the file anyway, and
// the retry once it is back succeeds. A conflict in one repository is
// still ErrWALConflict.
func TestPushAll(t *testing.T) {
	seg := "000000010000000000000007"
	dir := walDir(t, seg, "000000010000000000000008")
	path := filepath.Join(dir, seg)
	a, b := &downStore{Store: mem.New(), name: "mem://a"}, &downStore{Store: mem.New(), name: "mem://b"}
	repos := []*repository.Repository{repository.New(a), repository.New(b)}
	ctx := t.Context()
	has := func(i int, name string) bool {
		ok, _ := repos[i].HasWAL(ctx, name)
		return ok
	}

	for _, tt := range []struct {
		name     string
		down     []bool
		failing  []string // repositories the error must name
		nowIn    []bool   // whether each repository then holds seg
		conflict bool
	}{
		{"second down", []bool{false, true}, []string{"mem://b"}, []bool{true, false}, false},
		{"both down", []bool{true, true}, []string{"mem://a", "mem://b"}, []bool{true, false}, false},
		{"back up: the retry succeeds", []bool{false, false}, nil, []bool{true, true}, false},
		{"retry once more: idempotent", []bool{false, false}, nil, []bool{true, true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a.down, b.down = tt.down[0], tt.down[1]
			err := PushAll(ctx, repos, path, Options{Ahead: 1})
			if (err != nil) != (len(tt.failing) > 0) {
				t.Fatalf("PushAll = %v, want failure naming %v", err, tt.failing)
			}
			if err != nil {
				msg := err.Error()
				if strings.Contains(msg, "\n") {
					t.Errorf("error spans lines: %q", msg)
				}
				for _, r := range tt.failing {
					if !strings.Contains(msg, "repository "+r+": ") {
						t.Errorf("error %q does not name %s", msg, r)
					}
				}
				var re *RepoError
				if !errors.As(err, &re) || !slices.Contains(tt.failing, re.Repo) {
					t.Errorf("error %v is not a RepoError of a failing repository", err)
				}
				if len(tt.failing) == 1 && strings.Contains(msg, "mem://a") {
					t.Errorf("error %q names the healthy repository", msg)
				}
			}
			a.down, b.down = false, false
			for i, want := range tt.nowIn {
				if got := has(i, seg); got != want {
					t.Errorf("repository %d holds %s: %v, want %v", i, seg, got, want)
				}
			}
		})
	}
	// A different file under an archived name is refused by each.
	os.WriteFile(path, []byte("other content"), 0o600)
	if err := PushAll(ctx, repos, path, Options{}); !errors.Is(err, repository.ErrWALConflict) {
		t.Fatalf("conflicting push: %v", err)
	}
}

func TestJoinErrors(t *testing.T) {
	e1, e2, e3 := errors.New("one"), errors.New("two\nlines"), errors.New("three")
	for _, tt := range []struct {
		in   []error
		want string
	}{
		{nil, ""},
		{[]error{nil, e1, nil}, "one"},
		{[]error{e1, e2}, "one; two; lines"},
		{[]error{JoinErrors(e1, e2), nil, e3}, "one; two; lines; three"},
	} {
		err := JoinErrors(tt.in...)
		if got := fmt.Sprint(err); err == nil && tt.want != "" || err != nil && got != tt.want {
			t.Errorf("JoinErrors(%v) = %q, want %q", tt.in, got, tt.want)
		}
		for _, e := range []error{e1, e2, e3} {
			if want := strings.Contains(tt.want, e.Error()[:3]); errors.Is(err, e) != want {
				t.Errorf("errors.Is(JoinErrors(%v), %v) = %v", tt.in, e, !want)
			}
		}
	}
}
