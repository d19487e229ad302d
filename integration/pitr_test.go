package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestPITR: restoring to a time, an LSN and a named restore point yields
// exactly the transactions committed before each.
func TestPITR(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			repoDir := filepath.Join(pgtest.TempDir(t), "repo")
			repoURL := "file://" + repoDir
			handToServerUser(t, filepath.Dir(pgstowBin))
			c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{
				"archive_mode = on",
				fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
			}})
			batch := func(n int) {
				c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO pitr SELECT g, %d FROM generate_series(1, 100) g", n))
			}
			c.Exec(t, "postgres", "CREATE TABLE pitr (id int, batch int)")
			beforeBackup := c.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
			batch(1)
			repo := openFileRepo(t, repoDir)
			if _, err := backup.Run(t.Context(), repo, backupOpts(t, c)); err != nil {
				t.Fatal(err)
			}
			chownServerUser(t, repoDir) // wal-fetch runs as the server user
			batch(2)
			targetTime := c.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
			batch(3)
			targetLSN := c.Query(t, "postgres", "SELECT pg_current_wal_lsn()")[0][0]
			batch(4)
			c.Exec(t, "postgres", "SELECT pg_create_restore_point('before-batch-5')")
			batch(5)
			last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
			pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool {
				return c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")[0][0] == "t"
			})

			tests := []struct {
				flag, value string
				wantBatches int // batches 1..wantBatches, 100 rows each
			}{
				{"--target-time", targetTime, 2},
				{"--target-lsn", targetLSN, 3},
				{"--target-name", "before-batch-5", 4},
			}
			for _, tt := range tests {
				t.Run(tt.flag, func(t *testing.T) {
					target := filepath.Join(pgtest.TempDir(t), "data")
					r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target, tt.flag, tt.value)
					if r.code != 0 {
						t.Fatalf("restore %s %s: exit %d: %s", tt.flag, tt.value, r.code, r.stderr)
					}
					// The restored server must not archive into this repository.
					f, _ := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
					f.WriteString("archive_mode = off\n")
					f.Close()
					rs := restoreChecks(t, major, target, "-n")
					got := rs.Query(t, "postgres", "SELECT max(batch) || ':' || count(*) FROM pitr")[0][0]
					want := fmt.Sprintf("%d:%d", tt.wantBatches, 100*tt.wantBatches)
					if got != want {
						t.Fatalf("%s %s: rows %s (max batch:count), want %s", tt.flag, tt.value, got, want)
					}
				})
			}

			refusals := []struct {
				flag, value, want string
			}{
				{"--target-time", beforeBackup, "before the end of the oldest backup"},
				{"--target-lsn", "FF/0", "beyond the archived WAL"},
				{"--target-time", "2026-01-01 00:00:00", "with a zone"},
			}
			for _, tt := range refusals {
				r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", filepath.Join(t.TempDir(), "x"), tt.flag, tt.value)
				if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("restore %s %s: exit %d, %q; want a refusal saying %q", tt.flag, tt.value, r.code, r.stderr, tt.want)
				}
			}
		})
	}
}
