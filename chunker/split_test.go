package chunker

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/manifest"
)

// readers are the ways the tests feed an archive to the Splitter: whatever
// the reader's granularity, the results must be the same.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", nil},
	{"one-byte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"data-err", iotest.DataErrReader}, // io.EOF together with the last bytes
}

func TestSplitter(t *testing.T) {
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	manyTiny := make([]member, 300)
	for i := range manyTiny {
		manyTiny[i] = file(fmt.Sprintf("base/1/%d", i), content(uint64(i), i%40))
	}
	tests := []struct {
		name    string
		target  int
		format  tar.Format
		members []member
		tail    int // zero bytes appended after the archive, as GNU tar pads
	}{
		{name: "empty archive", target: 4096},
		{name: "one small file", target: 4096, members: []member{file("PG_VERSION", []byte("15\n"))}},
		{name: "record exactly fills a chunk", target: 4096, members: []member{file("a", content(1, 4096-512))}},
		{name: "two records exactly fill a chunk", target: 4096, members: []member{
			file("a", content(1, 1000)), file("b", content(2, 4096-1024-512-512)),
		}},
		{name: "record one block over target", target: 4096, members: []member{file("a", content(1, 4096-512+1))}},
		{name: "record one byte over target", target: 4095, members: []member{file("a", content(1, 4096-512))}},
		{name: "odd target", target: 5000, members: []member{
			file("a", content(1, 3000)), file("b", content(2, 12345)), file("c", content(3, 100)),
		}},
		{name: "record does not fit after others", target: 4096, members: []member{
			file("a", content(1, 2000)), file("b", content(2, 2000)), file("c", content(3, 10)),
		}},
		{name: "large member between small ones", target: 4096, members: []member{
			file("a", content(1, 100)), file("big", content(2, 50000)), file("c", content(3, 100)),
		}},
		{name: "large member is a multiple of target", target: 4096, members: []member{
			file("a", content(1, 100)), file("big", content(2, 4*4096-512)), file("c", content(3, 100)),
		}},
		{name: "consecutive large members", target: 4096, members: []member{
			file("big1", content(1, 10000)), file("big2", content(2, 10000)),
		}},
		{name: "many tiny files", target: 4096, members: manyTiny},
		{name: "empty files, dirs, symlinks", target: 2048, members: []member{
			dir("base"), dir("base/1/"), file("base/1/empty", nil), file("./base/1/x", content(1, 600)),
			symlink("pg_tblspc/16384", "/var/lib/ts"), file("postmaster.opts", nil), dir("./"), dir("./pg_wal/"),
		}},
		{name: "modes", target: 4096, members: []member{
			{name: "a", mode: 0o4755}, {name: "b", mode: 0o644}, {name: "c", typ: tar.TypeDir, mode: 0o700},
		}},
		{name: "ustar prefix", target: 4096, format: tar.FormatUSTAR, members: []member{
			file(long('d', 90)+"/"+long('f', 90), content(1, 10)),
		}},
		{name: "PAX long names", target: 4096, format: tar.FormatPAX, members: []member{
			file("base/"+long('p', 150), content(1, 10)),
			symlink("l/"+long('s', 120), "/"+long('t', 130)),
			dir("d/" + long('q', 200) + "/"),
		}},
		{name: "GNU long names", target: 4096, format: tar.FormatGNU, members: []member{
			file("base/"+long('g', 150), content(1, 10)),
			symlink("l/"+long('s', 120), "/"+long('t', 130)),
			dir("d/" + long('q', 200) + "/"),
		}},
		{name: "headers alone exceed target", target: 1024, format: tar.FormatPAX, members: []member{
			file("x", content(1, 10)), file(long('h', 3000), content(2, 700)), file("y", content(3, 10)),
		}},
		{name: "headers overflow a partly full chunk", target: 4096, format: tar.FormatGNU, members: []member{
			file("a", content(1, 2500)), file(long('h', 1000), content(2, 10)), file("b", content(3, 10)),
		}},
		{name: "minimum target", target: 512, format: tar.FormatPAX, members: []member{
			file("a", content(1, 1)), file(long('h', 700), content(2, 1000)), dir("d"), file("b", nil),
		}},
		{name: "GNU record padding in trailer", target: 4096, tail: 10240 - 3*512 - 1024, members: []member{
			file("a", content(1, 1000)),
		}},
		{name: "trailer larger than target", target: 2048, tail: 8192, members: []member{
			file("a", content(1, 1000)),
		}},
		{name: "trailer fills chunk exactly", target: 2048, members: []member{
			file("a", content(1, 500)),
		}},
		{name: "trailer one block too many", target: 2048, tail: 512, members: []member{
			file("a", content(1, 500)),
		}},
		{name: "trailer after full chunk", target: 2048, members: []member{
			file("a", content(1, 1500)),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := makeTar(t, tc.format, tc.members...)
			data = append(data, make([]byte, tc.tail)...)
			records, trailer, wantFiles := reference(t, data, 3)
			wantSizes := modelCuts(records, trailer, tc.target)
			for _, rd := range readers {
				t.Run(rd.name, func(t *testing.T) {
					res, err := split(t, data, tc.target, rd.wrap)
					if err != nil {
						t.Fatal(err)
					}
					checkChunks(t, data, tc.target, res)
					if diff := cmp.Diff(wantSizes, chunkSizes(res.chunks)); diff != "" {
						t.Errorf("chunk sizes (-model +got):\n%s", diff)
					}
					if diff := cmp.Diff(wantFiles, res.files); diff != "" {
						t.Errorf("files (-archive/tar +got):\n%s", diff)
					}
					checkFileOffsets(t, data, res.files)
				})
			}
		})
	}
}

