package backup

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
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/replication"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
	"github.com/pgstow/pgstow/uploader"
)

// The fake cluster's backup: it starts in segment 3 and ends in
// segment 4, so the stream must store two segments.
const (
	fakeStartLSN = manifest.LSN(3*repotest.SegSize + 0x28)
	fakeEndLSN   = manifest.LSN(4*repotest.SegSize + 0x138)
	fakeTSOID    = 16384
)

// fakeArchive is one archive of a synthesized stream; cut, if set, is
// what the stream fails with after cutAt bytes of it.
type fakeArchive struct {
	name  string
	tar   []byte
	cutAt int
	cut   error
}

// fakeServer is a cluster that sends a synthesized base backup: tar
// archives, PostgreSQL's backup_manifest, and WAL segments made up on
// demand. It is its own dialer, server and WAL sender.
type fakeServer struct {
	archives   []fakeArchive
	pgManifest []byte
	// beforeManifest, if set, runs when the archives have been read,
	// before the backup_manifest is sent.
	beforeManifest func()

	// version is server_version_num (150004 when 0); settings are what
	// Settings returns on 17 and later.
	version  int
	settings replication.Settings
	// incr, if set, is what an incremental BASE_BACKUP sends, unless
	// refuse is set; uploaded is the manifest UploadManifest received.
	incr     *fakeServer
	refuse   error
	uploaded []byte

	mu     sync.Mutex
	closed int // connections closed
	slots  []string
	// progress records, per BASE_BACKUP, whether PROGRESS was asked.
	progress []bool
}

func (s *fakeServer) server(context.Context, string) (server, error)       { return s, nil }
func (s *fakeServer) walSender(context.Context, string) (walSender, error) { return s, nil }
func (s *fakeServer) Target() string                                       { return "fake:5432" }

func (s *fakeServer) IdentifySystem(context.Context) (replication.System, error) {
	v := s.version
	if v == 0 {
		v = 150004
	}
	return replication.System{SystemID: repotest.SystemID, Timeline: 1, ServerVersion: v, WALSegmentSize: repotest.SegSize}, nil
}

func (s *fakeServer) Settings(context.Context) (replication.Settings, error) {
	return s.settings, nil
}

func (s *fakeServer) UploadManifest(_ context.Context, r io.Reader) error {
	b, err := io.ReadAll(r)
	s.uploaded = b
	return err
}

func (s *fakeServer) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	return nil
}

func (s *fakeServer) CreateTemporarySlot(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slots = append(s.slots, name)
	return nil
}

func (s *fakeServer) BaseBackup(_ context.Context, o replication.BackupOptions) (archiveSource, error) {
	s.mu.Lock()
	s.progress = append(s.progress, o.Progress)
	s.mu.Unlock()
	if o.Incremental {
		switch {
		case s.uploaded == nil:
			return nil, errors.New("fake server: INCREMENTAL without UPLOAD_MANIFEST")
		case s.refuse != nil:
			return nil, s.refuse
		case s.incr == nil:
			return nil, errors.New("fake server: no incremental stream")
		}
		return &fakeStream{srv: s.incr}, nil
	}
	return &fakeStream{srv: s}, nil
}

// StreamWAL stores, once the end is known, each segment the backup
// needs, as a stream would have as they completed.
func (s *fakeServer) StreamWAL(ctx context.Context, ws *replication.WALStream, from manifest.LSN, endCh <-chan manifest.LSN, _ time.Duration) error {
	var end manifest.LSN
	select {
	case end = <-endCh:
	case <-ctx.Done():
		return ctx.Err()
	}
	names, err := manifest.RequiredSegments(ws.Timeline, from, end, ws.SegmentSize)
	if err != nil {
		return err
	}
	for _, n := range names {
		_, segno, err := manifest.ParseSegmentName(n, ws.SegmentSize)
		if err != nil {
			return err
		}
		data := repotest.SegmentData(segno)
		if err := ws.Sink(ctx, n, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data)))); err != nil {
			return err
		}
	}
	return nil
}

