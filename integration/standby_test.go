package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// edgeMajors are the oldest and newest majors configured (15 and 18 by
// default), or the first configured one when neither is: the tests that
// are slow per major (the standby, delta and partial restores) run on
// them only.
func edgeMajors() []int {
	var out []int
	for _, m := range pgtest.Majors() {
		if m == 15 || m == 18 {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		out = pgtest.Majors()[:1]
	}
	return out
}

// startStandby makes a streaming standby of primary with pgstow itself
// (npm's PostgreSQL builds have no pg_basebackup): a backup of the
// primary into repo, restored with Standby, pointed at the primary.
func startStandby(t *testing.T, primary *pgtest.Cluster, repo *repository.Repository) *pgtest.Cluster {
	t.Helper()
	o := backupOpts(t, primary)
	o.Label = "seed a standby"
	b, err := backup.Run(t.Context(), repo, o)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(pgtest.TempDir(t), "data")
	if _, err := restore.Run(t.Context(), repo, restore.Options{BackupID: b.ID, Target: target, Standby: true, Log: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	appendAutoConf(t, target, fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=standby'", primary.Port))
	return pgtest.StartDir(t, primary.Major, target)
}

func appendAutoConf(t *testing.T, dataDir string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitReplayed waits until the standby has replayed everything the primary
// has written so far.
func waitReplayed(t *testing.T, primary, standby *pgtest.Cluster) {
	t.Helper()
	lsn := primary.Query(t, "postgres", "SELECT pg_current_wal_insert_lsn()")[0][0]
	pgtest.Eventually(t, time.Minute, "the standby to replay up to "+lsn, func() bool {
		return standby.Query(t, "postgres", "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn")[0][0] == "t"
	})
}

// batchesSQL sums up standby_rows as "first:last:rows".
const batchesSQL = "SELECT coalesce(min(batch), 0) || ':' || coalesce(max(batch), 0) || ':' || count(*) FROM standby_rows"

// TestStandbyBackup: a backup from a streaming standby commits at once
// when the primary is idle (a standby cannot complete its last WAL
// segment; pgstow stores it up to the backup's end), restores as a
// primary holding what the primary had committed, passes
// pg_verifybackup, and serves point-in-time recovery past the backup
// with WAL the primary archived. Then a promotion during a backup fails
// it with one line. Not parallel: the idle-primary backup must finish
// within 30 s, which other tests' load could spoil.
func TestStandbyBackup(t *testing.T) {
	for _, major := range edgeMajors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			ctx := t.Context()
			repoDir := filepath.Join(pgtest.TempDir(t), "repo")
			repoURL := "file://" + repoDir
			handToServerUser(t, filepath.Dir(pgstowBin))
			primary := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{
				"archive_mode = on",
				fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
			}})
			primary.Exec(t, "postgres", "CREATE TABLE standby_rows (id int, batch int)")
			batch := func(n int) {
				primary.Exec(t, "postgres", fmt.Sprintf("INSERT INTO standby_rows SELECT g, %d FROM generate_series(1, 100) g", n))
			}
			batch(1)
			repo := openFileRepo(t, repoDir)
			standby := startStandby(t, primary, repo)
			chownServerUser(t, repoDir) // the primary's archive_command runs as the server user
			batch(2)
			waitReplayed(t, primary, standby)
			if got := standby.Query(t, "postgres", "SELECT pg_is_in_recovery()")[0][0]; got != "t" {
				t.Fatalf("the standby is not in recovery (%s)", got)
			}

			// 1. The primary is idle: nothing will fill the standby's
			// current segment. Default WAL timeout: the backup must not
			// need it.
			want := primary.Query(t, "postgres", batchesSQL)[0][0]
			o := backupOpts(t, standby)
			o.WALTimeout = 0
			t0 := time.Now()
			idle, err := backup.Run(ctx, repo, o)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); d > 30*time.Second {
				t.Errorf("the backup from the standby of an idle primary took %s, want under 30 s", d)
			}
			last := idle.WAL[len(idle.WAL)-1].Name
			if _, _, _, size, err := manifest.ParsePartialSegmentName(last, idle.WALSegmentSize); err != nil {
				t.Errorf("the standby backup's last WAL file is %s, want a partial segment: %v", last, err)
			} else if seg := manifest.SegmentNo(idle.EndLSN, idle.WALSegmentSize); uint64(idle.EndLSN)-seg*idle.WALSegmentSize != size {
				t.Errorf("partial segment %s holds %d bytes, the end LSN %s is at %d in its segment", last, size, idle.EndLSN, uint64(idle.EndLSN)-seg*idle.WALSegmentSize)
			}
			chownServerUser(t, repoDir)
			r1 := restoreStandbyBackup(t, repo, idle.ID, major)
			if got := r1.Query(t, "postgres", batchesSQL)[0][0]; got != want {
				t.Errorf("restored idle standby backup holds batches %s (first:last:rows), the primary had %s", got, want)
			}
			amcheck(t, r1)
			r1.Stop(t)

			// The same backup with --wal=fetch before the primary has
			// archived its last segment whole: restore_command cannot
			// supply it, the partial copy in pg_wal/ must.
			fetched := filepath.Join(pgtest.TempDir(t), "data")
			if res := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "--backup", idle.ID, "-D", fetched, "--wal", "fetch"); res.code != 0 {
				t.Fatalf("restore --wal fetch: exit %d: %s", res.code, res.stderr)
			}
			appendAutoConf(t, fetched, "archive_mode = off")
			r1f := restoreChecks(t, major, fetched, "-n")
			if got := r1f.Query(t, "postgres", batchesSQL)[0][0]; got != want {
				t.Errorf("idle standby backup restored with --wal=fetch holds batches %s, the primary had %s", got, want)
			}
			r1f.Stop(t)

			// With --wal=none the last segment must come from the
			// primary's archive, which an idle primary does not fill:
			// a bounded wait, and one line naming what is missing and
			// the way out.
			none := o
			none.WAL = backup.WALNone
			none.WALTimeout = 5 * time.Second
			_, err = backup.Run(ctx, repo, none)
			t.Logf("--wal=none from the standby of an idle primary: %v", err)
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "still missing") || !strings.Contains(err.Error(), "--wal=stream") {
				t.Errorf("--wal=none from a standby: %v; want one line naming the missing segment and --wal=stream", err)
			}

			// 2. Writes keep running on the primary.
			var (
				wmu     sync.Mutex
				written = 2
			)
			wctx, stopWriter := context.WithCancel(ctx)
			writerDone := make(chan struct{})
			batches := func() int { wmu.Lock(); defer wmu.Unlock(); return written }
			go func() {
				defer close(writerDone)
				// A batch every 20 ms: a steady stream, not a flood.
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for n := 3; ; n++ {
					sql := fmt.Sprintf("INSERT INTO standby_rows SELECT g, %d FROM generate_series(1, 100) g", n)
					if err := primary.ExecErr("postgres", sql); err != nil {
						return
					}
					wmu.Lock()
					written = n
					wmu.Unlock()
					select {
					case <-wctx.Done():
						return
					case <-tick.C:
					}
				}
			}()
			defer func() { stopWriter(); <-writerDone }()
			pgtest.Eventually(t, time.Minute, "the writer to commit 10 batches", func() bool { return batches() >= 12 })
			waitReplayed(t, primary, standby)
			before := batches() // committed and replayed before the backup began
			t0 = time.Now()
			busy, err := backup.Run(ctx, repo, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("backup from the standby under writes: %s, WAL %s", time.Since(t0).Round(time.Millisecond), busy.WAL[len(busy.WAL)-1].Name)
			chownServerUser(t, repoDir)
			r2 := restoreStandbyBackup(t, repo, busy.ID, major)
			checkBatches(t, r2.Query(t, "postgres", batchesSQL)[0][0], before)
			r2.Stop(t)

			// 3. Point-in-time recovery from that backup to a time after
			// it, through WAL the primary archived (the complete copy of
			// the segment the backup holds only partly, and those after).
			atEnd := batches()
			pgtest.Eventually(t, time.Minute, "the writer to commit batches after the backup", func() bool { return batches() >= atEnd+10 })
			stopWriter()
			<-writerDone
			targetTime := primary.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
			wantPITR := primary.Query(t, "postgres", batchesSQL)[0][0]
			batch(1000) // after the target
			switched := primary.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
			pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+switched, func() bool {
				return primary.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+switched+"' FROM pg_stat_archiver")[0][0] == "t"
			})
			target := filepath.Join(pgtest.TempDir(t), "data")
			res := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "--backup", busy.ID, "-D", target, "--target-time", targetTime)
			if res.code != 0 {
				t.Fatalf("restore --target-time %s: exit %d: %s", targetTime, res.code, res.stderr)
			}
			if !strings.Contains(res.stderr, "restored as a primary") {
				t.Errorf("restore of a standby backup did not say it made a primary:\n%s", res.stderr)
			}
			appendAutoConf(t, target, "archive_mode = off")
			r3 := restoreChecks(t, major, target, "-n")
			if got := r3.Query(t, "postgres", batchesSQL)[0][0]; got != wantPITR {
				t.Errorf("point-in-time restore to %s holds batches %s, want %s", targetTime, got, wantPITR)
			}
			r3.Stop(t)

			// 4. The standby is promoted while a (throttled) backup runs:
			// it fails with one line, and commits nothing.
			backups, err := repo.Backups(ctx)
			if err != nil {
				t.Fatal(err)
			}
			o.MaxRate = 32 << 10
			streaming := make(chan struct{})
			var once sync.Once
			o.Progress = func(p backup.Progress) {
				if p.Phase == backup.PhaseStreaming && p.StreamedBytes > 0 {
					once.Do(func() { close(streaming) })
				}
			}
			o.ProgressInterval = 100 * time.Millisecond
			errc := make(chan error, 1)
			go func() { _, err := backup.Run(ctx, repo, o); errc <- err }()
			select {
			case <-streaming: // the base backup is under way: promote now
			case err := <-errc:
				t.Fatalf("the throttled backup ended before streaming: %v", err)
			case <-time.After(2 * time.Minute):
				t.Fatal("the throttled backup did not start streaming within 2 minutes")
			}
			standby.Exec(t, "postgres", "SELECT pg_promote()")
			select {
			case err = <-errc:
			case <-time.After(2 * time.Minute):
				t.Fatal("the backup did not end within 2 minutes of the standby's promotion")
			}
			t.Logf("backup during a promotion: %v", err)
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "promoted") {
				t.Errorf("backup during a promotion: %v; want one line saying the standby was promoted", err)
			}
			after, err := repo.Backups(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(backups) {
				t.Errorf("%d backups after the failed one, %d before", len(after), len(backups))
			}
		})
	}
}

