package chunker

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/manifest"
)

// tableData returns n bytes that compress about as well as PostgreSQL
// heap pages of OLTP data do with lz4 (a little over 2×): rows of
// increasing ids and timestamps, small numbers, words from a small
// vocabulary and random hex tokens, in 8 KiB pages with some free space.
func tableData(seed uint64, n int) []byte {
	words := strings.Fields(`pending shipped delivered cancelled returned express standard
		priority economy warehouse north south east west central retail online store
		customer order invoice payment refund credit debit account balance review
		widget gadget sprocket bracket fastener hinge valve pump motor sensor cable`)
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]byte, 0, n+8192)
	var id, ts uint64 = 1000, 1700000000
	const hex = "0123456789abcdef"
	for len(out) < n {
		page := make([]byte, 0, 8192)
		page = binary.LittleEndian.AppendUint64(page, uint64(len(out))) // page header-ish
		page = append(page, make([]byte, 16)...)
		for len(page) < 8192-600 {
			id++
			ts += uint64(r.IntN(5))
			page = append(page, 0, 0, 0x18, 0x09, 0x01, 0, 0, 0, 0, 0, 0, 0) // tuple header-ish
			page = binary.LittleEndian.AppendUint64(page, id)
			page = binary.LittleEndian.AppendUint64(page, ts)
			page = binary.LittleEndian.AppendUint32(page, uint32(r.IntN(1000)))
			page = binary.LittleEndian.AppendUint32(page, uint32(r.IntN(100000)))
			for range 2 + r.IntN(6) {
				page = append(page, words[r.IntN(len(words))]...)
				page = append(page, ' ')
			}
			for range 32 {
				page = append(page, hex[r.IntN(16)])
			}
			page = append(page, `{"sku": "SKU-`...)
			page = strconv.AppendInt(page, int64(10000+r.IntN(5000)), 10)
			page = append(page, `", "qty": `...)
			page = strconv.AppendInt(page, int64(1+r.IntN(9)), 10)
			page = append(page, `, "status": "`...)
			page = append(page, words[r.IntN(5)]...)
			page = append(page, `", "channel": "`...)
			page = append(page, words[12+r.IntN(4)]...)
			page = append(page, `"}`...)
		}
		page = page[:cap(page)] // free space: zeros
		out = append(out, page...)
	}
	return out[:n]
}

func TestID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tc := range tests {
		if got := ID([]byte(tc.in)); got != tc.want {
			t.Errorf("ID(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestCompressRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"one byte", []byte{7}},
		{"small text", []byte(strings.Repeat("base/16384/2619 ", 100))},
		{"zeros", make([]byte, 1<<20)},
		{"one block", tableData(1, lz4BlockSize)},
		{"one block and a byte", tableData(2, lz4BlockSize+1)},
		{"incompressible", content(4, 1<<20)},
	}
	comp := NewCompressor() // reused across cases, as workers do
	dec := NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var frame bytes.Buffer
			crc, err := comp.Compress(&frame, tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if want := crc32.Checksum(frame.Bytes(), manifest.Castagnoli); crc != want {
				t.Errorf("CRC %08x, want %08x", crc, want)
			}
			if frame.Len() > CompressBound(len(tc.raw)) {
				t.Errorf("frame of %d bytes exceeds CompressBound(%d) = %d", frame.Len(), len(tc.raw), CompressBound(len(tc.raw)))
			}
			checkFrameHeader(t, frame.Bytes(), len(tc.raw))

			var out bytes.Buffer
			if err := dec.Decompress(&out, frame.Bytes(), ID(tc.raw)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tc.raw) {
				t.Fatalf("round trip of %d bytes gave %d different bytes", len(tc.raw), out.Len())
			}

			// Appending to buffers that already hold data: the CRC and
			// the decoded bytes cover only what was appended.
			prefix := []byte("previous frame")
			appended := bytes.NewBuffer(bytes.Clone(prefix))
			crc2, err := comp.Compress(appended, tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(appended.Bytes()[len(prefix):], frame.Bytes()) || crc2 != crc {
				t.Error("compressing after existing data gave a different frame or CRC")
			}
			out2 := bytes.NewBuffer(bytes.Clone(prefix))
			if err := dec.Decompress(out2, frame.Bytes(), ""); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out2.Bytes(), concat(prefix, tc.raw)) {
				t.Error("decompressing after existing data did not append")
			}
		})
	}
}

