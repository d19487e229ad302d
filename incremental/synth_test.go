package incremental

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

const (
	testBS     = 1024 // small blocks keep the tests fast; the logic is size-blind
	testRelseg = 64
	testChunk  = 4096 // small chunks, so records and runs cross chunks
)

// memSink is a chunk store in memory.
type memSink struct{ chunks map[string][]byte }

func newMemSink() *memSink { return &memSink{chunks: map[string][]byte{}} }

func (m *memSink) Store(_ context.Context, data []byte) (manifest.ChunkRef, error) {
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:])
	m.chunks[id] = bytes.Clone(data)
	return manifest.ChunkRef{ID: id, RawSize: int64(len(data)), StoredSize: int64(len(data)) / 2, Codec: "lz4"}, nil
}

// materialize concatenates an archive's references' bytes.
func (m *memSink) materialize(t *testing.T, a manifest.Archive) []byte {
	t.Helper()
	var out []byte
	for _, r := range a.Chunks {
		c, ok := m.chunks[r.ID]
		if !ok {
			t.Fatalf("archive %s references chunk %s, never stored", a.Name, r.ID[:12])
		}
		if int64(len(c)) != r.RawSize {
			t.Fatalf("chunk %s: %d bytes, ref says %d", r.ID[:12], len(c), r.RawSize)
		}
		out = append(out, c[r.Offset:r.Offset+r.Len()]...)
	}
	if int64(len(out)) != a.RawSize {
		t.Fatalf("archive %s: refs give %d bytes, raw_size %d", a.Name, len(out), a.RawSize)
	}
	return out
}

// entry is one member of a test archive.
type entry struct {
	path string
	dir  bool
	data []byte
}

// streamArchive is one archive of a test stream.
type streamArchive struct {
	name string
	oid  uint32
	ents []entry
}

// makeTar writes the entries with archive/tar, as the server would.
func makeTar(t *testing.T, ents []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.path, Mode: 0o600, Size: int64(len(e.data)), Typeflag: tar.TypeReg, ModTime: testTime}
		if e.dir {
			h.Typeflag, h.Mode, h.Size, h.Name = tar.TypeDir, 0o700, 0, e.path+"/"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ingest cuts the stream's archives as a backup does, with a Collector
// observing, and stores the chunks in sink.
func ingest(t *testing.T, sink *memSink, arcs []streamArchive) ([]manifest.Archive, []manifest.File, *Collector) {
	t.Helper()
	col := NewCollector(testBS, testRelseg)
	var archives []manifest.Archive
	var files []manifest.File
	for ai, sa := range arcs {
		data := makeTar(t, sa.ents)
		sp := chunker.NewSplitter(bytes.NewReader(data), testChunk, ai, func() []byte { return make([]byte, 0, testChunk) })
		sp.Observe(col.Observer(ai, sa.oid != 0))
		a := manifest.Archive{Name: sa.name, TablespaceOID: sa.oid}
		for {
			c, err := sp.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := sink.Store(t.Context(), c.Data)
			a.Chunks = append(a.Chunks, ref)
			a.RawSize += ref.RawSize
			a.StoredSize += ref.StoredSize
		}
		archives = append(archives, a)
		files = append(files, sp.Files()...)
	}
	return archives, files, col
}

// contents reads a (virtual) archive as a tar and returns its regular
// files' contents, checking that each file record points at its bytes.
func contents(t *testing.T, data []byte, files []manifest.File, archive int) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("virtual archive is not a valid tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("virtual archive: %s: %v", h.Name, err)
		}
		if _, dup := out[h.Name]; dup {
			t.Fatalf("virtual archive: %s twice", h.Name)
		}
		out[h.Name] = b
	}
	for _, f := range files {
		if f.Archive != archive || f.Type != manifest.TypeFile {
			continue
		}
		b, ok := out[f.Path]
		if !ok {
			t.Errorf("%s: in the records, not in the archive", f.Path)
			continue
		}
		if f.Size != int64(len(b)) || !bytes.Equal(data[f.Offset:f.Offset+f.Size], b) {
			t.Errorf("%s: record (offset %d, size %d) does not point at its %d bytes", f.Path, f.Offset, f.Size, len(b))
		}
		if crc := crc32.Checksum(b, manifest.Castagnoli); f.CRC32C != crc {
			t.Errorf("%s: CRC32C %08x, content's %08x", f.Path, f.CRC32C, crc)
		}
		if pgdata.IsRelationFile(false, f.Path) || strings.HasPrefix(f.Path, "PG_17") {
			h := blockCRCs{blockSize: testBS}
			h.write(b)
			if want := h.finish(); !slices.Equal(f.BlockCRC32C, want) {
				t.Errorf("%s: block CRCs %v, content's %v", f.Path, f.BlockCRC32C, want)
			}
		}
	}
	return out
}

