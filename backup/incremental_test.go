package backup

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/replication"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

const (
	pg17BS     = 8192
	pg17TSDir  = "PG_17_202406281"
	pg17Relseg = 131072
)

var pg17Settings = replication.Settings{ServerVersion: 170002, SummarizeWAL: true, BlockSize: pg17BS, SegmentSize: pg17Relseg * pg17BS}

// blocks makes n blocks tagged with tag.
func blocks(tag string, n int) []byte {
	b := make([]byte, n*pg17BS)
	for i := range n {
		copy(b[i*pg17BS:], fmt.Sprintf("%s block %d", tag, i))
	}
	return b
}

// incrementalFile encodes an INCREMENTAL file holding the given blocks,
// whose images say tag.
func incrementalFile(tag string, trunc uint32, nums ...uint32) []byte {
	h := binary.LittleEndian.AppendUint32(nil, 0xd3ae1f0d)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(nums)))
	h = binary.LittleEndian.AppendUint32(h, trunc)
	for _, n := range nums {
		h = binary.LittleEndian.AppendUint32(h, n)
	}
	if len(nums) > 0 {
		h = append(h, make([]byte, pg17BS-len(h)%pg17BS)...)
	}
	for _, n := range nums {
		img := make([]byte, pg17BS)
		copy(img, fmt.Sprintf("%s block %d", tag, n))
		h = append(h, img...)
	}
	return h
}

// pg17Cluster is a PostgreSQL 17 cluster's archives; the members of
// files, by archive path (tablespace paths start with PG_17).
func pg17Cluster(files map[string][]byte, order []string) []repotest.Archive {
	base := repotest.Archive{Name: "base.tar", Members: []repotest.Member{repotest.Dir("base/", 1), repotest.Dir("base/5/", 1)}}
	ts := repotest.Archive{Name: fmt.Sprintf("%d.tar", fakeTSOID), OID: fakeTSOID, Members: []repotest.Member{
		repotest.Dir(pg17TSDir+"/", 1), repotest.Dir(pg17TSDir+"/5/", 1)}}
	for _, p := range order {
		m := repotest.File(p, 2, files[p])
		if strings.HasPrefix(p, pg17TSDir) {
			ts.Members = append(ts.Members, m)
		} else {
			base.Members = append(base.Members, m)
		}
	}
	return []repotest.Archive{base, ts}
}

// virtualBytes concatenates an archive's references' bytes.
func virtualBytes(t *testing.T, repo *repository.Repository, a manifest.Archive) []byte {
	t.Helper()
	var out []byte
	var buf []byte
	dec := chunker.NewDecompressor()
	for _, ref := range a.Chunks {
		whole := ref
		whole.Offset, whole.Length = 0, 0
		stored, err := repo.DownloadChunk(t.Context(), whole, &buf)
		if err != nil {
			t.Fatal(err)
		}
		var raw bytes.Buffer
		if err := repo.DecodeChunk(dec, whole, stored, &raw); err != nil {
			t.Fatal(err)
		}
		out = append(out, raw.Bytes()[ref.Offset:ref.Offset+ref.Len()]...)
	}
	return out
}

// tarFiles reads a tar's regular files.
func tarFiles(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("not a valid tar: %v", err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = b
		}
	}
}

// fullReasons returns the log records saying why a backup is full.
func fullReasons(rec *recorder) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []string
	for _, r := range rec.recs {
		if strings.Contains(r.msg, "full backup") {
			out = append(out, r.attrs["reason"])
		}
	}
	return out
}