// fakeStream is the archiveSource of a fakeServer.
type fakeStream struct {
	srv      *fakeServer
	next     int
	streamed atomic.Int64
}

func (f *fakeStream) Start() replication.Start {
	return replication.Start{LSN: fakeStartLSN, Timeline: 1, TotalKB: -1,
		Tablespaces: []replication.Tablespace{{OID: fakeTSOID, Location: "/srv/ts", SizeKB: -1}}}
}

func (f *fakeStream) Streamed() int64 { return f.streamed.Load() }

func (f *fakeStream) NextArchive() (*replication.Archive, error) {
	if f.next == len(f.srv.archives) {
		return nil, io.EOF
	}
	a := f.srv.archives[f.next]
	f.next++
	r := io.Reader(bytes.NewReader(a.tar))
	if a.cut != nil {
		r = io.MultiReader(bytes.NewReader(a.tar[:a.cutAt]), &failReader{a.cut})
	}
	return replication.NewArchive(a.name, "", &countReader{r: r, n: &f.streamed}), nil
}

func (f *fakeStream) ManifestTo(w io.Writer) (int64, error) {
	if f.srv.beforeManifest != nil {
		f.srv.beforeManifest()
	}
	return io.Copy(w, bytes.NewReader(f.srv.pgManifest))
}

func (f *fakeStream) Finish() (replication.End, error) {
	return replication.End{LSN: fakeEndLSN, Timeline: 1}, nil
}

func (f *fakeStream) Abort()       {}
func (f *fakeStream) Close() error { return nil }

type failReader struct{ err error }

func (r *failReader) Read([]byte) (int, error) { return 0, r.err }

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// fakeCluster is a small cluster's archives: the data directory
// (global/pg_control among its files) and one tablespace.
func fakeCluster() []repotest.Archive {
	return []repotest.Archive{
		{Name: "base.tar", Members: repotest.BaseMembers(1)},
		{Name: fmt.Sprintf("%d.tar", fakeTSOID), OID: fakeTSOID, Members: []repotest.Member{
			repotest.Dir("PG_15_202209061/", 1),
			repotest.Dir("PG_15_202209061/5/", 2),
			repotest.File("PG_15_202209061/5/16385", 3, repotest.PseudoRandom(9, 100<<10+3)),
		}},
	}
}

// pgManifest writes PostgreSQL's backup_manifest for archives as the
// server would: a CRC32C of every regular file (but the WAL), paths of
// tablespace files under pg_tblspc, sealed with a SHA-256.
func pgManifest(archives []repotest.Archive) []byte {
	var sb strings.Builder
	sb.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [")
	sep := ""
	for _, a := range archives {
		for _, m := range a.Members {
			if m.Type != tar.TypeReg || strings.HasPrefix(m.Name, "pg_wal/") {
				continue
			}
			p := m.Name
			if a.OID != 0 {
				p = fmt.Sprintf("pg_tblspc/%d/%s", a.OID, p)
			}
			var le [4]byte
			binary.LittleEndian.PutUint32(le[:], crc32.Checksum(m.Data, crc32.MakeTable(crc32.Castagnoli)))
			fmt.Fprintf(&sb, "%s\n{ \"Path\": %q, \"Size\": %d, \"Last-Modified\": %q, \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": %q }",
				sep, p, len(m.Data), m.MTime.UTC().Format("2006-01-02 15:04:05 GMT"), hex.EncodeToString(le[:]))
			sep = ","
		}
	}
	fmt.Fprintf(&sb, " ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": %q, \"End-LSN\": %q }\n],\n", fakeStartLSN, fakeEndLSN)
	sum := sha256.Sum256([]byte(sb.String()))
	fmt.Fprintf(&sb, "\"Manifest-Checksum\": \"%x\"}\n", sum)
	return []byte(sb.String())
}