// restoreStandbyBackup restores backup id with its WAL embedded, checks it
// with PostgreSQL's tools and starts it: it must come up as a primary.
func restoreStandbyBackup(t *testing.T, repo *repository.Repository, id string, major int) *pgtest.Cluster {
	t.Helper()
	target := filepath.Join(pgtest.TempDir(t), "data")
	res, err := restore.Run(t.Context(), repo, restore.Options{BackupID: id, Target: target, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.FromStandby {
		t.Errorf("restore of backup %s did not notice it came from a standby", id)
	}
	if _, err := os.Stat(filepath.Join(target, "standby.signal")); err == nil {
		t.Errorf("standby.signal restored: the copy would follow the primary")
	}
	appendAutoConf(t, target, "archive_mode = off")
	return restoreChecks(t, major, target)
}

// checkBatches checks that got ("first:last:rows") holds whole batches 1
// to some last one of at least min: what was committed before the backup
// began, and nothing torn.
func checkBatches(t *testing.T, got string, min int) {
	t.Helper()
	parts := strings.Split(got, ":")
	if len(parts) != 3 {
		t.Fatalf("batches %q", got)
	}
	var v [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("batches %q: %v", got, err)
		}
		v[i] = n
	}
	if v[0] != 1 || v[1] < min || v[2] != 100*v[1] {
		t.Errorf("restored batches %s (first:last:rows); want batches 1 to at least %d, 100 rows each", got, min)
	}
}
