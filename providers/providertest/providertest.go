// Package providertest is the conformance suite every providers.Store must
// pass. The layers above the providers (uploader, restore, retention) are
// written against the interface's documented contract; running one suite
// against every backend is what keeps that contract true for all of them,
// including the corners (empty objects, ranges past the end, odd keys,
// cancelled and short uploads) where stores differ by default.
//
// The suite assumes only what the interface promises, so it serves the
// local stores and the cloud ones alike.
package providertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Run runs the suite. open must return a new, empty store for the given
// subtest and arrange its cleanup (with t.Cleanup); it is called from
// parallel subtests, so it must be safe for concurrent use.
func Run(t *testing.T, open func(t *testing.T) providers.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, open func(t *testing.T) providers.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"RangedGet", testRangedGet},
		{"NotExist", testNotExist},
		{"IfAbsent", testIfAbsent},
		{"ConcurrentIfAbsent", testConcurrentIfAbsent},
		{"Overwrite", testOverwrite},
		{"Checksum", testChecksum},
		{"BodySizeMismatch", testBodySizeMismatch},
		{"CancelledPut", testCancelledPut},
		{"CancelledContext", testCancelledContext},
		{"BufferReuse", testBufferReuse},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"OddKeys", testOddKeys},
		{"InvalidKeys", testInvalidKeys},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Delete", testDelete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open)
		})
	}
}

// content returns n deterministic pseudo-random bytes, different for each
// seed, so that a shifted or mixed-up read never passes by accident.
func content(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(n))
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, manifest.Castagnoli) }

// put stores data under key and fails the test on error.
func put(t *testing.T, s providers.Store, key string, data []byte, opts providers.PutOptions) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), opts); err != nil {
		t.Fatalf("Put(%q, %d bytes, %+v): %v", key, len(data), opts, err)
	}
}

// get reads a range of key and fails the test on error.
func get(t *testing.T, s providers.Store, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): read: %v", key, offset, length, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Get(%q, %d, %d): close: %v", key, offset, length, err)
	}
	return b
}

// checkBytes compares object contents; cmp.Diff of megabytes would be
// unreadable, so it reports lengths and the first difference.
func checkBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: got %d bytes, want %d; first difference at offset %d", what, len(got), len(want), i)
}

// checkObject verifies the whole content and the size of key.
func checkObject(t *testing.T, s providers.Store, key string, want []byte) {
	t.Helper()
	checkBytes(t, fmt.Sprintf("Get(%q)", key), get(t, s, key, 0, -1), want)
	info, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	if info.Size != int64(len(want)) || info.Key != key {
		t.Errorf("Stat(%q) = key %q size %d, want key %q size %d", key, info.Key, info.Size, key, len(want))
	}
}

// checkNotExist verifies that key names no object for Get and Stat, and
// that the errors name the key, as callers' messages rely on.
func checkNotExist(t *testing.T, s providers.Store, key string) {
	t.Helper()
	rc, err := s.Get(t.Context(), key, 0, -1)
	if err == nil {
		rc.Close()
		t.Errorf("Get(%q) succeeded, want ErrNotExist", key)
	} else if !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("Get(%q) = %v, want ErrNotExist", key, err)
	} else if !namesKey(err, key) {
		t.Errorf("Get(%q) error %q does not name the key", key, err)
	}
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
	} else if !namesKey(err, key) {
		t.Errorf("Stat(%q) error %q does not name the key", key, err)
	}
}

// namesKey reports whether an error message names key, plainly or quoted.
func namesKey(err error, key string) bool {
	return strings.Contains(err.Error(), key) || strings.Contains(err.Error(), strconv.Quote(key))
}

// entry is what the tests compare of a listing; ModTime is the store's.
type entry struct {
	Key  string
	Size int64
}