// newFakeServer streams the archives of cluster, with a backup_manifest
// made from want (cluster, when nil): a want that differs from what is
// streamed is a stream the cross-check must refuse.
func newFakeServer(t *testing.T, cluster, want []repotest.Archive) *fakeServer {
	t.Helper()
	if want == nil {
		want = cluster
	}
	s := &fakeServer{pgManifest: pgManifest(want)}
	for _, a := range cluster {
		s.archives = append(s.archives, fakeArchive{name: a.Name, tar: repotest.Tar(t, a.Members)})
	}
	return s
}

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func testOptions() Options {
	return Options{Label: "unit", ToolVersion: "test", Now: func() time.Time { return testNow },
		Uploader: uploader.Config{ChunkSize: 16 << 10}}
}

// TestRunCommits: a clean backup commits a manifest whose archives are
// the streamed tar bytes, chunk for chunk, with every file and the WAL
// from the start segment to the end one, which a full verify accepts;
// it releases its lease and closes both connections.
func TestRunCommits(t *testing.T) {
	ctx := t.Context()
	repo := repository.New(mem.New())
	cluster := fakeCluster()
	srv := newFakeServer(t, cluster, nil)
	b, err := run(ctx, repo, testOptions(), srv)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if ids, err := repo.BackupIDs(ctx); err != nil || !cmp.Equal(ids, []string{"20260304T050607Z"}) {
		t.Fatalf("backups after a clean run: %v, %v", ids, err)
	}
	got, err := repo.Backup(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.StartLSN != fakeStartLSN || got.EndLSN != fakeEndLSN || got.SystemID != repotest.SystemID || got.Label != "unit" ||
		!cmp.Equal(got.Tablespaces, []manifest.Tablespace{{OID: fakeTSOID, Location: "/srv/ts"}}) {
		t.Errorf("committed manifest: start %s end %s system %s label %q tablespaces %+v", got.StartLSN, got.EndLSN, got.SystemID, got.Label, got.Tablespaces)
	}
	var wal []string
	for _, w := range got.WAL {
		wal = append(wal, w.Name)
	}
	if want := []string{"000000010000000000000003", "000000010000000000000004"}; !cmp.Equal(wal, want) {
		t.Errorf("WAL %v, want %v", wal, want)
	}
	for i, a := range cluster {
		if tarBytes := chunkBytes(t, repo, got.Archives[i]); !bytes.Equal(tarBytes, srv.archives[i].tar) {
			t.Errorf("archive %s: the chunks hold %d bytes, not the %d streamed", a.Name, len(tarBytes), len(srv.archives[i].tar))
		}
		if got.Archives[i].Name != a.Name || got.Archives[i].TablespaceOID != a.OID {
			t.Errorf("archive %d: %s oid %d, want %s oid %d", i, got.Archives[i].Name, got.Archives[i].TablespaceOID, a.Name, a.OID)
		}
	}
	if diff := cmp.Diff(memberFiles(cluster), committedFiles(got)); diff != "" {
		t.Errorf("committed files (-streamed +committed):\n%s", diff)
	}
	if pgm, err := repo.PGManifest(ctx, got); err != nil || !bytes.Equal(pgm, srv.pgManifest) {
		t.Errorf("stored backup_manifest differs from the server's (%v)", err)
	}
	verdicts, err := catalog.Verify(ctx, repo, []string{b.ID}, catalog.VerifyOptions{})
	if err != nil || len(verdicts) != 1 || !verdicts[0].OK || verdicts[0].Files == 0 {
		t.Errorf("full verify of the committed backup: %+v, %v", verdicts, err)
	}
	checkReleased(t, repo, srv)
}

// chunkBytes reads an archive back from its chunks.
func chunkBytes(t *testing.T, repo *repository.Repository, a manifest.Archive) []byte {
	t.Helper()
	var out, raw bytes.Buffer
	var buf []byte
	dec := chunker.NewDecompressor()
	for _, ref := range a.Chunks {
		stored, err := repo.DownloadChunk(t.Context(), ref, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.DecodeChunk(dec, ref, stored, &raw); err != nil {
			t.Fatal(err)
		}
		out.Write(raw.Bytes())
	}
	return out.Bytes()
}

// memberFiles and committedFiles list regular files as archive/path and
// size.
func memberFiles(cluster []repotest.Archive) map[string]int64 {
	out := map[string]int64{}
	for i, a := range cluster {
		for _, m := range a.Members {
			if m.Type == tar.TypeReg {
				out[fmt.Sprintf("%d/%s", i, m.Name)] = int64(len(m.Data))
			}
		}
	}
	return out
}

func committedFiles(b *manifest.Backup) map[string]int64 {
	out := map[string]int64{}
	for _, f := range b.Files {
		if f.Type == manifest.TypeFile {
			out[fmt.Sprintf("%d/%s", f.Archive, f.Path)] = f.Size
		}
	}
	return out
}

// checkReleased: the lease is gone and both connections were closed.
func checkReleased(t *testing.T, repo *repository.Repository, srv *fakeServer) {
	t.Helper()
	if locks, err := repo.Locks(t.Context()); err != nil || len(locks) != 0 {
		t.Errorf("locks after the backup: %v, %v", locks, err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closed != 2 || len(srv.slots) != 1 {
		t.Errorf("%d connections closed and %d slots made, want 2 and 1", srv.closed, len(srv.slots))
	}
}

// stallStore fails the writes of backup leases while stalled, as a
// store that stopped answering would.
type stallStore struct {
	providers.Store
	stalled atomic.Bool
}

func (s *stallStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	if kind, _, ok := repository.LockFromKey(key); ok && kind == repository.LockBackup && s.stalled.Load() {
		return providers.MarkTransient(fmt.Errorf("put %s: stalled", key))
	}
	return s.Store.Put(ctx, key, body, size, o)
}

var errCut = errors.New("backup stream from fake:5432 ended without its end marker")

// TestRunFails: a backup that fails commits nothing, says why, and
// releases its lease.
func TestRunFails(t *testing.T) {
	tests := []struct {
		name string
		// setup changes the server; store is the repository's store.
		setup func(t *testing.T, srv *fakeServer, store *stallStore, repo *repository.Repository)
		opts  func(o *Options)
		is    error
		want  []string
	}{{
		name: "stream ends mid-archive",
		setup: func(t *testing.T, srv *fakeServer, _ *stallStore, _ *repository.Repository) {
			a := &srv.archives[0]
			a.cut, a.cutAt = errCut, len(a.tar)/2
		},
		is:   errCut,
		want: []string{"archive base.tar", "ended without its end marker"},
	}, {
		name: "file differs from the backup_manifest",
		setup: func(t *testing.T, srv *fakeServer, _ *stallStore, _ *repository.Repository) {
			// The server's manifest was made from other bytes of
			// base/1/1259 than it streamed.
			want := fakeCluster()
			m := &want[0].Members[6]
			if m.Name != "base/1/1259" {
				t.Fatalf("member 6 is %s", m.Name)
			}
			m.Data = bytes.Clone(m.Data)
			m.Data[1000] ^= 1
			srv.pgManifest = pgManifest(want)
		},
		want: []string{"the stream does not match PostgreSQL's backup_manifest", "base/1/1259: CRC32C differs"},
	}, {
		name: "lease lapses and gc takes the chunks",
		setup: func(t *testing.T, srv *fakeServer, store *stallStore, repo *repository.Repository) {
			srv.beforeManifest = func() {
				// The store stops taking the lease's refreshes until it
				// expires, and a gc that then runs takes the chunks the
				// backup has stored so far.
				store.stalled.Store(true)
				waitStale(t, repo)
				if _, err := catalog.GC(context.Background(), repo, catalog.PruneOptions{}); err != nil {
					t.Errorf("gc: %v", err)
				}
			}
		},
		opts: func(o *Options) { o.LeaseTTL = time.Second },
		is:   repository.ErrLeaseLapsed,
		want: []string{"no longer stored", "take the backup again"},
	}}
	for _, tc := range tests {
		// Fake time: waiting out the lease costs no wall-clock time.
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				store := &stallStore{Store: mem.New()}
				repo := repository.New(store)
				srv := newFakeServer(t, fakeCluster(), nil)
				tc.setup(t, srv, store, repo)
				o := testOptions()
				if tc.opts != nil {
					tc.opts(&o)
				}
				b, err := run(ctx, repo, o, srv)
				if err == nil {
					t.Fatalf("run committed %s", b.ID)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %q is not %q", err, tc.is)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if ids, err := repo.BackupIDs(ctx); err != nil || len(ids) != 0 {
					t.Errorf("backups after a failed run: %v, %v", ids, err)
				}
				store.stalled.Store(false)
				checkReleased(t, repo, srv)
			})
		})
	}
}