// blocksOf makes n blocks whose bytes say which file and version.
func blocksOf(tag string, n int) []byte {
	b := make([]byte, n*testBS)
	for i := range n {
		copy(b[i*testBS:], fmt.Sprintf("%s block %d", tag, i))
		b[(i+1)*testBS-1] = byte(i)
	}
	return b
}

// incrSpec is an INCREMENTAL file: the blocks it holds, and the
// truncation length.
type incrSpec struct {
	blocks []uint32
	trunc  uint32
	tag    string // content of the images
}

// incrFile encodes spec as the server does.
func incrFile(s incrSpec) []byte {
	n := len(s.blocks)
	hl := 12 + 4*n
	if n > 0 {
		hl = (hl + testBS - 1) / testBS * testBS // padded to whole blocks
	}
	h := make([]byte, hl)
	binary.LittleEndian.PutUint32(h, pgdata.IncrementalMagic)
	binary.LittleEndian.PutUint32(h[4:], uint32(n))
	binary.LittleEndian.PutUint32(h[8:], s.trunc)
	for i, b := range s.blocks {
		binary.LittleEndian.PutUint32(h[12+4*i:], b)
	}
	for _, b := range s.blocks {
		img := make([]byte, testBS)
		copy(img, fmt.Sprintf("%s new block %d", s.tag, b))
		h = append(h, img...)
	}
	return h
}

// naive reconstructs a file the way pg_combinebackup does, from the
// parent's whole content; but a block keep rejects (a visibility map
// block covering heap blocks the server sent) takes nothing from the
// parent.
func naive(parent []byte, s incrSpec, keep func(block int64) bool) []byte {
	n := int64(s.trunc)
	if len(s.blocks) > 0 {
		n = max(n, int64(s.blocks[len(s.blocks)-1])+1)
	}
	out := make([]byte, n*testBS)
	for b := int64(0); b < n; b++ {
		dst := out[b*testBS : (b+1)*testBS]
		if i := slices.Index(s.blocks, uint32(b)); i >= 0 {
			copy(dst, fmt.Sprintf("%s new block %d", s.tag, b))
		} else if b < int64(s.trunc) && (b+1)*testBS <= int64(len(parent)) && keep(b) {
			copy(dst, parent[b*testBS:])
		}
	}
	return out
}

// vmKeep is the model of which blocks of file p a round takes from the
// parent: all, but for a visibility map only those covering no heap block
// the round sent (listed in its INCREMENTAL file, or in a main fork sent
// whole, segment 0 here).
func vmKeep(p string, rd round) func(int64) bool {
	rel, ok := strings.CutSuffix(p, "_vm")
	if !ok {
		return func(int64) bool { return true }
	}
	const perVMBlock = (testBS - 24) * 4
	return func(b int64) bool {
		lo, hi := b*perVMBlock, (b+1)*perVMBlock
		if _, whole := rd.whole[rel]; whole && lo < testRelseg {
			return false
		}
		for _, h := range rd.incr[rel].blocks {
			if int64(h) >= lo && int64(h) < hi {
				return false
			}
		}
		return true
	}
}

// label is a backup_label as an incremental backup gets it.
func label(lsn string) []byte {
	return []byte("START WAL LOCATION: " + lsn + " (file 000000010000000000000005)\nCHECKPOINT LOCATION: 0/5000060\n" +
		"BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-06 08:00:00 UTC\nLABEL: pgstow\nSTART TIMELINE: 1\n" +
		"INCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\n")
}