// list collects a listing, failing the test on an error.
func list(t *testing.T, s providers.Store, prefix string) []entry {
	t.Helper()
	var got []entry
	for info, err := range s.List(t.Context(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		if info.ModTime.IsZero() {
			t.Errorf("List(%q): %q has no ModTime", prefix, info.Key)
		}
		got = append(got, entry{info.Key, info.Size})
	}
	return got
}

func checkList(t *testing.T, s providers.Store, prefix string, want []entry) {
	t.Helper()
	if diff := cmp.Diff(want, list(t, s, prefix)); diff != "" {
		t.Errorf("List(%q) mismatch (-want +got):\n%s", prefix, diff)
	}
}

func testRoundTrip(t *testing.T, open func(t *testing.T) providers.Store) {
	for _, size := range []int{0, 1, 4095, 4096, 4097, 1<<20 + 1, 5 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := open(t)
			key := fmt.Sprintf("roundtrip/%d.bin", size)
			data := content(uint64(size), size)
			put(t, s, key, data, providers.PutOptions{})
			checkObject(t, s, key, data)
			info, err := s.Stat(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			if info.ModTime.IsZero() {
				t.Errorf("Stat(%q).ModTime is zero", key)
			}
		})
	}
}

func testRangedGet(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	const size = 10000
	data := content(1, size)
	put(t, s, "range", data, providers.PutOptions{})
	put(t, s, "empty", nil, providers.PutOptions{})
	for _, tc := range []struct {
		name           string
		key            string
		offset, length int64
		want           []byte
	}{
		{"start", "range", 0, 100, data[:100]},
		{"middle", "range", 4000, 1234, data[4000:5234]},
		{"to end", "range", 9000, -1, data[9000:]},
		{"whole", "range", 0, -1, data},
		{"exact", "range", 0, size, data},
		{"last byte", "range", size - 1, 1, data[size-1:]},
		{"length past end", "range", 9990, 100, data[9990:]},
		{"zero length", "range", 10, 0, nil},
		{"offset at end", "range", size, -1, nil},
		{"offset at end with length", "range", size, 10, nil},
		{"offset past end", "range", size + 1000, 10, nil},
		{"empty object", "empty", 0, -1, nil},
		{"empty object with length", "empty", 0, 10, nil},
		{"empty object past end", "empty", 5, -1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(t, s, tc.key, tc.offset, tc.length)
			checkBytes(t, fmt.Sprintf("Get(%q, %d, %d)", tc.key, tc.offset, tc.length), got, tc.want)
		})
	}
}

func testNotExist(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	checkNotExist(t, s, "missing")
	checkNotExist(t, s, "missing/deep/key")
	if err := s.Delete(t.Context(), "missing"); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("Delete(missing) = %v, want ErrNotExist", err)
	} else if !namesKey(err, "missing") {
		t.Errorf("Delete(missing) error %q does not name the key", err)
	}

	// Keys next to, below and above an existing one are still missing;
	// stores built on directories must not mistake a path for an object.
	put(t, s, "dir/object", []byte("x"), providers.PutOptions{})
	for _, key := range []string{"dir", "dir/object/below", "dir/obj", "dir/object2"} {
		checkNotExist(t, s, key)
		if err := s.Delete(t.Context(), key); !errors.Is(err, providers.ErrNotExist) {
			t.Errorf("Delete(%q) = %v, want ErrNotExist", key, err)
		}
	}
	checkObject(t, s, "dir/object", []byte("x"))
}

func testIfAbsent(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	first, second := content(1, 3000), content(2, 2000)
	put(t, s, "immutable", first, providers.PutOptions{IfAbsent: true})
	err := s.Put(t.Context(), "immutable", bytes.NewReader(second), int64(len(second)), providers.PutOptions{IfAbsent: true})
	if !errors.Is(err, providers.ErrExist) {
		t.Fatalf("second Put with IfAbsent = %v, want ErrExist", err)
	}
	checkObject(t, s, "immutable", first)

	// With a checksum too, as the uploader writes chunks.
	opts := providers.PutOptions{IfAbsent: true, CRC32C: crc32c(second), HasCRC32C: true}
	err = s.Put(t.Context(), "immutable", bytes.NewReader(second), int64(len(second)), opts)
	if !errors.Is(err, providers.ErrExist) {
		t.Fatalf("Put with IfAbsent and CRC32C = %v, want ErrExist", err)
	}
	checkObject(t, s, "immutable", first)

	put(t, s, "other", second, opts)
	checkObject(t, s, "other", second)
}

