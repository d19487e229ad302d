package chunker

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/manifest"
)

// recordingObserver keeps what one member's observer saw.
type recordingObserver struct {
	path                        string
	headerOff, contentOff, size int64
	got                         []byte
	closed                      int
}

func (o *recordingObserver) Write(p []byte) { o.got = append(o.got, p...) }
func (o *recordingObserver) Close(f *manifest.File) {
	o.closed++
	f.BlockCRC32C = manifest.BlockCRCs{uint32(len(o.got))}
}

// TestObserve checks that an observer sees exactly each regular file's
// content, that the spans it is given delimit the records (so records can
// be cut out of the archive and put back), and that Close can add to the
// file's record, whatever the chunk size and header format.
func TestObserve(t *testing.T) {
	long := strings.Repeat("d/", 80) + "long_name_file"
	members := []member{
		dir("base"),
		file("base/1", content(1, 3*blockSize+17)),
		file("empty", nil),
		symlink("pg_wal", "/elsewhere"),
		file(long, content(2, 5000)),
		file("base/2", content(3, 40000)),
	}
	for _, format := range []tar.Format{tar.FormatUSTAR, tar.FormatPAX, tar.FormatGNU} {
		if format == tar.FormatUSTAR {
			// USTAR cannot hold the long name.
			members[4].name = "short_name_file"
		} else {
			members[4].name = long
		}
		data := makeTar(t, format, members...)
		for _, target := range []int{blockSize, 1024, 4096, 1 << 20} {
			t.Run(fmt.Sprintf("%v/%d", format, target), func(t *testing.T) {
				var obs []*recordingObserver
				pool := [][]byte{}
				get := func() []byte {
					if n := len(pool); n > 0 {
						b := pool[n-1]
						pool = pool[:n-1]
						return b[:0]
					}
					return make([]byte, 0, target)
				}
				s := NewSplitter(bytes.NewReader(data), target, 0, get)
				s.Observe(func(path string, headerOff, contentOff, size int64) MemberObserver {
					if path == "empty" {
						return nil // not wanted
					}
					o := &recordingObserver{path: path, headerOff: headerOff, contentOff: contentOff, size: size}
					obs = append(obs, o)
					return o
				})
				for {
					c, err := s.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					b := c.Data[:cap(c.Data)]
					for i := range b {
						b[i] = 0xA5 // a kept slice would see this
					}
					pool = append(pool, b[:0])
				}
				want := map[string][]byte{}
				for _, m := range members {
					if m.typ == 0 && m.name != "empty" {
						want[m.name] = m.body
					}
				}
				if len(obs) != len(want) {
					t.Fatalf("%d observers, want %d", len(obs), len(want))
				}
				files := map[string]manifest.File{}
				for _, f := range s.Files() {
					files[f.Path] = f
				}
				for _, o := range obs {
					if !bytes.Equal(o.got, want[o.path]) {
						t.Errorf("%s: observer saw %d bytes, want the %d of the content", o.path, len(o.got), len(want[o.path]))
					}
					if o.closed != 1 {
						t.Errorf("%s: closed %d times", o.path, o.closed)
					}
					f := files[o.path]
					if len(f.BlockCRC32C) != 1 || f.BlockCRC32C[0] != uint32(len(o.got)) {
						t.Errorf("%s: Close's change to the record is lost: %v", o.path, f.BlockCRC32C)
					}
					if o.contentOff != f.Offset || o.size != f.Size {
						t.Errorf("%s: content at %d size %d, record says %d size %d", o.path, o.contentOff, o.size, f.Offset, f.Size)
					}
					// The record, cut out alone, is a tar of that one file.
					end := o.contentOff + int64(padded(int(o.size)))
					one := append(bytes.Clone(data[o.headerOff:end]), make([]byte, 2*blockSize)...)
					tr := tar.NewReader(bytes.NewReader(one))
					h, err := tr.Next()
					if err != nil {
						t.Fatalf("%s: record [%d, %d) alone: %v", o.path, o.headerOff, end, err)
					}
					body, err := io.ReadAll(tr)
					if err != nil || h.Name != o.path || !bytes.Equal(body, want[o.path]) {
						t.Errorf("%s: record alone reads as %q, %d bytes, %v", o.path, h.Name, len(body), err)
					}
					if _, err := tr.Next(); !errors.Is(err, io.EOF) {
						t.Errorf("%s: record alone holds more than one member: %v", o.path, err)
					}
				}
			})
		}
	}
}

// nopObserver counts bytes, to measure the observer's cost on the hot path.
type nopObserver struct{ n int64 }

func (o *nopObserver) Write(p []byte)         { o.n += int64(len(p)) }
func (o *nopObserver) Close(f *manifest.File) {}

// TestObserveNoAllocs checks that observing adds no allocation per chunk
// or per read: the splitter's allocations with an observer of every file
// are the same as without one.
func TestObserveNoAllocs(t *testing.T) {
	data := makeTar(t, tar.FormatPAX, file("a", content(1, 1<<20)), file("b", content(2, 1<<20)))
	buf := make([]byte, 0, 64<<10)
	run := func(observe bool) float64 {
		o := &nopObserver{}
		return testing.AllocsPerRun(20, func() {
			s := NewSplitter(bytes.NewReader(data), 64<<10, 0, func() []byte { return buf[:0] })
			if observe {
				s.Observe(func(string, int64, int64, int64) MemberObserver { return o })
			}
			for {
				if _, err := s.Next(); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
					return
				}
			}
		})
	}
	without, with := run(false), run(true)
	if with > without+1 { // the closure given to Observe
		t.Errorf("observing allocates: %v allocations per archive, %v without", with, without)
	}
}