// checkFileOffsets checks that each file's Offset and CRC32C point at its
// content in the archive, which is what a restore of one file relies on.
func checkFileOffsets(t *testing.T, data []byte, files []manifest.File) {
	t.Helper()
	for _, f := range files {
		if f.Type != manifest.TypeFile {
			if f.Offset%blockSize != 0 || isZeroBlock(data[f.Offset:f.Offset+blockSize]) {
				t.Errorf("%s: Offset %d is not a header block", f.Path, f.Offset)
			}
			continue
		}
		if got := crc32.Checksum(data[f.Offset:f.Offset+f.Size], manifest.Castagnoli); got != f.CRC32C {
			t.Errorf("%s: CRC32C of data at Offset %d is %08x, recorded %08x", f.Path, f.Offset, got, f.CRC32C)
		}
	}
}

// TestSplitterLayout pins a few layouts by hand, so that the model the
// other tests compare against is itself checked.
func TestSplitterLayout(t *testing.T) {
	tests := []struct {
		name    string
		target  int
		members []member
		want    []int
	}{
		{"empty archive is one trailer chunk", 4096, nil, []int{1024}},
		{"record exactly target", 4096, []member{file("a", content(1, 3584))}, []int{4096, 1024}},
		{"record target+512", 4096, []member{file("a", content(1, 3585))}, []int{4096, 512, 1024}},
		{"record target+1", 4095, []member{file("a", content(1, 3584))}, []int{4095, 1, 1024}},
		{"small files share a chunk with the trailer", 4096, []member{
			file("a", content(1, 10)), file("b", content(2, 10)),
		}, []int{3072}},
		{"large member cut at fixed offsets", 4096, []member{
			file("a", content(1, 10)), file("big", content(2, 20000)), file("c", content(3, 10)),
		}, []int{1024, 4096, 4096, 4096, 4096, 4096, 512, 2048}},
		{"tiny files four to a chunk", 4096, []member{
			file("a", []byte("a")), file("b", []byte("b")), file("c", []byte("c")), file("d", []byte("d")),
			file("e", []byte("e")),
		}, []int{4096, 2048}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := makeTar(t, tar.FormatUnknown, tc.members...)
			res, err := split(t, data, tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkChunks(t, data, tc.target, res)
			if diff := cmp.Diff(tc.want, chunkSizes(res.chunks)); diff != "" {
				t.Errorf("chunk sizes (-want +got):\n%s", diff)
			}
			records, trailer, _ := reference(t, data, 3)
			if diff := cmp.Diff(tc.want, modelCuts(records, trailer, tc.target)); diff != "" {
				t.Errorf("model chunk sizes (-want +model):\n%s", diff)
			}
		})
	}
}