// testConcurrentIfAbsent races writers of one key: exactly one must win
// and its content must be what is stored, which is what makes IfAbsent a
// lock for the manifest and for content-addressed chunks.
func testConcurrentIfAbsent(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			data := content(uint64(i), 1000+i)
			errs[i] = s.Put(t.Context(), "race", bytes.NewReader(data), int64(len(data)), providers.PutOptions{IfAbsent: true})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, providers.ErrExist):
			t.Errorf("writer %d: %v, want nil or ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	checkObject(t, s, "race", content(uint64(winner), 1000+winner))
}

func testOverwrite(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	long, short := content(1, 5000), content(2, 100)
	put(t, s, "mutable", long, providers.PutOptions{})
	put(t, s, "mutable", short, providers.PutOptions{})
	checkObject(t, s, "mutable", short)
	put(t, s, "mutable", nil, providers.PutOptions{})
	checkObject(t, s, "mutable", nil)
	checkList(t, s, "", []entry{{"mutable", 0}})
}

func testChecksum(t *testing.T, open func(t *testing.T) providers.Store) {
	data := content(1, 70000)
	good := providers.PutOptions{CRC32C: crc32c(data), HasCRC32C: true}
	bad := providers.PutOptions{CRC32C: crc32c(data) ^ 1, HasCRC32C: true}

	t.Run("mismatch", func(t *testing.T) {
		s := open(t)
		for _, opts := range []providers.PutOptions{bad, {IfAbsent: true, CRC32C: bad.CRC32C, HasCRC32C: true}} {
			err := s.Put(t.Context(), "bad", bytes.NewReader(data), int64(len(data)), opts)
			if !errors.Is(err, providers.ErrChecksum) {
				t.Fatalf("Put with wrong CRC32C (%+v) = %v, want ErrChecksum", opts, err)
			}
			checkNotExist(t, s, "bad")
		}
		checkList(t, s, "", nil)
	})
	t.Run("match", func(t *testing.T) {
		s := open(t)
		put(t, s, "good", data, good)
		checkObject(t, s, "good", data)
		put(t, s, "empty", nil, providers.PutOptions{CRC32C: crc32c(nil), HasCRC32C: true})
		checkObject(t, s, "empty", nil)
	})
	t.Run("failed overwrite keeps the old object", func(t *testing.T) {
		s := open(t)
		old := content(2, 300)
		put(t, s, "key", old, providers.PutOptions{})
		err := s.Put(t.Context(), "key", bytes.NewReader(data), int64(len(data)), bad)
		if !errors.Is(err, providers.ErrChecksum) {
			t.Fatalf("Put with wrong CRC32C = %v, want ErrChecksum", err)
		}
		checkObject(t, s, "key", old)
	})
}

// testBodySizeMismatch checks that a body that does not have the promised
// size fails the Put: storing a prefix would silently truncate an object.
func testBodySizeMismatch(t *testing.T, open func(t *testing.T) providers.Store) {
	data := content(1, 5000)
	for _, tc := range []struct {
		name string
		body []byte
		size int64
	}{
		{"short", data[:2500], 5000},
		{"empty", nil, 5000},
		{"long", data, 2500},
		{"long for empty object", data[:1], 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if err := s.Put(t.Context(), "new", bytes.NewReader(tc.body), tc.size, providers.PutOptions{}); err == nil {
				t.Errorf("Put of %d bytes with size %d succeeded", len(tc.body), tc.size)
			}
			checkNotExist(t, s, "new")

			old := content(2, 100)
			put(t, s, "old", old, providers.PutOptions{})
			if err := s.Put(t.Context(), "old", bytes.NewReader(tc.body), tc.size, providers.PutOptions{}); err == nil {
				t.Errorf("overwriting Put of %d bytes with size %d succeeded", len(tc.body), tc.size)
			}
			checkObject(t, s, "old", old)
			checkList(t, s, "", []entry{{"old", 100}})
		})
	}
}