// checkFrameHeader checks the frame descriptor: the settings that make a
// chunk readable by the lz4 CLI and self-checking.
func checkFrameHeader(t *testing.T, frame []byte, rawSize int) {
	t.Helper()
	if len(frame) < 7 || binary.LittleEndian.Uint32(frame) != 0x184D2204 {
		t.Fatalf("not an LZ4 frame: % x", frame[:min(len(frame), 8)])
	}
	flg, bd := frame[4], frame[5]
	got := map[string]bool{
		"version 1":          flg>>6 == 1,
		"independent blocks": flg&0x20 != 0,
		"block checksum":     flg&0x10 != 0,
		"content size":       flg&0x08 != 0,
		"content checksum":   flg&0x04 != 0,
		"4 MB blocks":        bd>>4&7 == 7,
	}
	want := map[string]bool{
		"version 1":          true,
		"independent blocks": true,
		"block checksum":     false,
		"content size":       rawSize > 0,
		"content checksum":   true,
		"4 MB blocks":        true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("frame descriptor (-want +got):\n%s", diff)
	}
	if rawSize > 0 {
		if size := binary.LittleEndian.Uint64(frame[6:14]); size != uint64(rawSize) {
			t.Errorf("content size %d, want %d", size, rawSize)
		}
	}
}

// TestDecompressCorrupt flips every byte of a frame in turn: the frame's
// own checks (descriptor checksum, block sizes, content checksum, content
// size) must catch each one, without help from the chunk ID.
func TestDecompressCorrupt(t *testing.T) {
	raw := tableData(5, 6000)
	var frame bytes.Buffer
	if _, err := NewCompressor().Compress(&frame, raw); err != nil {
		t.Fatal(err)
	}
	dec := NewDecompressor()
	harmless := 0
	var out bytes.Buffer
	// Each Decompress takes 4 MB block buffers from sync.Pool, which the
	// race detector defeats on purpose: test fewer positions there.
	stride := 1
	if raceEnabled {
		stride = 13
	}
	for _, flip := range []byte{0x01, 0x80, 0xff} {
		for i := 0; i < frame.Len(); i += stride {
			bad := bytes.Clone(frame.Bytes())
			bad[i] ^= flip
			out.Reset()
			if err := dec.Decompress(&out, bad, ""); err == nil {
				// A flipped bit in the offset of a match that copies
				// from a run of zeros (free space in a page) can leave
				// the content unchanged: that is no corruption of the
				// chunk. Anything else must fail.
				if !bytes.Equal(out.Bytes(), raw) {
					t.Fatalf("byte %d of %d xor %#x: corrupt content and no error", i, frame.Len(), flip)
				}
				harmless++
			}
		}
	}
	if harmless > 3*frame.Len()/stride/100 {
		t.Errorf("%d of %d flips went unnoticed", harmless, 3*frame.Len())
	}
	// The Decompressor is still usable after all those errors.
	out.Reset()
	if err := dec.Decompress(&out, frame.Bytes(), ID(raw)); err != nil || !bytes.Equal(out.Bytes(), raw) {
		t.Errorf("intact frame after errors: %v", err)
	}
}

