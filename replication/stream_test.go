package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgstow/pgstow/manifest"
)

// streamBuilder writes backend messages the way a walsender does.
type streamBuilder struct{ bytes.Buffer }

func (s *streamBuilder) msg(typ byte, body []byte) {
	s.WriteByte(typ)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(4+len(body)))
	s.Write(l[:])
	s.Write(body)
}

func (s *streamBuilder) copyData(sub byte, body []byte) { s.msg('d', append([]byte{sub}, body...)) }
func (s *streamBuilder) newArchive(name, path string) {
	s.copyData('n', []byte(name+"\x00"+path+"\x00"))
}
func (s *streamBuilder) notice(msg string) { s.msg('N', []byte("SWARNING\x00M"+msg+"\x00\x00")) }
func (s *streamBuilder) dataRow(cols ...string) {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint16(len(cols)))
	for _, c := range cols {
		binary.Write(&b, binary.BigEndian, int32(len(c)))
		b.WriteString(c)
	}
	s.msg('D', b.Bytes())
}
func (s *streamBuilder) progress(n int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	s.copyData('p', b[:])
}

// runStream decodes a stream given as the bytes after CopyOutResponse.
func runStream(t testing.TB, data []byte, onNotice func(*pgconn.PgError)) *BaseBackup {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c1, c2 := net.Pipe()
	t.Cleanup(func() { cancel(); c1.Close(); c2.Close() })
	b := newBaseBackup(Start{}, c1, "test", func() bool { return true }, cancel)
	go b.readLoop(ctx, newWireReader(bytes.NewReader(data), 4096), onNotice)
	return b
}

func TestStreamDecode(t *testing.T) {
	base := bytes.Repeat([]byte("0123456789abcdef"), 300000) // spans several buffers
	ts := []byte("tablespace archive")
	pgm := []byte(`{"PostgreSQL-Backup-Manifest-Version": 1}`)
	var s streamBuilder
	s.newArchive("16384.tar", "/srv/ts1")
	s.copyData('d', ts)
	s.notice("WAL archiving is not enabled")
	s.newArchive("base.tar", "")
	for off := 0; off < len(base); off += 32768 {
		s.copyData('d', base[off:min(off+32768, len(base))])
		if off%(32768*7) == 0 {
			s.progress(int64(off))
			s.notice("mid-stream notice")
		}
	}
	s.copyData('m', nil)
	s.copyData('d', pgm[:10])
	s.copyData('d', pgm[10:])
	s.msg('c', nil)
	s.msg('T', []byte{0, 2})
	s.dataRow("0/3000100", "1")
	s.msg('C', []byte("BASE_BACKUP\x00"))
	s.msg('Z', []byte{'I'})

	notices := 0
	b := runStream(t, s.Bytes(), func(*pgconn.PgError) { notices++ })
	want := []struct {
		name, path string
		data       []byte
	}{{"16384.tar", "/srv/ts1", ts}, {"base.tar", "", base}}
	for _, w := range want {
		a, err := b.NextArchive()
		if err != nil {
			t.Fatalf("NextArchive: %v", err)
		}
		if a.Name != w.name || a.TablespacePath != w.path {
			t.Fatalf("archive %q %q, want %q %q", a.Name, a.TablespacePath, w.name, w.path)
		}
		got, err := io.ReadAll(a)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w.data) {
			t.Fatalf("archive %s: %d bytes, want %d", w.name, len(got), len(w.data))
		}
	}
	if _, err := b.NextArchive(); !errors.Is(err, io.EOF) {
		t.Fatalf("NextArchive after last: %v, want io.EOF", err)
	}
	var mb bytes.Buffer
	_, err := b.ManifestTo(&mb)
	if m := mb.Bytes(); err != nil || !bytes.Equal(m, pgm) {
		t.Fatalf("Manifest = %q, %v", m, err)
	}
	end, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if end.LSN != manifest.LSN(0x3000100) || end.Timeline != 1 {
		t.Fatalf("end = %+v", end)
	}
	if notices == 0 {
		t.Fatal("notices were not delivered")
	}
	if b.Streamed() != int64(len(base)+len(ts)+len(pgm)) {
		t.Fatalf("Streamed = %d", b.Streamed())
	}
}