// cancellingReader cancels a context once it has handed out cancelAfter
// bytes and then goes on reading normally, so that only the store's own
// context checks can stop the upload.
type cancellingReader struct {
	r           *bytes.Reader
	cancelAfter int64
	read        int64
	cancel      context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += int64(n)
	if c.read >= c.cancelAfter {
		c.cancel()
	}
	return n, err
}

func (c *cancellingReader) Seek(offset int64, whence int) (int64, error) {
	return c.r.Seek(offset, whence)
}

var _ io.ReadSeeker = (*cancellingReader)(nil)

func testCancelledPut(t *testing.T, open func(t *testing.T) providers.Store) {
	data := content(1, 3<<20)
	t.Run("before", func(t *testing.T) {
		s := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for _, opts := range []providers.PutOptions{{}, {IfAbsent: true}} {
			if err := s.Put(ctx, "cancelled", bytes.NewReader(data), int64(len(data)), opts); err == nil {
				t.Errorf("Put (%+v) with a cancelled context succeeded", opts)
			}
			checkNotExist(t, s, "cancelled")
		}
	})
	t.Run("during", func(t *testing.T) {
		s := open(t)
		for _, opts := range []providers.PutOptions{{}, {IfAbsent: true}} {
			ctx, cancel := context.WithCancel(t.Context())
			body := &cancellingReader{r: bytes.NewReader(data), cancelAfter: 256 << 10, cancel: cancel}
			err := s.Put(ctx, "cancelled", body, int64(len(data)), opts)
			cancel()
			if err == nil {
				t.Errorf("Put (%+v) cancelled while reading the body succeeded", opts)
			}
			checkNotExist(t, s, "cancelled")
		}
		checkList(t, s, "", nil)
	})
}

// testCancelledContext checks that the other calls fail rather than run
// with a cancelled context.
func testCancelledContext(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	put(t, s, "key", []byte("data"), providers.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if rc, err := s.Get(ctx, "key", 0, -1); err == nil {
		// A lazy reader may report the cancellation on the first read.
		_, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Error("Get with a cancelled context succeeded")
		}
	}
	if _, err := s.Stat(ctx, "key"); err == nil {
		t.Error("Stat with a cancelled context succeeded")
	}
	listed := 0
	var listErr error
	for _, err := range s.List(ctx, "") {
		if err != nil {
			listErr = err
			break
		}
		listed++
	}
	if listErr == nil {
		t.Errorf("List with a cancelled context yielded %d objects and no error", listed)
	}
	if err := s.Delete(ctx, "key"); err == nil {
		t.Error("Delete with a cancelled context succeeded")
	}
}

// testBufferReuse checks that the store copies what it is given: callers
// reuse their buffers as soon as Put returns.
func testBufferReuse(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	buf := content(1, 4096)
	want := bytes.Clone(buf)
	put(t, s, "key", buf, providers.PutOptions{})
	for i := range buf {
		buf[i] = 0
	}
	checkObject(t, s, "key", want)
	got := get(t, s, "key", 0, -1)
	for i := range got {
		got[i] = 0
	}
	checkObject(t, s, "key", want)
}