// round is one backup after the first: the whole files the server sends,
// the INCREMENTAL ones, and the files the cluster holds then.
type round struct {
	whole map[string][]byte   // archive path -> content (base.tar); tablespace paths start with PG_
	incr  map[string]incrSpec // relation path -> what the server sends
}

// TestSynthesize takes a full backup, then two incremental ones (the
// second from the first, whose archives are sliced), and checks each
// synthetic archive: a valid tar whose files equal the naive
// reconstruction, records pointing at their bytes, CRC32C and block CRCs
// right, backup_label without the INCREMENTAL lines.
func TestSynthesize(t *testing.T) {
	ctx := t.Context()
	sink := newMemSink()
	const tsDir = "PG_17_202406281"
	// The full backup.
	state := map[string][]byte{ // what the cluster holds, by archive path
		"PG_VERSION":        []byte("17\n"),
		"backup_label":      []byte("START WAL LOCATION: 0/2000028\n"),
		"base/1/100":        blocksOf("100v1", 5),
		"base/1/101":        blocksOf("101v1", 6),
		"base/1/102":        blocksOf("102v1", 2),
		"base/1/103":        blocksOf("103v1", 3),
		"base/1/104":        blocksOf("104v1", 4),
		"base/1/105":        blocksOf("105v1", 2),
		"base/1/106":        blocksOf("106v1", 20), // spans chunks
		"base/1/106_vm":     blocksOf("106vmv1", 3),
		"base/1/103_vm":     blocksOf("103vmv1", 2),
		"base/1/107":        blocksOf("107v1", 2),
		"base/1/107_vm":     blocksOf("107vmv1", 1),
		"global/1260":       blocksOf("1260v1", 2),
		"global/pg_control": bytes.Repeat([]byte{7}, 300),
		tsDir + "/1/300":    blocksOf("300v1", 4),
	}
	arcs := func(files map[string][]byte, incr map[string]incrSpec) []streamArchive {
		base := streamArchive{name: "base.tar"}
		ts := streamArchive{name: "16385.tar", oid: 16385}
		base.ents = append(base.ents, entry{path: "base", dir: true}, entry{path: "base/1", dir: true})
		names := slices.Sorted(maps.Keys(files))
		for _, p := range names {
			e := entry{path: p, data: files[p]}
			if strings.HasPrefix(p, "PG_") {
				ts.ents = append(ts.ents, e)
			} else {
				base.ents = append(base.ents, e)
			}
		}
		for _, p := range slices.Sorted(maps.Keys(incr)) {
			i := strings.LastIndexByte(p, '/')
			e := entry{path: p[:i+1] + "INCREMENTAL." + p[i+1:], data: incrFile(incr[p])}
			if strings.HasPrefix(p, "PG_") {
				ts.ents = append(ts.ents, e)
			} else {
				base.ents = append(base.ents, e)
			}
		}
		return []streamArchive{base, ts}
	}
	archives, files, _ := ingest(t, sink, arcs(state, nil))
	parent := &manifest.Backup{ID: "full", BlockSize: testBS, Archives: archives, Files: files}

	rounds := []round{
		{
			whole: map[string][]byte{
				"PG_VERSION":        []byte("17\n"),
				"backup_label":      label("0/5000028"),
				"base/1/200":        blocksOf("200v1", 3), // new relation
				"base/1/107":        blocksOf("107v2", 2), // sent whole: its map's block is zeros
				"global/pg_control": bytes.Repeat([]byte{8}, 300),
			},
			incr: map[string]incrSpec{
				"base/1/100":     {blocks: []uint32{1, 3}, trunc: 5, tag: "100v2"}, // changed blocks among parent runs
				"base/1/101":     {trunc: 3, tag: "101v2"},                         // truncated
				"base/1/102":     {blocks: []uint32{4}, trunc: 2, tag: "102v2"},    // extended: zeros, then a new block
				"base/1/103":     {trunc: 3, tag: "103v2"},                         // unchanged
				"base/1/104":     {blocks: []uint32{0}, trunc: 6, tag: "104v2"},    // truncation past the parent's end: zeros
				"base/1/106":     {blocks: []uint32{7, 8, 9, 15}, trunc: 20, tag: "106v2"},
				"base/1/106_vm":  {blocks: []uint32{1}, trunc: 3, tag: "106vmv2"}, // block 0 covers heap blocks sent: zeros; block 2 the parent's
				"base/1/103_vm":  {trunc: 2, tag: "103vmv2"},                      // its heap unchanged: the parent's blocks
				"base/1/107_vm":  {trunc: 1, tag: "107vmv2"},
				"global/1260":    {blocks: []uint32{0, 1}, trunc: 2, tag: "1260v2"}, // all new
				tsDir + "/1/300": {blocks: []uint32{2}, trunc: 4, tag: "300v2"},
				// base/1/105 is dropped: the server sends nothing.
			},
		},
		{ // From the first incremental, whose archives are slices.
			whole: map[string][]byte{
				"PG_VERSION":        []byte("17\n"),
				"backup_label":      label("0/7000028"),
				"global/pg_control": bytes.Repeat([]byte{9}, 300),
			},
			incr: map[string]incrSpec{
				"base/1/100":     {blocks: []uint32{2}, trunc: 5, tag: "100v3"},
				"base/1/101":     {trunc: 3, tag: "101v3"},
				"base/1/102":     {trunc: 5, tag: "102v3"},
				"base/1/103":     {blocks: []uint32{0, 1, 2, 3, 4, 5, 6, 7}, trunc: 3, tag: "103v3"},
				"base/1/104":     {blocks: []uint32{5}, trunc: 2, tag: "104v3"}, // truncated, then extended: the parent's blocks 2-4 are gone
				"base/1/106":     {blocks: []uint32{0, 19}, trunc: 20, tag: "106v3"},
				"base/1/200":     {blocks: []uint32{1}, trunc: 3, tag: "200v2"},
				"global/1260":    {trunc: 2, tag: "1260v3"},
				tsDir + "/1/300": {trunc: 1, tag: "300v3"},
			},
		},
	}
	for ri, rd := range rounds {
		want := map[string][]byte{}
		maps.Copy(want, rd.whole)
		for p, s := range rd.incr {
			want[p] = naive(state[p], s, vmKeep(p, rd))
		}
		want["backup_label"] = StripIncrementalLines(rd.whole["backup_label"])
		archives, files, col := ingest(t, sink, arcs(rd.whole, rd.incr))
		res, err := Synthesize(ctx, Params{Parent: parent, BlockSize: testBS, Archives: archives, Files: files, Collector: col, Sink: sink, NewChunkSize: 2048})
		if err != nil {
			t.Fatalf("round %d: %v", ri+1, err)
		}
		got := map[string][]byte{}
		sliced := false
		for ai, a := range res.Archives {
			for _, r := range a.Chunks {
				sliced = sliced || r.Sliced()
				if r.Sliced() && r.Offset == 0 && r.Length == r.RawSize {
					t.Errorf("round %d: a slice covering all of chunk %s", ri+1, r.ID[:12])
				}
			}
			for p, b := range contents(t, sink.materialize(t, a), res.Files, ai) {
				got[p] = b
			}
		}
		if !sliced {
			t.Errorf("round %d: no sliced reference", ri+1)
		}
		for p := range got {
			if strings.Contains(p, "INCREMENTAL.") {
				t.Errorf("round %d: %s in the synthetic archive", ri+1, p)
			}
		}
		if !maps.EqualFunc(got, want, bytes.Equal) {
			for p := range want {
				if !bytes.Equal(got[p], want[p]) {
					t.Errorf("round %d: %s: %d bytes, want %d (naive reconstruction)", ri+1, p, len(got[p]), len(want[p]))
				}
			}
			for p := range got {
				if _, ok := want[p]; !ok {
					t.Errorf("round %d: %s should not be there", ri+1, p)
				}
			}
		}
		if res.IncrementalFiles != len(rd.incr) {
			t.Errorf("round %d: %d incremental files, want %d", ri+1, res.IncrementalFiles, len(rd.incr))
		}
		var changed int64
		for _, s := range rd.incr {
			changed += int64(len(s.blocks))
		}
		if res.ChangedBlocks != changed {
			t.Errorf("round %d: %d changed blocks, want %d", ri+1, res.ChangedBlocks, changed)
		}
		if e := res.Edits["pg_tblspc/16385/"+tsDir+"/1/INCREMENTAL.300"]; e.Path != "pg_tblspc/16385/"+tsDir+"/1/300" || e.Size != int64(len(want[tsDir+"/1/300"])) {
			t.Errorf("round %d: tablespace edit %+v", ri+1, e)
		}
		if e := res.Edits["backup_label"]; e.Size != int64(len(want["backup_label"])) || e.CRC32C != crc32.Checksum(want["backup_label"], manifest.Castagnoli) {
			t.Errorf("round %d: backup_label edit %+v", ri+1, e)
		}
		// An unchanged file (same size, mode and mtime) is the parent's
		// bytes, its header included: no new chunk holds any of it.
		if ri == 0 {
			stored := map[string]bool{}
			for _, r := range res.Stored {
				stored[r.ID] = true
			}
			for _, f := range res.Files {
				if f.Path != "base/1/103" {
					continue
				}
				for _, id := range chunksIn(res.Archives[f.Archive], f.Offset-512, f.Offset+f.Size) {
					if stored[id] {
						t.Errorf("round 1: the unchanged base/1/103 has bytes in new chunk %s", id[:12])
					}
				}
			}
		}
		parent = &manifest.Backup{ID: fmt.Sprintf("incr%d", ri+1), BlockSize: testBS, Archives: res.Archives, Files: res.Files}
		state = want
	}
}