func TestStreamErrors(t *testing.T) {
	tests := []struct {
		name  string
		build func(*streamBuilder)
		want  string
	}{
		{"server error mid-stream", func(s *streamBuilder) {
			s.newArchive("base.tar", "")
			s.copyData('d', []byte("abc"))
			s.msg('E', []byte("SERROR\x00C XX000\x00Mchecksum verification failure during base backup\x00\x00"))
		}, "checksum verification failure"},
		{"truncated", func(s *streamBuilder) {
			s.newArchive("base.tar", "")
			s.copyData('d', []byte("abc"))
			s.Truncate(s.Len() - 1)
		}, "unexpected EOF"},
		{"unknown copy type", func(s *streamBuilder) { s.copyData('x', nil) }, "unknown CopyData type"},
		{"no end LSN", func(s *streamBuilder) {
			s.newArchive("base.tar", "")
			s.msg('c', nil)
			s.msg('Z', []byte{'I'})
		}, "without reporting its end LSN"},
		{"not a tar", func(s *streamBuilder) { s.newArchive("base.zip", "") }, "not a tar archive"},
		{"bad length", func(s *streamBuilder) { s.WriteString("d\x00\x00\x00\x01") }, "protocol error"},
		{"huge message", func(s *streamBuilder) { s.WriteString("d\x7f\xff\xff\xffn") }, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s streamBuilder
			tt.build(&s)
			b := runStream(t, s.Bytes(), nil)
			var err error
			for err == nil {
				var a *Archive
				a, err = b.NextArchive()
				if err == nil {
					_, err = io.ReadAll(a)
				}
			}
			if errors.Is(err, io.EOF) {
				_, err = b.Finish()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestBuildBaseBackupCommand(t *testing.T) {
	tests := []struct {
		o       BackupOptions
		want    []string
		wantErr string
		not     []string
	}{
		{BackupOptions{}, []string{"LABEL 'pgstow'", "WAIT false", "TABLESPACE_MAP", "MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'CRC32C'"}, "", []string{"INCREMENTAL"}},
		{BackupOptions{Label: "it's", FastCheckpoint: true, MaxRate: 20 << 20, Compression: "lz4", SkipChecksumVerification: true},
			[]string{"LABEL 'it''s'", "CHECKPOINT 'fast'", "MAX_RATE 20480", "COMPRESSION 'lz4'", "VERIFY_CHECKSUMS false"}, "", nil},
		{BackupOptions{MaxRate: 1024}, nil, "32kB/s to 1GB/s", nil},
		{BackupOptions{Compression: "brotli"}, nil, "server compression", nil},
		{BackupOptions{ManifestChecksums: "md5"}, nil, "manifest checksum", nil},
		{BackupOptions{Incremental: true}, []string{"MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'CRC32C'", ", INCREMENTAL"}, "", nil},
		{BackupOptions{Incremental: true, ManifestChecksums: "sha256"}, nil, "incremental backup needs CRC32C", nil},
	}
	for _, tt := range tests {
		got, err := buildBaseBackupCommand(tt.o)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%+v: error %v, want %q", tt.o, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tt.o, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%q lacks %q", got, w)
			}
		}
		for _, w := range tt.not {
			if strings.Contains(got, w) {
				t.Errorf("%q has %q", got, w)
			}
		}
	}
}

func TestRedactPasswords(t *testing.T) {
	for in, secret := range map[string]string{
		"failed to connect to `host=x user=u password=hunter2 database=d`": "hunter2",
		"cannot parse `postgres://u:s3cret@h/db`":                          "s3cret",
	} {
		if out := redactPasswords(in); strings.Contains(out, secret) {
			t.Errorf("redactPasswords(%q) = %q", in, out)
		}
	}
}

// FuzzStreamDecode feeds arbitrary server bytes to the copy-stream
// decoder: it must end with data or an error, never panic or hang.
func FuzzStreamDecode(f *testing.F) {
	var s streamBuilder
	s.newArchive("base.tar", "")
	s.copyData('d', []byte("hello"))
	s.notice("n")
	s.copyData('m', nil)
	s.copyData('d', []byte("{}"))
	s.msg('c', nil)
	s.dataRow("0/1000000", "1")
	s.msg('Z', []byte{'I'})
	f.Add(s.Bytes())
	f.Add([]byte("d\x00\x00\x00\x05n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := runStream(t, data, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				a, err := b.NextArchive()
				if err != nil {
					break
				}
				if _, err := io.Copy(io.Discard, a); err != nil {
					break
				}
			}
			_, _ = b.ManifestTo(io.Discard)
			b.Finish()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("decoder hung")
		}
	})
}

// TestStreamReadsInPlace reads archives with reads of every size class,
// each into a window of a larger buffer: the bytes arrive in order, a
// large read is filled in place and whole (up to the archive's end), and
// nothing is written past a window, whatever the reads' sizes and the
// archive boundaries.
func TestStreamReadsInPlace(t *testing.T) {
	archives := [][]byte{
		bytes.Repeat([]byte("first archive "), 20000), // 280,000 bytes
		[]byte("tiny"),
		{},
		bytes.Repeat([]byte("third"), 100000),
	}
	var s streamBuilder
	for i, a := range archives {
		s.newArchive(fmt.Sprintf("%d.tar", i), "")
		for off := 0; off < len(a); off += 30000 {
			s.copyData('d', a[off:min(off+30000, len(a))])
			s.progress(int64(off))
		}
	}
	s.copyData('m', nil)
	s.msg('c', nil)
	s.dataRow("0/3000100", "1")
	s.msg('C', []byte("SELECT 1\x00"))
	s.msg('Z', []byte{'I'})

	for _, sizes := range [][]int{
		{directRead, 100, directRead * 3, 1, 70000},
		{1, 2, 3},
		{directRead * 20},
		{directRead - 1, directRead},
	} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			b := runStream(t, s.Bytes(), nil)
			const guard = 64
			for i, want := range archives {
				a, err := b.NextArchive()
				if err != nil {
					t.Fatalf("NextArchive %d: %v", i, err)
				}
				var got []byte
				for k := 0; ; k++ {
					size := sizes[k%len(sizes)]
					buf := bytes.Repeat([]byte{0xA5}, size+guard)
					n, err := a.Read(buf[:size])
					if n > 0 && size >= directRead && n != min(size, len(want)-len(got)) {
						t.Fatalf("archive %d: a read of %d gave %d of the %d left", i, size, n, len(want)-len(got))
					}
					if !bytes.Equal(buf[size:], bytes.Repeat([]byte{0xA5}, guard)) {
						t.Fatalf("archive %d: a read of %d wrote past its buffer", i, size)
					}
					got = append(got, buf[:n]...)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("archive %d: %v", i, err)
					}
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("archive %d: read %d bytes, want %d (or other bytes)", i, len(got), len(want))
				}
			}
			if _, err := b.NextArchive(); !errors.Is(err, io.EOF) {
				t.Fatalf("NextArchive after the last: %v", err)
			}
			if _, err := b.Finish(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