func TestSplitterDeterministic(t *testing.T) {
	data := makeTar(t, tar.FormatPAX,
		dir("base"), file("base/1/1259", content(1, 30000)), file("base/1/1249", content(2, 700)),
		file("global/pg_control", content(3, 8192)))
	const target = 8192
	first, err := split(t, data, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := split(t, data, target, iotest.OneByteReader)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(chunkIDs(first.chunks), chunkIDs(second.chunks)); diff != "" {
		t.Errorf("chunk IDs differ between runs:\n%s", diff)
	}
}

// TestSplitterDedup checks the property the cutting rule exists for: a
// large file yields the same chunks whatever changed before it.
func TestSplitterDedup(t *testing.T) {
	const target = 16 << 10
	big := file("base/16384/2619", content(9, 5*target+3000))
	tests := []struct {
		name          string
		before, after []member
	}{
		{"small file grows", []member{file("PG_VERSION", []byte("15\n"))}, []member{file("PG_VERSION", content(1, 9000))}},
		{"file added", []member{file("a", content(1, 100))}, []member{file("a", content(1, 100)), file("b", content(2, 5000))}},
		{"file removed", []member{file("a", content(1, 100)), file("b", content(2, 12000))}, []member{file("a", content(1, 100))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pieces := func(members []member) (ids []string, other int) {
				t.Helper()
				data := makeTar(t, tar.FormatUnknown, append(members, big, file("after", content(3, 10)))...)
				res, err := split(t, data, target, nil)
				if err != nil {
					t.Fatal(err)
				}
				var bigFile manifest.File
				for _, f := range res.files {
					if f.Path == big.name {
						bigFile = f
					}
				}
				start, end := bigFile.Offset-blockSize, bigFile.Offset+int64(padded(int(bigFile.Size)))
				for _, c := range res.chunks {
					if c.Offset >= start && c.Offset < end {
						ids = append(ids, ID(c.Data))
					} else {
						other++
					}
				}
				return ids, other
			}
			idsBefore, _ := pieces(tc.before)
			idsAfter, _ := pieces(tc.after)
			if len(idsBefore) != 6 {
				t.Fatalf("large file in %d chunks, want 6", len(idsBefore))
			}
			if diff := cmp.Diff(idsBefore, idsAfter); diff != "" {
				t.Errorf("large file's chunks changed:\n%s", diff)
			}
		})
	}
}

func TestSplitterFormats(t *testing.T) {
	v7 := func(name string, typeflag byte, body []byte) []byte {
		blk := rawHeader(name, typeflag, int64(len(body)))
		copy(blk[offMagic:], make([]byte, 8)) // no magic: v7
		fixChecksum(blk)
		return concat(blk, pad(body))
	}
	base256 := rawHeader("big", '0', 0)
	setField(base256, offSize, []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01}) // 513
	paxed := func(records string, hdr []byte, body []byte) []byte {
		return concat(rawHeader("PaxHeaders/x", 'x', int64(len(records))), pad([]byte(records)), hdr, pad(body))
	}
	gnu := func(typeflag byte, val string, hdr []byte) []byte {
		return concat(rawHeader("././@LongLink", typeflag, int64(len(val)+1)), pad([]byte(val+"\x00")), hdr)
	}
	signedSum := rawHeader("\xe9t\xe9", '0', 0) // Latin-1 name: signed and unsigned sums differ
	var sum int64
	for i, c := range signedSum {
		if i >= offChksum && i < offChksum+8 {
			c = ' '
		}
		sum += int64(int8(c))
	}
	copy(signedSum[offChksum:], fmt.Sprintf("%06o\x00 ", sum))
	prefixOnGNU := rawHeader("name", '0', 0)
	copy(prefixOnGNU[offMagic:], "ustar  \x00")
	copy(prefixOnGNU[offPrefix:], "not-a-prefix")
	fixChecksum(prefixOnGNU)
	mtimeNeg := rawHeader("old", '0', 0)
	setField(mtimeNeg, offMTime, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}) // -2
	withMode := func(mode string) []byte {
		blk := rawHeader("m", '0', 0)
		copy(blk[offMode:offMode+8], mode)
		fixChecksum(blk)
		return blk
	}
	global := makeTar(t, tar.FormatPAX,
		member{typ: tar.TypeXGlobalHeader, name: "pax_global_header", pax: map[string]string{"comment": "hello"}},
		file("a", []byte("x")))

	tests := []struct {
		name string
		data []byte
		want []manifest.File
	}{
		{"v7 file and slash directory", concat(v7("./v7file", '\x00', []byte("hello")), v7("v7dir/", '\x00', nil), endMarker), []manifest.File{
			{Path: "v7file", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Size: 5, CRC32C: crc32.Checksum([]byte("hello"), manifest.Castagnoli), Offset: 512},
			{Path: "v7dir", Type: manifest.TypeDir, Mode: 0o644, MTime: testMTime.Unix(), Offset: 1024},
		}},
		{"base-256 size", concat(base256, pad(content(1, 513)), endMarker), []manifest.File{
			{Path: "big", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Size: 513, CRC32C: crc32.Checksum(content(1, 513), manifest.Castagnoli), Offset: 512},
		}},
		{"negative base-256 mtime", concat(mtimeNeg, endMarker), []manifest.File{
			{Path: "old", Type: manifest.TypeFile, Mode: 0o644, MTime: -2, Offset: 512},
		}},
		{"signed checksum", concat(signedSum, endMarker), []manifest.File{
			{Path: "\xe9t\xe9", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Offset: 512},
		}},
		{"GNU header has no prefix", concat(prefixOnGNU, endMarker), []manifest.File{
			{Path: "name", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Offset: 512},
		}},
		{"mode with type bits and spaces", concat(withMode(" 100755 "), endMarker), []manifest.File{
			{Path: "m", Type: manifest.TypeFile, Mode: 0o755, MTime: testMTime.Unix(), Offset: 512},
		}},
		{"PAX size, mtime and path override the header", concat(paxed(
			paxRecord("path", "pax/name")+paxRecord("size", "3")+paxRecord("mtime", "1234.75")+paxRecord("uname", "postgres"),
			rawHeader("short", '0', 0), []byte("abc")), endMarker), []manifest.File{
			{Path: "pax/name", Type: manifest.TypeFile, Mode: 0o644, MTime: 1234, Size: 3, CRC32C: crc32.Checksum([]byte("abc"), manifest.Castagnoli), Offset: 1536},
		}},
		{"PAX negative fractional mtime", concat(paxed(paxRecord("mtime", "-1.5"), rawHeader("f", '0', 0), nil), endMarker), []manifest.File{
			{Path: "f", Type: manifest.TypeFile, Mode: 0o644, MTime: -2, Offset: 1536},
		}},
		{"PAX empty path keeps the header's", concat(paxed(paxRecord("path", ""), rawHeader("hdrname", '0', 0), nil), endMarker), []manifest.File{
			{Path: "hdrname", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Offset: 1536},
		}},
		{"PAX linkpath", concat(paxed(paxRecord("linkpath", "/long/target"), rawHeader("ln", '2', 0), nil), endMarker), []manifest.File{
			{Path: "ln", Type: manifest.TypeSymlink, Mode: 0o644, MTime: testMTime.Unix(), LinkTarget: "/long/target", Offset: 1024},
		}},
		{"GNU long name and link", concat(gnu('L', "gnu/name", nil), gnu('K', "/gnu/target", rawHeader("x", '2', 0)), endMarker), []manifest.File{
			{Path: "gnu/name", Type: manifest.TypeSymlink, Mode: 0o644, MTime: testMTime.Unix(), LinkTarget: "/gnu/target", Offset: 2048},
		}},
		{"directory with size ignores it", concat(rawHeader("d/", '5', 1000), endMarker), []manifest.File{
			{Path: "d", Type: manifest.TypeDir, Mode: 0o644, MTime: testMTime.Unix(), Offset: 0},
		}},
		{"hostile names are kept", concat(rawHeader("../../etc/passwd", '0', 0), rawHeader("/abs", '5', 0), endMarker), []manifest.File{
			{Path: "../../etc/passwd", Type: manifest.TypeFile, Mode: 0o644, MTime: testMTime.Unix(), Offset: 512},
			{Path: "/abs", Type: manifest.TypeDir, Mode: 0o644, MTime: testMTime.Unix(), Offset: 512},
		}},
		{"global PAX header is kept but not a file", global, []manifest.File{
			{Path: "a", Type: manifest.TypeFile, Mode: 0o600, MTime: testMTime.Unix(), Size: 1, CRC32C: crc32.Checksum([]byte("x"), manifest.Castagnoli), Offset: int64(len(global)) - 1024 - 512},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []int{512, 1536, 4096} {
				res, err := split(t, tc.data, target, nil)
				if err != nil {
					t.Fatalf("target %d: %v", target, err)
				}
				checkChunks(t, tc.data, target, res)
				want := make([]manifest.File, len(tc.want))
				for i, f := range tc.want {
					f.Archive = 3
					want[i] = f
				}
				if diff := cmp.Diff(want, res.files); diff != "" {
					t.Errorf("target %d: files (-want +got):\n%s", target, diff)
				}
			}
		})
	}
}

