package replication_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/replication"
)

// TestIncrementalServer runs UPLOAD_MANIFEST and BASE_BACKUP INCREMENTAL
// against real servers: on PostgreSQL 17+ with summarize_wal on, an
// incremental after a full sends the changed table as an INCREMENTAL.
// member; refusals (no manifest uploaded, a garbage manifest, summaries
// that do not reach back to the parent, summarize_wal off) come as
// ErrIncrementalRefused with the server's message, and the same
// connection then takes a full backup. Settings reads what each server
// has, PostgreSQL 15 included.
func TestIncrementalServer(t *testing.T) {
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("PostgreSQL%d", major), func(t *testing.T) {
			if major < 17 {
				testSettingsBefore17(t, major)
				return
			}
			t.Run("summarize_wal on", func(t *testing.T) { testIncrementalOn(t, major) })
			t.Run("summarize_wal off", func(t *testing.T) { testIncrementalOff(t, major) })
		})
	}
}

func testSettingsBefore17(t *testing.T, major int) {
	c := pgtest.Start(t, pgtest.Options{Major: major})
	conn := connect(t, c)
	s, err := conn.Settings(t.Context())
	if err != nil {
		t.Fatalf("Settings: %v", err)
	}
	want := replication.Settings{ServerVersion: conn.ServerVersion(), BlockSize: 8192, SegmentSize: 1 << 30}
	if s != want || s.ServerVersion/10000 != major {
		t.Errorf("Settings = %+v, want %+v", s, want)
	}
	if err := conn.UploadManifest(t.Context(), strings.NewReader("{}")); !errors.Is(err, replication.ErrIncrementalRefused) {
		t.Errorf("UploadManifest on PostgreSQL %d: %v, want ErrIncrementalRefused", major, err)
	}
	if _, err := conn.BaseBackup(t.Context(), replication.BackupOptions{Incremental: true}); !errors.Is(err, replication.ErrIncrementalRefused) {
		t.Errorf("incremental BASE_BACKUP on PostgreSQL %d: %v, want ErrIncrementalRefused", major, err)
	}
	// Nothing was sent: the connection still takes a full backup.
	fullOn(t, conn)
}

func testIncrementalOn(t *testing.T, major int) {
	c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{"summarize_wal = on"}})
	c.Exec(t, "postgres", "CREATE TABLE changed AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
	c.Exec(t, "postgres", "CREATE TABLE unchanged AS SELECT g AS id FROM generate_series(1, 20000) g")
	// Hint bits and the visibility map set before the full: setting them
	// later would change (and, with data checksums, WAL-log) every block.
	c.Exec(t, "postgres", "VACUUM (FREEZE, ANALYZE)")

	conn := connect(t, c)
	s, err := conn.Settings(t.Context())
	if err != nil {
		t.Fatalf("Settings: %v", err)
	}
	if want := (replication.Settings{ServerVersion: conn.ServerVersion(), SummarizeWAL: true, BlockSize: 8192, SegmentSize: 1 << 30, WALSummaryKeepTime: 10 * 24 * time.Hour}); s != want {
		t.Errorf("Settings = %+v, want %+v", s, want)
	}
	if n := s.RelsegBlocks(); n != 131072 {
		t.Errorf("RelsegBlocks = %d, want 131072", n)
	}

	// An incremental without a manifest uploaded first: refused, and the
	// connection then takes the full.
	_, err = conn.BaseBackup(t.Context(), replication.BackupOptions{Incremental: true, FastCheckpoint: true})
	assertRefused(t, err, "UPLOAD_MANIFEST")
	full := fullOn(t, conn)

	c.Exec(t, "postgres", "UPDATE changed SET pad = repeat('y', 100) WHERE id <= 100")
	c.Exec(t, "postgres", "CREATE TABLE created AS SELECT 1 AS id")
	c.Exec(t, "postgres", "CHECKPOINT")

	// A garbage manifest: refused, naming the problem; the connection
	// is still usable for a good one.
	conn = connect(t, c)
	err = conn.UploadManifest(t.Context(), strings.NewReader(`{"PostgreSQL-Backup-Manifest-Version": 2, "Files": [{"Path": 7}]}`))
	assertRefused(t, err, "manifest")
	t.Logf("garbage manifest: %v", err)
	if err := conn.UploadManifest(t.Context(), bytes.NewReader(full.manifest)); err != nil {
		t.Fatalf("UploadManifest of the full's manifest: %v", err)
	}
	incr := backupOn(t, conn, replication.BackupOptions{Incremental: true, FastCheckpoint: true})

	changed := relPath(t, c, "changed")
	unchanged := relPath(t, c, "unchanged")
	created := relPath(t, c, "created")
	has := func(name string) bool { return incr.members[name] }
	incrName := path.Join(path.Dir(changed), "INCREMENTAL."+path.Base(changed))
	if !has(incrName) || has(changed) {
		t.Errorf("the changed table is not sent as %s", incrName)
	}
	if uname := path.Join(path.Dir(unchanged), "INCREMENTAL."+path.Base(unchanged)); !has(uname) {
		t.Errorf("the unchanged table is not sent as %s (an empty incremental)", uname)
	}
	if !has(created) {
		t.Errorf("the table created after the full is not sent whole as %s", created)
	}
	if !strings.Contains(incr.label, "INCREMENTAL FROM LSN:") || strings.Contains(full.label, "INCREMENTAL") {
		t.Errorf("backup_label of the incremental:\n%s\nof the full:\n%s", incr.label, full.label)
	}
	if !bytes.Contains(incr.manifest, []byte(`"`+incrName+`"`)) {
		t.Errorf("the incremental's backup_manifest does not list %s", incrName)
	}
	if !bytes.Contains(incr.manifest, []byte(`"Checksum-Algorithm": "CRC32C"`)) || !bytes.Contains(full.manifest, []byte(`"Checksum-Algorithm": "CRC32C"`)) {
		t.Errorf("the manifests do not use CRC32C checksums")
	}

}

