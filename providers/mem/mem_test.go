package mem

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Store { return New() })
}

// TestConformanceSmallPages runs the suite with pages of three keys, so
// that every listing in it crosses page boundaries.
func TestConformanceSmallPages(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Store {
		s := New()
		s.pageSize = 3
		return s
	})
}

func put(t *testing.T, s *Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestCorrupt(t *testing.T) {
	s := New()
	put(t, s, "k", []byte("abc"))
	rc, err := s.Get(t.Context(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	s.Corrupt("k", 1)
	got, err := providers.ReadAll(t.Context(), s, "k")
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{'a', 'b' ^ 0xff, 'c'}; !bytes.Equal(got, want) {
		t.Errorf("after Corrupt: %q, want %q", got, want)
	}
	// A reader opened before keeps the intact object.
	var before bytes.Buffer
	if _, err := before.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if before.String() != "abc" {
		t.Errorf("reader opened before Corrupt read %q, want %q", before.String(), "abc")
	}
}

func TestCorruptPanics(t *testing.T) {
	s := New()
	put(t, s, "k", []byte("abc"))
	for _, tc := range []struct {
		key    string
		offset int64
	}{{"missing", 0}, {"k", 3}, {"k", -1}} {
		t.Run(fmt.Sprintf("%s@%d", tc.key, tc.offset), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Corrupt(%q, %d) did not panic", tc.key, tc.offset)
				}
			}()
			s.Corrupt(tc.key, tc.offset)
		})
	}
}

func TestKeys(t *testing.T) {
	s := New()
	if keys := s.Keys(); len(keys) != 0 {
		t.Errorf("Keys of a new store = %q", keys)
	}
	for _, k := range []string{"b", "a/b", "a-c", "c"} {
		put(t, s, k, nil)
	}
	put(t, s, "b", []byte("again"))
	if err := s.Delete(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	keys := s.Keys()
	if diff := cmp.Diff([]string{"a-c", "a/b", "b"}, keys); diff != "" {
		t.Errorf("Keys mismatch (-want +got):\n%s", diff)
	}
	keys[0] = "changed"
	if s.Keys()[0] != "a-c" {
		t.Error("Keys returned the store's own slice")
	}
}

// TestListSeesLaterPages checks the paginated behaviour: a key written
// after the first page was taken, but sorting after it, is listed.
func TestListSeesLaterPages(t *testing.T) {
	s := New()
	s.pageSize = 2
	for _, k := range []string{"a", "b", "c"} {
		put(t, s, k, nil)
	}
	var got []string
	for info, err := range s.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
		if info.Key == "a" {
			put(t, s, "d", nil)
			if err := s.Delete(t.Context(), "b"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// "b" was on the page already taken; "d" is on a later one.
	if diff := cmp.Diff([]string{"a", "b", "c", "d"}, got); diff != "" {
		t.Errorf("List mismatch (-want +got):\n%s", diff)
	}
}