// putAll stores the objects concurrently, since cloud stores would take
// minutes for a listing test one by one.
func putAll(t *testing.T, s providers.Store, objects []entry) {
	t.Helper()
	const workers = 32
	work := make(chan entry)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for e := range work {
				data := content(uint64(e.Size), int(e.Size))
				if err := s.Put(t.Context(), e.Key, bytes.NewReader(data), e.Size, providers.PutOptions{}); err != nil {
					t.Errorf("Put(%q): %v", e.Key, err)
				}
			}
		})
	}
	for _, e := range objects {
		work <- e
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// filter returns the entries whose keys start with prefix, in key order.
func filter(all []entry, prefix string) []entry {
	var out []entry
	for _, e := range all {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// testList lists more than 1,000 objects, the page size of S3 and Azure,
// so that a backend that drops or repeats keys across pages fails.
func testList(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	checkList(t, s, "", nil)
	var all []entry
	for _, dir := range []struct {
		name  string
		count int
	}{{"a", 500}, {"b", 500}, {"c", 150}} {
		for i := range dir.count {
			all = append(all, entry{fmt.Sprintf("list/%s/%04d", dir.name, i), int64(i % 7)})
		}
	}
	// Neighbours whose order differs between keys and a directory walk.
	all = append(all, entry{"list/a-z", 3}, entry{"list/a.z", 4}, entry{"list/a0", 5}, entry{"top", 6})
	slices.Reverse(all) // the order of writing must not matter
	putAll(t, s, all)

	for _, prefix := range []string{
		"", "l", "list", "list/", "list/a", "list/a/", "list/a/0", "list/a/04", "list/a/0499",
		"list/b/", "list/b/02", "list/c", "list/c/01", "list/a-", "list/a.", "top", "t",
	} {
		t.Run(fmt.Sprintf("prefix=%q", prefix), func(t *testing.T) {
			want := filter(all, prefix)
			if len(want) == 0 {
				t.Fatalf("bad test: prefix %q matches nothing", prefix)
			}
			checkList(t, s, prefix, want)
		})
	}
	t.Run("no match", func(t *testing.T) {
		for _, prefix := range []string{"nothing", "nothing/", "list/d", "list/a/9", "list/a/0499/", "list//", "/", "top/", "list/a/0000x"} {
			checkList(t, s, prefix, nil)
		}
	})
	t.Run("early stop", func(t *testing.T) {
		// A range-over-func loop panics if the iterator goes on
		// after the body breaks, so this checks the yield handling.
		n := 0
		for _, err := range s.List(t.Context(), "list/") {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 5 {
				break
			}
		}
		n = 0
		for _, err := range s.List(t.Context(), "list/") {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 1001 {
				break
			}
		}
	})
}

func testListEmpty(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	for _, prefix := range []string{"", "a", "a/"} {
		checkList(t, s, prefix, nil)
	}
}

// oddKeys are keys that trip up URL encoding, path handling and sorting.
// They avoid what some stores cannot hold: backslashes (Azure reads them
// as slashes), elements ending in a dot (Azure strips them), control
// characters, and a key that is also a "directory" of another key (local
// file systems cannot have both).
var oddKeys = []string{
	"odd/with space",
	"odd/ünïcödé/日本語",
	"odd/emoji 🙂",
	"odd/plus+sign",
	"odd/percent%20encoded",
	"odd/percent%",
	"odd/equals=sign&amp",
	"odd/question?mark",
	"odd/hash#tag",
	"odd/colon:semi;comma,",
	"odd/tilde~",
	"odd/quote'dq\"",
	"odd/brackets[{(<>)}]",
	"odd/.hidden",
	"odd/...dots",
	"odd/deep/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/leaf",
	"odd/a-c",
	"odd/a.c",
	"odd/a/b",
	"odd/a/b-c",
	"odd/a0",
	"odd/A",
	"odd-sibling",
}

func testOddKeys(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	var all []entry
	for i, key := range oddKeys {
		put(t, s, key, []byte(key), providers.PutOptions{IfAbsent: i%2 == 0})
		all = append(all, entry{key, int64(len(key))})
	}
	for _, key := range oddKeys {
		checkObject(t, s, key, []byte(key))
	}
	checkList(t, s, "", filter(all, ""))
	checkList(t, s, "odd/", filter(all, "odd/"))
	checkList(t, s, "odd/a", filter(all, "odd/a"))
	checkList(t, s, "odd/a/", filter(all, "odd/a/"))
	checkList(t, s, "odd/percent%", filter(all, "odd/percent%"))
	checkList(t, s, "odd/ünï", filter(all, "odd/ünï"))
	for _, key := range oddKeys {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%q): %v", key, err)
		}
		checkNotExist(t, s, key)
	}
	checkList(t, s, "", nil)
}

func testInvalidKeys(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	for _, key := range []string{"", "/", "/a", "a/", "a//b", "a/../b", "../a", "a/..", "./a", "a/./b", ".", "..", "a\x00b"} {
		err := s.Put(t.Context(), key, bytes.NewReader([]byte("x")), 1, providers.PutOptions{})
		if err == nil {
			t.Errorf("Put(%q) succeeded, want an error", key)
		} else if errors.Is(err, providers.ErrExist) || errors.Is(err, providers.ErrNotExist) {
			t.Errorf("Put(%q) = %v, want a key error", key, err)
		}
		if rc, err := s.Get(t.Context(), key, 0, -1); err == nil {
			rc.Close()
			t.Errorf("Get(%q) succeeded, want an error", key)
		}
		if _, err := s.Stat(t.Context(), key); err == nil {
			t.Errorf("Stat(%q) succeeded, want an error", key)
		}
		if err := s.Delete(t.Context(), key); err == nil {
			t.Errorf("Delete(%q) succeeded, want an error", key)
		}
	}
	checkList(t, s, "", nil)
}

func testConcurrentPuts(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	const goroutines, perGoroutine = 8, 16
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				// Shared and separate parent prefixes, to race
				// directory creation in stores that have any.
				key := fmt.Sprintf("concurrent/%d/%02d/%d", i%3, i, g)
				data := content(uint64(g*perGoroutine+i), (g*perGoroutine+i)*509)
				if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), providers.PutOptions{IfAbsent: true}); err != nil {
					t.Errorf("Put(%q): %v", key, err)
				}
			}
		})
	}
	wg.Wait()
	var want []entry
	for g := range goroutines {
		for i := range perGoroutine {
			key := fmt.Sprintf("concurrent/%d/%02d/%d", i%3, i, g)
			data := content(uint64(g*perGoroutine+i), (g*perGoroutine+i)*509)
			checkObject(t, s, key, data)
			want = append(want, entry{key, int64(len(data))})
		}
	}
	checkList(t, s, "", filter(want, ""))
}