// waitStale waits until every backup lease in repo has expired by the
// store's clock.
func waitStale(t *testing.T, repo *repository.Repository) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		locks, err := repo.Locks(context.Background())
		if err != nil {
			t.Error(err)
			return
		}
		stale := len(locks) > 0
		for _, l := range locks {
			stale = stale && repository.Stale(l, time.Now())
		}
		if stale {
			return
		}
	}
	t.Error("the backup lease did not expire")
}

// TestRunCommitsAfterLapse: a backup whose lease lapsed, but whose
// objects no gc took meanwhile, still commits, after saying it checked.
func TestRunCommitsAfterLapse(t *testing.T) {
	// Fake time: waiting out the lease costs no wall-clock time.
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		store := &stallStore{Store: mem.New()}
		repo := repository.New(store)
		srv := newFakeServer(t, fakeCluster(), nil)
		srv.beforeManifest = func() {
			store.stalled.Store(true)
			waitStale(t, repo)
		}
		rec := &recorder{}
		o := testOptions()
		o.LeaseTTL, o.Log = time.Second, slog.New(rec)
		b, err := run(ctx, repo, o, srv)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if ids, err := repo.BackupIDs(ctx); err != nil || !cmp.Equal(ids, []string{b.ID}) {
			t.Errorf("backups: %v, %v", ids, err)
		}
		checked := false
		for _, r := range rec.recs {
			checked = checked || strings.HasPrefix(r.msg, "backup lease lapsed; checking")
		}
		if !checked {
			t.Error("the backup did not say its lease lapsed")
		}
		store.stalled.Store(false)
		checkReleased(t, repo, srv)
	})
}