func TestDecompressErrors(t *testing.T) {
	raw := tableData(6, 50000)
	var frame bytes.Buffer
	if _, err := NewCompressor().Compress(&frame, raw); err != nil {
		t.Fatal(err)
	}
	f := frame.Bytes()
	tests := []struct {
		name   string
		src    []byte
		wantID string
		want   string
	}{
		{"wrong ID", f, ID([]byte("another chunk")), "chunk " + ID([]byte("another chunk")) + ": content hash mismatch"},
		{"empty", nil, "", "unexpected EOF"},
		{"not a frame", []byte("hello, world"), "", "decompress lz4 frame"},
		{"truncated header", f[:5], "", "unexpected EOF"},
		{"truncated block", f[:len(f)/2], "", "unexpected EOF"},
		{"no checksum", f[:len(f)-4], "", "unexpected EOF"},
		{"no end mark", f[:len(f)-8], "", "unexpected EOF"},
		{"trailing garbage", concat(f, []byte("xyzw")), "", "decompress"},
		{"error names the chunk", f[:len(f)/2], ID(raw), "decompress chunk " + ID(raw)},
	}
	dec := NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := dec.Decompress(&out, tc.src, tc.wantID)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestLZ4CLI checks that the frames are standard: the reference lz4 tool
// decompresses an archive's frames, concatenated, to the original tar.
func TestLZ4CLI(t *testing.T) {
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		t.Fatalf("the lz4 CLI is needed to check frame compatibility (apt-get install lz4, or scripts/install-deps.sh): %v", err)
	}
	var members []member
	for i := range 8 {
		members = append(members, file(fmt.Sprintf("base/16384/%d", 16400+i), tableData(uint64(i), 1000+i*200000)))
	}
	members = append(members, file("global/pg_control", content(99, 8192)), dir("pg_wal"))
	data := makeTar(t, tar.FormatUnknown, members...)
	res, err := split(t, data, 512<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	comp := NewCompressor()
	var frames bytes.Buffer
	for _, c := range res.chunks {
		if _, err := comp.Compress(&frames, c.Data); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d chunks, %d raw bytes, %d compressed", len(res.chunks), len(data), frames.Len())
	cmd := exec.CommandContext(t.Context(), lz4, "-dc")
	cmd.Stdin = &frames
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 -dc: %v: %s", err, stderr.Bytes())
	}
	if !bytes.Equal(out, data) {
		t.Fatalf("lz4 -dc gave %d bytes that differ from the %d-byte archive", len(out), len(data))
	}

	// The other way round: frames written by the CLI (no content size,
	// linked blocks with -BD) decode too, growing the output as they go.
	for _, args := range [][]string{{"-1", "-c"}, {"-1", "-BD", "-B4", "-c"}, {"-9", "--content-size", "-c"}} {
		raw := data[:min(len(data), 5<<20)]
		cmd := exec.CommandContext(t.Context(), lz4, args...)
		cmd.Stdin = bytes.NewReader(raw)
		frame, err := cmd.Output()
		if err != nil {
			t.Fatalf("lz4 %v: %v", args, err)
		}
		var got bytes.Buffer
		if err := NewDecompressor().Decompress(&got, frame, ID(raw)); err != nil {
			t.Errorf("frame from lz4 %v: %v", args, err)
		}
	}
}

// TestCompressDeterministic checks that a reused Compressor produces the
// same frame as a fresh one, so state never leaks between chunks.
func TestCompressDeterministic(t *testing.T) {
	table := tableData(1, lz4BlockSize+1000)
	inputs := [][]byte{table, []byte("x"), nil, content(2, 100000), table}
	reused := NewCompressor()
	for i, raw := range inputs {
		var a, b bytes.Buffer
		if _, err := reused.Compress(&a, raw); err != nil {
			t.Fatal(err)
		}
		if _, err := NewCompressor().Compress(&b, raw); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("input %d: reused Compressor's frame differs from a fresh one's", i)
		}
	}
}

// TestDecompressTrustID: with TrustID and a chunk id, the SHA-256 check
// stands in for the frame's content checksum, so a corrupt checksum field
// over intact content passes and corrupt content still fails; without an
// id, or without TrustID, the checksum is checked.
func TestDecompressTrustID(t *testing.T) {
	raw := tableData(3, 6000)
	var frame bytes.Buffer
	if _, err := NewCompressor().Compress(&frame, raw); err != nil {
		t.Fatal(err)
	}
	badSum := bytes.Clone(frame.Bytes())
	badSum[len(badSum)-1] ^= 0x5a // the content checksum is the last 4 bytes
	id := ID(raw)
	for _, tc := range []struct {
		name    string
		trust   bool
		frame   []byte
		id      string
		wantErr string
	}{
		{"trusted id, corrupt checksum field", true, badSum, id, ""},
		{"untrusted, corrupt checksum field", false, badSum, id, "content checksum mismatch"},
		{"trusted but no id", true, badSum, "", "content checksum mismatch"},
		{"trusted id, wrong id", true, frame.Bytes(), ID([]byte("other")), "content hash mismatch"},
		{"trusted id, intact", true, frame.Bytes(), id, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := &Decompressor{TrustID: tc.trust}
			var out bytes.Buffer
			err := dec.Decompress(&out, tc.frame, tc.id)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want success", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
			case tc.wantErr == "" && !bytes.Equal(out.Bytes(), raw):
				t.Fatal("content differs")
			}
		})
	}
}