func testDelete(t *testing.T, open func(t *testing.T) providers.Store) {
	s := open(t)
	put(t, s, "del/a/deep/key", []byte("1"), providers.PutOptions{})
	put(t, s, "del/a/other", []byte("22"), providers.PutOptions{})
	put(t, s, "del/b", []byte("333"), providers.PutOptions{})

	if err := s.Delete(t.Context(), "del/a/deep/key"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkNotExist(t, s, "del/a/deep/key")
	if err := s.Delete(t.Context(), "del/a/deep/key"); !errors.Is(err, providers.ErrNotExist) {
		t.Errorf("second Delete = %v, want ErrNotExist", err)
	}
	checkList(t, s, "", []entry{{"del/a/other", 2}, {"del/b", 3}})
	checkObject(t, s, "del/a/other", []byte("22"))

	// Once nothing is below it, a former prefix can name an object, and
	// after that is gone the old key can be written again.
	put(t, s, "del/a/deep", []byte("4444"), providers.PutOptions{IfAbsent: true})
	checkObject(t, s, "del/a/deep", []byte("4444"))
	if err := s.Delete(t.Context(), "del/a/deep"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	put(t, s, "del/a/deep/key", []byte("55555"), providers.PutOptions{IfAbsent: true})
	checkObject(t, s, "del/a/deep/key", []byte("55555"))
	for _, key := range []string{"del/a/deep/key", "del/a/other", "del/b"} {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%q): %v", key, err)
		}
	}
	checkList(t, s, "", nil)
}