func TestSplitterErrors(t *testing.T) {
	valid := makeTar(t, tar.FormatUnknown, file("a", content(1, 1000)), file("b", content(2, 100)))
	flipped := func(off int) []byte {
		b := bytes.Clone(valid)
		b[off] ^= 0x20
		return b
	}
	garbage := pad([]byte("this is not a tar archive, it is a text file\n"))
	huge := rawHeader("huge", '0', 0)
	setField(huge, offSize, []byte{0x80, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0}) // 2^62
	negative := rawHeader("neg", '0', 0)
	setField(negative, offSize, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	badMode := rawHeader("m", '0', 0)
	setField(badMode, offMode, []byte("0006x4\x00\x00"))
	pax := func(records string) []byte {
		return concat(rawHeader("PaxHeaders/x", 'x', int64(len(records))), pad([]byte(records)), rawHeader("f", '0', 0), endMarker)
	}

	tests := []struct {
		name   string
		data   []byte
		target int
		is     error  // errors.Is target, if any
		want   string // substring of the message
	}{
		{"empty input", nil, 4096, io.ErrUnexpectedEOF, "offset 0 without an end-of-archive marker"},
		{"truncated header", valid[:1536+100], 4096, io.ErrUnexpectedEOF, "tar header at offset 1536"},
		{"truncated content", valid[:1000], 4096, io.ErrUnexpectedEOF, `"a" at offset 0: content truncated at offset 1000`},
		{"truncated padding", valid[:512+1000+10], 4096, io.ErrUnexpectedEOF, "content truncated"},
		{"no end-of-archive marker", valid[:len(valid)-1024], 4096, io.ErrUnexpectedEOF, "without an end-of-archive marker"},
		{"one zero block", valid[:len(valid)-512], 4096, io.ErrUnexpectedEOF, "inside its end-of-archive marker"},
		{"half a zero block", valid[:len(valid)-300], 4096, io.ErrUnexpectedEOF, "inside its end-of-archive marker"},
		{"bad checksum first header", flipped(3), 4096, nil, "offset 0: tar header checksum mismatch"},
		{"bad checksum second header", flipped(1536 + 1), 4096, nil, "offset 1536: tar header checksum mismatch"},
		{"garbage", concat(garbage, endMarker), 4096, nil, "offset 0: not a tar header"},
		{"garbage after member", concat(valid[:1536], garbage), 4096, nil, "offset 1536: not a tar header"},
		{"zero block then header", concat(make([]byte, 512), valid), 4096, nil, "offset 512: zero block followed by a non-zero block"},
		{"zero block then header, small target", concat(valid[:len(valid)-1024], make([]byte, 512), valid), 1024, nil, "zero block followed by a non-zero block"},
		{"hard link", concat(rawHeader("h", '1', 0), endMarker), 4096, nil, "hard link"},
		{"char device", concat(rawHeader("c", '3', 0), endMarker), 4096, nil, `unsupported type '3'`},
		{"huge size", concat(huge, content(1, 5000)), 4096, io.ErrUnexpectedEOF, "content truncated"},
		{"negative size", concat(negative, endMarker), 4096, nil, "invalid size field"},
		{"bad mode", concat(badMode, endMarker), 4096, nil, "invalid mode field"},
		{"PAX header too large", concat(rawHeader("PaxHeaders/x", 'x', 2<<20), endMarker), 4096, nil, "too large"},
		{"malformed PAX record", pax("garbage\n"), 4096, nil, "malformed PAX record"},
		{"PAX record length too long", pax("99 path=x\n"), 4096, nil, "malformed PAX record"},
		{"PAX record without newline", pax("10 path=xy"), 4096, nil, "malformed PAX record"},
		{"PAX bad size", pax(paxRecord("size", "-1")), 4096, nil, "invalid PAX size"},
		{"PAX bad mtime", pax(paxRecord("mtime", "1.2.3")), 4096, nil, "invalid PAX mtime"},
		{"extended header then end", concat(rawHeader("././@LongLink", 'L', 3), pad([]byte("ab\x00")), endMarker), 4096, nil, "followed by the end-of-archive marker"},
		{"extended header then EOF", concat(rawHeader("././@LongLink", 'L', 3), pad([]byte("ab\x00"))), 4096, io.ErrUnexpectedEOF, "tar header at offset 1024"},
		{"extended header data truncated", concat(rawHeader("././@LongLink", 'L', 3000), make([]byte, 100)), 4096, io.ErrUnexpectedEOF, "data truncated"},
		{"extended headers without end", bytes.Repeat(concat(rawHeader("././@LongLink", 'L', maxExtSize), make([]byte, maxExtSize)), 5), 4096, nil, "bytes of headers"},
		{"global PAX after extended header", concat(rawHeader("././@LongLink", 'L', 3), pad([]byte("ab\x00")), rawHeader("g", 'g', 0), endMarker), 4096, nil, "global PAX header after an extended header"},
		{"target below a block", valid, 511, nil, "below the tar block size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, rd := range readers {
				_, err := split(t, tc.data, tc.target, rd.wrap)
				if err == nil {
					t.Fatalf("%s: no error", rd.name)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("%s: error %q is not %v", rd.name, err, tc.is)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: error %q does not contain %q", rd.name, err, tc.want)
				}
			}
		})
	}
}