// TestRunSizeEstimate: a backup asks the server to total the data
// directory (BASE_BACKUP PROGRESS) only with EstimateSize and when the
// repository holds no earlier backup of the same server; otherwise, with
// progress on, that backup's raw size is the estimate, and the server is
// spared a stat of every file.
func TestRunSizeEstimate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		estimate bool
		want     []bool
	}{
		{"bars", true, []bool{true, false}},
		{"log lines", false, []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			repo := repository.New(mem.New())
			srv := newFakeServer(t, fakeCluster(), nil)
			var mu sync.Mutex
			var estimates []int64
			o := testOptions()
			o.EstimateSize = tc.estimate
			o.Progress = func(p Progress) {
				mu.Lock()
				estimates = append(estimates, p.EstimatedBytes)
				mu.Unlock()
			}
			first, err := run(ctx, repo, o, srv)
			if err != nil {
				t.Fatalf("first run: %v", err)
			}
			o.Now = func() time.Time { return testNow.Add(time.Hour) }
			mu.Lock()
			estimates = nil
			mu.Unlock()
			if _, err := run(ctx, repo, o, srv); err != nil {
				t.Fatalf("second run: %v", err)
			}
			if !cmp.Equal(srv.progress, tc.want) {
				t.Errorf("PROGRESS asked per backup: %v, want %v", srv.progress, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(estimates) == 0 || estimates[len(estimates)-1] != first.Totals.RawBytes || first.Totals.RawBytes == 0 {
				t.Errorf("second backup's estimates %v, want the first's raw size %d", estimates, first.Totals.RawBytes)
			}
		})
	}
}