// TestRunIncremental: on a PostgreSQL 17 server with summarize_wal, the
// first backup is full (one line: no parent) and records block CRCs;
// the next is incremental from it: its archives are a valid tar of the
// whole cluster (assembled relation files, backup_label without the
// INCREMENTAL lines), its stored backup_manifest is rewritten to match,
// the parent's backup_manifest was uploaded, and the manifest says
// format 2.0 with the incremental record.
func TestRunIncremental(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	v1 := map[string][]byte{
		"PG_VERSION":           []byte("17\n"),
		"backup_label":         []byte("START WAL LOCATION: 0/3000028\n"),
		"global/pg_control":    bytes.Repeat([]byte{1}, 8192),
		"global/1262":          blocks("1262v1", 1),
		"base/5/16384":         blocks("16384v1", 3),
		"base/5/16385":         blocks("16385v1", 2),
		"base/5/16399":         blocks("16399v1", 1), // dropped before the incremental
		pg17TSDir + "/5/16390": blocks("16390v1", 2),
	}
	order := []string{"PG_VERSION", "backup_label", "global/pg_control", "global/1262", "base/5/16384", "base/5/16385", "base/5/16399", pg17TSDir + "/5/16390"}
	full := newFakeServer(t, pg17Cluster(v1, order), nil)
	full.version, full.settings = 170002, pg17Settings
	rec := &recorder{}
	o := testOptions()
	o.Log = slog.New(rec)
	first, err := run(ctx, repo, o, full)
	if err != nil {
		t.Fatal(err)
	}
	if r := fullReasons(rec); len(r) != 1 || !strings.Contains(r[0], "no earlier backup") {
		t.Errorf("first backup: reasons for a full %q, want one saying there is no parent", r)
	}
	if first.Incremental != nil || first.FormatVersion != manifest.FormatVersion || first.BlockSize != pg17BS {
		t.Errorf("first backup: incremental %+v, format %s, block size %d", first.Incremental, first.FormatVersion, first.BlockSize)
	}
	for _, f := range first.Files {
		rel := strings.HasPrefix(f.Path, "base/5/") || f.Path == "global/1262" || strings.HasPrefix(f.Path, pg17TSDir+"/5/")
		wantCRCs := 0
		if rel {
			wantCRCs = int(f.Size / pg17BS)
		}
		if f.Type == manifest.TypeFile && len(f.BlockCRC32C) != wantCRCs {
			t.Errorf("first backup: %s: %d block CRCs for %d bytes", f.Path, len(f.BlockCRC32C), f.Size)
		}
	}

	// The incremental stream, and the cluster it stands for.
	label := "START WAL LOCATION: 0/3000028\nINCREMENTAL FROM LSN: 0/3000028\nINCREMENTAL FROM TLI: 1\nSTART TIMELINE: 1\n"
	stream := map[string][]byte{
		"PG_VERSION":                       []byte("17\n"),
		"backup_label":                     []byte(label),
		"global/pg_control":                bytes.Repeat([]byte{2}, 8192),
		"global/INCREMENTAL.1262":          incrementalFile("1262v2", 1),
		"base/5/INCREMENTAL.16384":         incrementalFile("16384v2", 3, 1),
		"base/5/INCREMENTAL.16385":         incrementalFile("16385v2", 1),
		"base/5/16386":                     blocks("16386v1", 2),
		pg17TSDir + "/5/INCREMENTAL.16390": incrementalFile("16390v2", 2, 3),
	}
	sorder := []string{"PG_VERSION", "backup_label", "global/pg_control", "global/INCREMENTAL.1262", "base/5/INCREMENTAL.16384", "base/5/INCREMENTAL.16385", "base/5/16386", pg17TSDir + "/5/INCREMENTAL.16390"}
	want := map[string][]byte{
		"PG_VERSION":           []byte("17\n"),
		"backup_label":         []byte("START WAL LOCATION: 0/3000028\nSTART TIMELINE: 1\n"),
		"global/pg_control":    stream["global/pg_control"],
		"global/1262":          v1["global/1262"],
		"base/5/16384":         append(append(blocks("16384v1", 1), blocks("16384v2", 2)[pg17BS:]...), blocks("16384v1", 3)[2*pg17BS:]...),
		"base/5/16385":         blocks("16385v1", 1),
		"base/5/16386":         stream["base/5/16386"],
		pg17TSDir + "/5/16390": append(append(blocks("16390v1", 2), make([]byte, pg17BS)...), blocks("16390v2", 4)[3*pg17BS:]...),
	}
	srv := newFakeServer(t, pg17Cluster(v1, order), nil)
	srv.version, srv.settings = 170002, pg17Settings
	srv.incr = newFakeServer(t, pg17Cluster(stream, sorder), nil)
	rec = &recorder{}
	o.Log = slog.New(rec)
	o.Now = func() time.Time { return testNow.Add(time.Hour) }
	second, err := run(ctx, repo, o, srv)
	if err != nil {
		t.Fatal(err)
	}
	if r := fullReasons(rec); len(r) != 0 {
		t.Errorf("incremental backup: reasons for a full %q", r)
	}
	if second.Incremental == nil || second.Incremental.Parent != first.ID || second.FormatVersion != manifest.FormatVersionIncremental ||
		second.Incremental.IncrementalFiles != 4 || second.Incremental.ChangedBlocks != 2 || second.Incremental.SentBytes <= 0 ||
		!second.Incremental.FullStarted.Equal(first.Timings.Started) || second.BlockSize != pg17BS {
		t.Fatalf("second backup: format %s, block size %d, incremental %+v", second.FormatVersion, second.BlockSize, second.Incremental)
	}
	stored, err := repo.PGManifest(ctx, first)
	if err != nil || !bytes.Equal(srv.uploaded, stored) {
		t.Errorf("the server was sent %d bytes, not the parent's backup_manifest (%v)", len(srv.uploaded), err)
	}
	got, err := repo.Backup(ctx, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for i, a := range got.Archives {
		for p, b := range tarFiles(t, virtualBytes(t, repo, a)) {
			if i == 1 && !strings.HasPrefix(p, pg17TSDir) {
				t.Errorf("%s in the tablespace archive", p)
			}
			files[p] = b
		}
	}
	for p, w := range want {
		if !bytes.Equal(files[p], w) {
			t.Errorf("incremental backup: %s: %d bytes, not the %d expected", p, len(files[p]), len(w))
		}
	}
	if len(files) != len(want) {
		t.Errorf("incremental backup holds %d files, want %d", len(files), len(want))
	}
	pg, err := repo.ParsePGManifest(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.CrossCheck(pg, got.Files, got.Archives); err != nil {
		t.Errorf("the stored backup_manifest does not describe the assembled files: %v", err)
	}
	if raw, _, _ := incrementalTotals(got.Archives); got.Totals.RawBytes != raw || got.Totals.NewBytes <= 0 {
		t.Errorf("totals %+v", got.Totals)
	}

	// A third backup builds on the incremental one (sliced parent).
	thirdServer := func() *fakeServer {
		srv := newFakeServer(t, pg17Cluster(v1, order), nil)
		srv.version, srv.settings = 170002, pg17Settings
		srv.incr = newFakeServer(t, pg17Cluster(map[string][]byte{
			"PG_VERSION": []byte("17\n"), "backup_label": []byte(label), "global/pg_control": bytes.Repeat([]byte{3}, 8192),
			"global/INCREMENTAL.1262": incrementalFile("1262v3", 1), "base/5/INCREMENTAL.16384": incrementalFile("16384v3", 3, 0),
			"base/5/INCREMENTAL.16385": incrementalFile("16385v3", 1), "base/5/INCREMENTAL.16386": incrementalFile("16386v3", 2),
			pg17TSDir + "/5/INCREMENTAL.16390": incrementalFile("16390v3", 4),
		}, []string{"PG_VERSION", "backup_label", "global/pg_control", "global/INCREMENTAL.1262", "base/5/INCREMENTAL.16384", "base/5/INCREMENTAL.16385", "base/5/INCREMENTAL.16386", pg17TSDir + "/5/INCREMENTAL.16390"}), nil)
		return srv
	}
	srv = thirdServer()
	o.Now = func() time.Time { return testNow.Add(2 * time.Hour) }
	third, err := run(ctx, repo, o, srv)
	if err != nil {
		t.Fatal(err)
	}
	if third.Incremental == nil || third.Incremental.Parent != second.ID || len(fullReasons(rec)) > 0 || !third.Incremental.FullStarted.Equal(first.Timings.Started) {
		t.Fatalf("third backup: incremental %+v, reasons for a full %q", third.Incremental, fullReasons(rec))
	}
	got3, err := repo.Backup(ctx, third.ID)
	if err != nil {
		t.Fatal(err)
	}
	files = map[string][]byte{}
	for _, a := range got3.Archives {
		for p, b := range tarFiles(t, virtualBytes(t, repo, a)) {
			files[p] = b
		}
	}
	if w := append(blocks("16384v3", 1), want["base/5/16384"][pg17BS:]...); !bytes.Equal(files["base/5/16384"], w) {
		t.Errorf("third backup: base/5/16384 differs from the reconstruction")
	}
	if !bytes.Equal(files[pg17TSDir+"/5/16390"], want[pg17TSDir+"/5/16390"]) {
		t.Errorf("third backup: the tablespace file differs from the reconstruction")
	}
	checkReleased(t, repo, srv)
}

// TestRunIncrementalPolicy: what makes a backup full under auto (one line
// saying why), and --type incremental failing before streaming with
// ErrIncrementalUnavailable naming the cause.
func TestRunIncrementalPolicy(t *testing.T) {
	files := map[string][]byte{"PG_VERSION": []byte("17\n"), "global/pg_control": bytes.Repeat([]byte{1}, 8192), "base/5/16384": blocks("a", 2)}
	order := []string{"PG_VERSION", "global/pg_control", "base/5/16384"}
	incrStream := map[string][]byte{"PG_VERSION": []byte("17\n"), "global/pg_control": bytes.Repeat([]byte{1}, 8192), "base/5/INCREMENTAL.16384": incrementalFile("b", 2, 1)}
	incrOrder := []string{"PG_VERSION", "global/pg_control", "base/5/INCREMENTAL.16384"}
	for _, tc := range []struct {
		name    string
		version int
		set     func(*replication.Settings)
		refuse  error
		later   time.Duration // after the parent
		typ     Type
		want    string // in the reason, or the error
		isError bool
	}{
		{name: "pg15", version: 150004, want: "PostgreSQL 15"},
		{name: "pg15 --type incremental", version: 150004, typ: TypeIncremental, want: "PostgreSQL 15", isError: true},
		{name: "summarize_wal off", version: 170002, set: func(s *replication.Settings) { s.SummarizeWAL = false }, want: "summarize_wal"},
		{name: "summarize_wal off --type incremental", version: 170002, set: func(s *replication.Settings) { s.SummarizeWAL = false }, typ: TypeIncremental, want: "summarize_wal", isError: true},
		{name: "block size differs", version: 170002, set: func(s *replication.Settings) { s.BlockSize = 16384 }, want: "no earlier backup"},
		{name: "full every", version: 170002, later: 8 * 24 * time.Hour, want: "--full-every"},
		{name: "type full", version: 170002, typ: TypeFull, want: "--type full"},
		{name: "refused", version: 170002, refuse: fmt.Errorf("BASE_BACKUP: %w: WAL summaries are required on timeline 1", replication.ErrIncrementalRefused), want: "WAL summaries"},
		{name: "refused --type incremental", version: 170002, typ: TypeIncremental, refuse: fmt.Errorf("BASE_BACKUP: %w: WAL summaries are required on timeline 1", replication.ErrIncrementalRefused), want: "WAL summaries", isError: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			repo := repository.New(mem.New())
			// The parent: a full backup of a PostgreSQL 17 server.
			parentSrv := newFakeServer(t, pg17Cluster(files, order), nil)
			parentSrv.version, parentSrv.settings = 170002, pg17Settings
			o := testOptions()
			if _, err := run(ctx, repo, o, parentSrv); err != nil {
				t.Fatal(err)
			}
			srv := newFakeServer(t, pg17Cluster(files, order), nil)
			srv.version, srv.settings, srv.refuse = tc.version, pg17Settings, tc.refuse
			if tc.set != nil {
				tc.set(&srv.settings)
			}
			srv.incr = newFakeServer(t, pg17Cluster(incrStream, incrOrder), nil)
			rec := &recorder{}
			o.Log, o.Type = slog.New(rec), tc.typ
			o.Now = func() time.Time { return testNow.Add(time.Hour + tc.later) }
			b, err := run(ctx, repo, o, srv)
			if tc.isError {
				if !errors.Is(err, ErrIncrementalUnavailable) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one line wrapping ErrIncrementalUnavailable naming %q", err, tc.want)
				}
				if ids, _ := repo.BackupIDs(ctx); len(ids) != 1 {
					t.Errorf("%d backups after the refusal, want the parent alone", len(ids))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Incremental != nil {
				t.Errorf("took an incremental backup")
			}
			if r := fullReasons(rec); len(r) != 1 || !strings.Contains(r[0], tc.want) {
				t.Errorf("reasons for a full %q, want one naming %q", r, tc.want)
			}
		})
	}
}

// TestRunIncrementalLostParentChunk: an incremental backup whose parent's
// chunks are gone (lost, or quarantined by verify --repair) fails before
// committing, rather than commit references a restore would find missing.
func TestRunIncrementalLostParentChunk(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	files := map[string][]byte{"PG_VERSION": []byte("17\n"), "global/pg_control": bytes.Repeat([]byte{1}, 8192), "base/5/16384": blocks("a", 2)}
	order := []string{"PG_VERSION", "global/pg_control", "base/5/16384"}
	parentSrv := newFakeServer(t, pg17Cluster(files, order), nil)
	parentSrv.version, parentSrv.settings = 170002, pg17Settings
	o := testOptions()
	parent, err := run(ctx, repo, o, parentSrv)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range parent.Archives {
		for _, c := range a.Chunks {
			if _, err := repo.DeleteChunk(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := newFakeServer(t, pg17Cluster(files, order), nil)
	srv.version, srv.settings = 170002, pg17Settings
	srv.incr = newFakeServer(t, pg17Cluster(map[string][]byte{"PG_VERSION": []byte("17\n"), "global/pg_control": bytes.Repeat([]byte{2}, 8192),
		"base/5/INCREMENTAL.16384": incrementalFile("b", 2, 1)}, []string{"PG_VERSION", "global/pg_control", "base/5/INCREMENTAL.16384"}), nil)
	o.Type = TypeIncremental
	o.Now = func() time.Time { return testNow.Add(time.Hour) }
	if b, err := run(ctx, repo, o, srv); err == nil || !strings.Contains(err.Error(), "no longer stored") {
		t.Fatalf("committed %v; error %v, want one saying a referenced object is no longer stored", b != nil, err)
	}
	if ids, _ := repo.BackupIDs(ctx); len(ids) != 1 {
		t.Errorf("%d backups, want the parent alone", len(ids))
	}
}