// TestSplitterErrorIsFinal checks that Next keeps failing after an error
// instead of resuming in the middle of a broken archive.
func TestSplitterErrorIsFinal(t *testing.T) {
	s := NewSplitter(bytes.NewReader([]byte("garbage")), 4096, 0, func() []byte { return make([]byte, 0, 4096) })
	_, err1 := s.Next()
	_, err2 := s.Next()
	if err1 == nil || err1 != err2 {
		t.Errorf("errors %v then %v, want the same error twice", err1, err2)
	}
}

func TestSplitterBufferSource(t *testing.T) {
	data := makeTar(t, tar.FormatUnknown, file("a", content(1, 3000)), file("b", content(2, 9000)))
	t.Run("larger buffers are used up to the target only", func(t *testing.T) {
		const target = 2048
		s := NewSplitter(bytes.NewReader(data), target, 0, func() []byte { return make([]byte, 0, 3*target) })
		var all []byte
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Data) > target {
				t.Fatalf("chunk of %d bytes, target %d", len(c.Data), target)
			}
			all = append(all, c.Data...)
		}
		if !bytes.Equal(all, data) {
			t.Error("chunks differ from the input")
		}
	})
	t.Run("small buffer is an error", func(t *testing.T) {
		s := NewSplitter(bytes.NewReader(data), 4096, 0, func() []byte { return make([]byte, 0, 100) })
		if _, err := s.Next(); err == nil || !strings.Contains(err.Error(), "capacity 100") {
			t.Errorf("error %v, want one about the buffer capacity", err)
		}
	})
	t.Run("no buffer taken after the last chunk", func(t *testing.T) {
		for _, target := range []int{1024, 2048, 4096, 8192} {
			gets, chunks := 0, 0
			s := NewSplitter(bytes.NewReader(data), target, 0, func() []byte { gets++; return make([]byte, 0, target) })
			for {
				_, err := s.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				chunks++
			}
			if gets != chunks {
				t.Errorf("target %d: %d buffers taken for %d chunks", target, gets, chunks)
			}
		}
	})
}