// TestSynthesizeRefuses checks the errors for what cannot be assembled.
func TestSynthesizeRefuses(t *testing.T) {
	sink := newMemSink()
	parentArcs, parentFiles, _ := ingest(t, sink, []streamArchive{{name: "base.tar", ents: []entry{
		{path: "base/1/100", data: blocksOf("a", 2)},
	}}})
	noCRCs := slices.Clone(parentFiles)
	noCRCs[0].BlockCRC32C = nil
	for _, tc := range []struct {
		name   string
		files  []manifest.File
		stream []entry
		want   string
	}{
		{"not in the parent", parentFiles, []entry{{path: "base/1/INCREMENTAL.999", data: incrFile(incrSpec{trunc: 1})}}, "does not have"},
		{"parent without block CRCs", noCRCs, []entry{{path: "base/1/INCREMENTAL.100", data: incrFile(incrSpec{trunc: 1})}}, "block CRCs"},
		{"bad header", parentFiles, []entry{{path: "base/1/INCREMENTAL.100", data: []byte("not an incremental file")}}, "magic"},
		{"header cut short", parentFiles, []entry{{path: "base/1/INCREMENTAL.100", data: incrFile(incrSpec{blocks: []uint32{0}, trunc: 1})[:14]}}, "short"},
		{"size not the header's", parentFiles, []entry{{path: "base/1/INCREMENTAL.100", data: append(incrFile(incrSpec{blocks: []uint32{0}, trunc: 1}), 0)}}, "header describes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := &manifest.Backup{ID: "p", BlockSize: testBS, Archives: parentArcs, Files: tc.files}
			archives, files, col := ingest(t, sink, []streamArchive{{name: "base.tar", ents: tc.stream}})
			_, err := Synthesize(t.Context(), Params{Parent: parent, BlockSize: testBS, Archives: archives, Files: files, Collector: col, Sink: sink})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

var testTime = time.Unix(1700000000, 0)

// chunksIn returns the ids of the chunks that hold bytes [from, to) of a
// virtual archive.
func chunksIn(a manifest.Archive, from, to int64) []string {
	var ids []string
	var off int64
	for _, r := range a.Chunks {
		if off < to && off+r.Len() > from {
			ids = append(ids, r.ID)
		}
		off += r.Len()
	}
	return ids
}