func testIncrementalOff(t *testing.T, major int) {
	c := pgtest.Start(t, pgtest.Options{Major: major})
	conn := connect(t, c)
	s, err := conn.Settings(t.Context())
	if err != nil {
		t.Fatalf("Settings: %v", err)
	}
	if want := (replication.Settings{ServerVersion: conn.ServerVersion(), BlockSize: 8192, SegmentSize: 1 << 30, WALSummaryKeepTime: 10 * 24 * time.Hour}); s != want {
		t.Errorf("Settings = %+v, want %+v", s, want)
	}
	full := fullOn(t, conn)
	c.Exec(t, "postgres", "CREATE TABLE t AS SELECT 1 AS id")
	conn = connect(t, c)
	if err := conn.UploadManifest(t.Context(), bytes.NewReader(full.manifest)); err != nil {
		t.Fatalf("UploadManifest: %v", err)
	}
	_, err = conn.BaseBackup(t.Context(), replication.BackupOptions{Incremental: true, FastCheckpoint: true})
	assertRefused(t, err, "unless WAL summarization is enabled")
	fullOn(t, conn)

	// Summarization turned on after the full: the summaries do not reach
	// back to it.
	for range 2 {
		c.Exec(t, "postgres", "SELECT pg_switch_wal()")
		c.Exec(t, "postgres", "CHECKPOINT")
	}
	c.Exec(t, "postgres", "ALTER SYSTEM SET summarize_wal = on")
	c.Exec(t, "postgres", "SELECT pg_reload_conf()")
	conn = connect(t, c)
	pgtest.Eventually(t, 10*time.Second, "summarize_wal on", func() bool {
		s, err := conn.Settings(t.Context())
		return err == nil && s.SummarizeWAL
	})
	c.Exec(t, "postgres", "CREATE TABLE u AS SELECT 1 AS id")
	c.Exec(t, "postgres", "CHECKPOINT")
	if err := conn.UploadManifest(t.Context(), bytes.NewReader(full.manifest)); err != nil {
		t.Fatalf("UploadManifest: %v", err)
	}
	_, err = conn.BaseBackup(t.Context(), replication.BackupOptions{Incremental: true, FastCheckpoint: true})
	assertRefused(t, err, "WAL summaries are required on timeline")
	t.Logf("summaries missing: %v", err)
	fullOn(t, conn)
}

// assertRefused checks that err is a refusal carrying the server's error.
func assertRefused(t *testing.T, err error, says string) {
	t.Helper()
	var pgErr *pgconn.PgError
	switch {
	case !errors.Is(err, replication.ErrIncrementalRefused):
		t.Fatalf("error %v, want ErrIncrementalRefused", err)
	case !errors.As(err, &pgErr):
		t.Fatalf("error %v does not keep the server's *pgconn.PgError", err)
	case !strings.Contains(err.Error(), says):
		t.Fatalf("error %v does not say %q", err, says)
	}
}

func connect(t *testing.T, c *pgtest.Cluster) *replication.Conn {
	t.Helper()
	conn, err := replication.Connect(t.Context(), c.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func relPath(t *testing.T, c *pgtest.Cluster, table string) string {
	t.Helper()
	return c.Query(t, "postgres", "SELECT pg_relation_filepath('"+table+"')")[0][0]
}

// taken is what a base backup sent: base.tar's member names, its
// backup_label, and PostgreSQL's backup_manifest.
type taken struct {
	members  map[string]bool
	label    string
	manifest []byte
}

// fullOn takes a full backup on conn and checks that it is one, even
// after a manifest was uploaded on the connection.
func fullOn(t *testing.T, conn *replication.Conn) taken {
	t.Helper()
	got := backupOn(t, conn, replication.BackupOptions{FastCheckpoint: true})
	for name := range got.members {
		if strings.HasPrefix(path.Base(name), "INCREMENTAL.") {
			t.Fatalf("full backup has member %s", name)
		}
	}
	if strings.Contains(got.label, "INCREMENTAL") {
		t.Fatalf("full backup's backup_label:\n%s", got.label)
	}
	return got
}

func backupOn(t *testing.T, conn *replication.Conn, o replication.BackupOptions) taken {
	t.Helper()
	bb, err := conn.BaseBackup(t.Context(), o)
	if err != nil {
		t.Fatalf("BASE_BACKUP %+v: %v", o, err)
	}
	defer bb.Close()
	got := taken{members: map[string]bool{}}
	for {
		a, err := bb.NextArchive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next archive: %v", err)
		}
		if a.Name != "base.tar" {
			continue
		}
		tr := tar.NewReader(a)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("base.tar: %v", err)
			}
			got.members[h.Name] = true
			if h.Name == "backup_label" {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatalf("backup_label: %v", err)
				}
				got.label = string(b)
			}
		}
	}
	var m bytes.Buffer
	if _, err := bb.ManifestTo(&m); err != nil {
		t.Fatalf("backup_manifest: %v", err)
	}
	got.manifest = m.Bytes()
	if _, err := bb.Finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if len(got.members) == 0 || got.label == "" {
		t.Fatalf("base.tar has %d members, backup_label %q", len(got.members), got.label)
	}
	return got
}