// TestSplitterNoAllocPerMember checks that a large member costs no
// allocation: content streams through the pooled buffers.
func TestSplitterNoAllocPerMember(t *testing.T) {
	data := makeTar(t, tar.FormatUnknown, file("big", content(1, 1<<20)))
	buf := make([]byte, 0, 64<<10)
	r := bytes.NewReader(data)
	allocs := testing.AllocsPerRun(10, func() {
		r.Reset(data)
		s := NewSplitter(r, 64<<10, 0, func() []byte { return buf })
		for {
			if _, err := s.Next(); err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
		}
	})
	// The Splitter, its Files slice and the one path string.
	if allocs > 6 {
		t.Errorf("%.0f allocations to split a 1 MiB member into 16 chunks", allocs)
	}
}

func TestParseNumeric(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"00000001750\x00", 0o1750, true},
		{"     1750 \x00", 0o1750, true},
		{"\x00\x00\x00\x00", 0, true},
		{"", 0, true},
		{"1234567", 0o1234567, true},
		{"12 34", 0, false},
		{"0009", 0, false},
		{"777777777777777777777777", 0, false}, // overflows int64
		{"\x80\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00", 1 << 33, true},
		{"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", -1, true},
		{"\x80\x7f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0, false}, // 2^87-1
		{"\x80\x00\x00\x00\x7f\xff\xff\xff\xff\xff\xff\xff", 1<<63 - 1, true},
		{"\x80\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00", 0, false}, // 2^63
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, ok := parseNumeric([]byte(tc.in))
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("parseNumeric(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		name string
		dir  bool
		want string
	}{
		{"./base/1/1259", false, "base/1/1259"},
		{"base/", true, "base"},
		{"./base/", true, "base"},
		{"./", true, "."},
		{"/", true, "/"},
		{"file/", false, "file/"},
		{"../x", false, "../x"},
		{"", false, ""},
	}
	for _, tc := range tests {
		if got := cleanName(tc.name, tc.dir); got != tc.want {
			t.Errorf("cleanName(%q, %v) = %q, want %q", tc.name, tc.dir, got, tc.want)
		}
	}
}
