package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/restore"
)

// restoreEntry is the --json shape of a finished restore.
type restoreEntry struct {
	BackupID    string  `json:"backup_id"`
	DataDir     string  `json:"data_dir"`
	Files       int     `json:"files"`
	Bytes       int64   `json:"bytes"`
	WALSegments int     `json:"wal_segments"`
	Seconds     float64 `json:"seconds"`
	// For a delta restore or one of chosen databases.
	FilesKept      int   `json:"files_kept,omitempty"`
	FilesRewritten int   `json:"files_rewritten,omitempty"`
	EntriesRemoved int   `json:"entries_removed,omitempty"`
	Placeholders   int   `json:"placeholders,omitempty"`
	BytesKept      int64 `json:"bytes_kept,omitempty"`
	BytesFetched   int64 `json:"bytes_fetched"`
}

func newRestoreCmd(g *globals) *cobra.Command {
	var (
		repoURL, backupID, pgdata, wal string
		label                          string
		tablespaces                    []string
		concurrency                    int
		tTime, tLSN, tXID, tName       string
		tImmediate, standby            bool
		delta                          bool
		deltaCheck                     string
		databases                      []string
		tAction, tTimeline             string
		syncMethod                     string
		progress                       string
		progressEvery                  time.Duration
		srv                            serverFlags
		probe                          string // reads the repository as restore_command will
	)
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a backup into a new data directory, or refresh a stopped one (--delta)",
		Long: `Restore a committed backup into a data directory that must not exist or be empty.

Every chunk is verified against its SHA-256 id and every file against its CRC32C
before the directory is declared complete; global/pg_control is written last, so
an interrupted restore never looks like a finished one. User tablespaces go to
their recorded location unless remapped with --tablespace OID=DIR.

While it reads, a lease in the repository keeps "pgstow delete" off the backup;
from a repository this user cannot write it restores without one, with a
warning (docs/catalog.md).

--wal=embed (default) puts the WAL the backup needs into pg_wal/, so the
directory starts on its own. --wal=fetch writes recovery.signal and a
restore_command that runs 'pgstow wal-fetch' against this repository.

The restored directory starts as a primary: a backup taken from a standby loses
its standby.signal and primary_conninfo, so the copy never streams from the
server it was taken from. --standby keeps them (or writes standby.signal).

--delta refreshes a directory that holds a stopped cluster of the same system
(a stale standby, last night's copy): files whose size and CRC32C match the
backup are kept, a file that differs is rewritten from the chunks of its
differing ranges only, and what the backup lacks is removed (pg_wal/ contents
too); then WAL, settings and pg_control last, as in a normal restore. It refuses
a directory with a running server, of another system identifier, or that is not
a data directory; an absent or empty one gets a normal restore.
--delta-check size-mtime trusts size and modification time instead of reading
every file: faster, blind to changes that keep both.

--database NAME (repeatable) restores only those databases' data, with
template0, template1 and postgres and everything outside the databases; the
other databases' relation files become empty placeholders of their size, so the
server starts and they can be dropped (connecting to one fails). See
docs/restore.md.

--start then starts a throw-away server on the directory, on 127.0.0.1 and a
free port (or --port), as the "postgres" OS user when run as root; it trusts
local connections (the backup's pg_hba.conf is kept as pg_hba.conf.pgstow-orig),
never archives WAL, waits until it accepts connections (and, with a recovery
target, until recovery reached it) and prints its URI, alone, on stdout.
'pgstow discard -D DIR' stops it and deletes it. See docs/ci-seeding.md.`,
		Example: `  pgstow restore --repo file:///var/backups/pg -D /var/lib/postgresql/15/restored
  pgstow restore --backup 20261123T204651Z -D /srv/pg --tablespace 16384=/srv/ts1 --wal fetch
  pgstow restore --target-time 2026-11-23T21:00:00Z -D /srv/pg
  pgstow restore --label sanitised -D /srv/pg               # the newest backup labelled so
  pgstow restore --delta -D /var/lib/postgresql/15/main     # refresh a stopped stale copy
  DATABASE_URL=$(pgstow restore --start --database app -D /var/tmp/seed)  # one database
  DATABASE_URL=$(pgstow restore --start -D /var/tmp/seed)   # a throw-away server for CI
  pgstow discard -D /var/tmp/seed                           # stop it and delete it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromEnv(cmd, g, "repo", "PGSTOW_REPO", &repoURL)
			if pgdata == "" {
				return usageError{errors.New("--pgdata (-D) is required: the directory to restore into")}
			}
			target, err := filepath.Abs(pgdata)
			if err != nil {
				return usageError{fmt.Errorf("--pgdata %q: %w", pgdata, err)}
			}
			if delta && len(databases) > 0 {
				return usageError{errors.New("--delta and --database are not supported together yet: restore the chosen databases into an empty directory")}
			}
			if cmd.Flags().Changed("delta-check") && !delta {
				return usageError{errors.New("--delta-check only applies with --delta")}
			}
			dc, err := restore.ParseDeltaCheck(deltaCheck)
			if err != nil {
				return usageError{fmt.Errorf("--delta-check: %w", err)}
			}
			for _, d := range databases {
				if d == "" {
					return usageError{errors.New("--database: give a database name")}
				}
			}
			// A delta restore goes into a directory that holds a
			// cluster: restore.Run checks it.
			if !delta {
				if err := checkRestoreTarget("pgdata", target); err != nil {
					return err
				}
			}
			sm, err := restore.ParseSyncMethod(syncMethod)
			if err != nil {
				return usageError{fmt.Errorf("--sync-method: %w", err)}
			}
			o := restore.Options{
				BackupID:    backupID,
				Target:      target,
				WAL:         restore.WALMode(wal),
				Concurrency: concurrency,
				SyncMethod:  sm,
				Standby:     standby,
				Delta:       delta,
				DeltaCheck:  dc,
				Databases:   databases,
				Log:         g.log,
				Tablespaces: map[uint32]string{},
			}
			for _, m := range tablespaces {
				oid, dir, ok := strings.Cut(m, "=")
				n, err := strconv.ParseUint(oid, 10, 32)
				if !ok || err != nil || n == 0 || !filepath.IsAbs(dir) {
					return usageError{fmt.Errorf("--tablespace %q: use OID=/absolute/dir", m)}
				}
				if _, dup := o.Tablespaces[uint32(n)]; dup {
					return usageError{fmt.Errorf("--tablespace: OID %d is given twice; give each tablespace one directory", n)}
				}
				if !delta {
					if err := checkRestoreTarget("tablespace", filepath.Clean(dir)); err != nil {
						return err
					}
				}
				o.Tablespaces[uint32(n)] = filepath.Clean(dir)
			}
			rc, err := recoveryTarget(cmd, tTime, tLSN, tXID, tName, tImmediate, tAction, tTimeline)
			if err != nil {
				return err
			}
			if rc != nil {
				if cmd.Flags().Changed("wal") && o.WAL != restore.WALFetch {
					return usageError{errors.New("a recovery target needs --wal=fetch: the WAL after the backup comes from the archive")}
				}
				o.WAL = restore.WALFetch
				o.Recovery = rc
			}
			switch o.WAL {
			case restore.WALEmbed:
			case restore.WALFetch:
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find pgstow's own path for restore_command: %w", err)
				}
				fc, err := restore.NewFetchCommand(self, repoURL, g.keyFilePath(cmd), g.allowSharedKey)
				if err != nil {
					return err
				}
				o.RestoreCommand, probe = fc.RestoreCommand(), fc.Probe()
			default:
				return usageError{fmt.Errorf("--wal %q: use embed or fetch", wal)}
			}
			if err := intRange("concurrency", concurrency, 1, 256); err != nil {
				return err
			}
			if len(databases) > 0 && srv.start && !cmd.Flags().Changed("dbname") {
				// The URI points at the database asked for.
				srv.dbname = databases[0]
			}
			if err := srv.check(cmd, o); err != nil {
				return err
			}
			if o.Standby && srv.start {
				return usageError{errors.New("--standby and --start do not go together: --start runs a throw-away primary; restore with --standby and start the standby yourself")}
			}
			if label != "" && (cmd.Flags().Changed("backup") || o.Recovery != nil) {
				return usageError{errors.New("--label picks the newest backup with that label: leave out --backup and recovery targets")}
			}
			mode, err := g.progressFromFlags(progress, progressEvery)
			if err != nil {
				return err
			}
			repo, err := g.openRepo(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()
			if label != "" {
				if o.BackupID, err = catalog.NewestLabelled(cmd.Context(), repo, label); err != nil {
					return err
				}
			}
			view := g.newProgressView(mode, "restore", progressEvery)
			if mode != progressOff {
				o.Progress = func(p restore.Progress) { view.update(restoreSnapshot(p)) }
			}
			// The second slack is for the manifests.
			setMemoryPolicy(o.MemoryBudget() + memoryLimitSlack)
			res, err := restore.Run(cmd.Context(), repo, o)
			view.finish(err == nil)
			if err != nil {
				return err
			}
			g.run = runStats{rawBytes: res.Bytes}
			summary := fmt.Sprintf("restored backup %s into %s: %d files, %s, %d WAL segments, in %.1fs",
				res.Backup.ID, target, res.Files, manifest.HumanBytes(res.Bytes), res.WALSegments, res.Elapsed.Seconds())
			if delta || len(databases) > 0 {
				summary += fmt.Sprintf("; %d files kept, %d rewritten, %d entries removed, %d placeholders; %s kept, %s fetched",
					res.FilesKept, res.FilesRewritten, res.EntriesRemoved, res.Placeholders,
					manifest.HumanBytes(res.BytesKept), manifest.HumanBytes(res.BytesFetched))
			}
			if !srv.start {
				// --start turns archiving off itself.
				if ac, err := restore.Archiving(target); err != nil {
					g.log.Warn("could not read the restored configuration", "err", err)
				} else if ac != "" {
					g.log.Warn("the restored configuration archives WAL: unless this server replaces the original, add archive_mode = off to its postgresql.auto.conf before starting it, or its WAL goes into the original's archive",
						"archive_command", ac, "file", filepath.Join(target, "postgresql.auto.conf"))
				}
				if srv.asJSON {
					return printJSON(g.stdout, restoreEntry{BackupID: res.Backup.ID, DataDir: target, Files: res.Files,
						Bytes: res.Bytes, WALSegments: res.WALSegments, Seconds: res.Elapsed.Seconds(),
						FilesKept: res.FilesKept, FilesRewritten: res.FilesRewritten, EntriesRemoved: res.EntriesRemoved,
						Placeholders: res.Placeholders, BytesKept: res.BytesKept, BytesFetched: res.BytesFetched})
				}
				fmt.Fprintln(g.stdout, summary)
				return nil
			}
			// With --start, stdout is the server's URI alone, so that
			// $(pgstow restore --start …) is all a script needs.
			g.log.Info(summary)
			return srv.run(cmd, g, o, res, probe)
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().StringVar(&backupID, "backup", "latest", "backup id to restore, or latest")
	cmd.Flags().StringVar(&label, "label", "", "restore the newest backup with this label (backup --label)")
	cmd.Flags().StringVarP(&pgdata, "pgdata", "D", "", "data directory to create (must not exist or be empty; with --delta, a stopped cluster's directory to refresh)")
	cmd.Flags().BoolVar(&delta, "delta", false, "refresh a stopped cluster of the same system in -D: keep the files that match the backup, fetch only the ranges that differ, remove what the backup lacks")
	cmd.Flags().StringVar(&deltaCheck, "delta-check", string(restore.DeltaChecksum), "with --delta, how a local file is judged unchanged: checksum (size and CRC32C, reads every file) or size-mtime (no read; unsafe against changes that keep both)")
	cmd.Flags().StringArrayVar(&databases, "database", nil, "restore only this database's data (repeatable), with template0, template1 and postgres; the others' relation files become empty placeholders to drop")
	cmd.Flags().StringArrayVar(&tablespaces, "tablespace", nil, "restore tablespace OID into DIR instead of its recorded location (OID=DIR, repeatable)")
	cmd.Flags().StringVar(&wal, "wal", "embed", "embed: WAL into pg_wal/; fetch: restore_command with pgstow wal-fetch")
	cmd.Flags().IntVar(&concurrency, "concurrency", restore.DefaultConcurrency, "chunk downloads in flight (raise it for remote stores with high latency)")
	cmd.Flags().BoolVar(&standby, "standby", false, "restore as a standby: keep (or write) standby.signal and the backup's primary_conninfo; without it a backup taken from a standby comes up as a primary")
	cmd.Flags().StringVar(&syncMethod, "sync-method", "auto", "how files are made durable before pg_control: syncfs (one call per file system; Linux 5.8+, local file systems), fsync (every file) or auto (syncfs where sound)")
	progressFlags(cmd, &progress, &progressEvery)
	g.metricsFlags(cmd)
	cmd.Flags().StringVar(&tTime, "target-time", "", "recover up to this time (with a zone, e.g. 2026-11-23T21:00:00Z); picks the newest backup that finished before it")
	cmd.Flags().StringVar(&tLSN, "target-lsn", "", "recover up to this WAL position (e.g. 0/3000028)")
	cmd.Flags().StringVar(&tXID, "target-xid", "", "recover up to this transaction id")
	cmd.Flags().StringVar(&tName, "target-name", "", "recover up to this restore point (pg_create_restore_point)")
	cmd.Flags().BoolVar(&tImmediate, "target-immediate", false, "stop as soon as the backup is consistent")
	cmd.Flags().StringVar(&tAction, "target-action", "promote", "after the target: promote, pause or shutdown")
	cmd.Flags().StringVar(&tTimeline, "target-timeline", "", "timeline to follow: latest (PostgreSQL's default), current or a number")
	srv.add(cmd)
	return cmd
}

// recoveryTarget builds the point-in-time target from the flags, or nil.
// Its errors are usage errors naming the flags.
func recoveryTarget(cmd *cobra.Command, tTime, tLSN, tXID, tName string, immediate bool, action, timeline string) (*restore.Recovery, error) {
	var targets []string
	for _, name := range []string{"target-time", "target-lsn", "target-xid", "target-name", "target-immediate"} {
		if cmd.Flags().Changed(name) {
			targets = append(targets, "--"+name)
		}
	}
	switch action {
	case "promote", "pause", "shutdown":
	default:
		return nil, usageError{fmt.Errorf("--target-action %q: use promote, pause or shutdown", action)}
	}
	if timeline != "" && timeline != "latest" && timeline != "current" && !isDigits(timeline) {
		return nil, usageError{fmt.Errorf("--target-timeline %q: use latest, current or a timeline number", timeline)}
	}
	if len(targets) == 0 {
		// Without a target these would be dropped without a word.
		for _, name := range []string{"target-action", "target-timeline"} {
			if cmd.Flags().Changed(name) {
				return nil, usageError{fmt.Errorf("--%s only applies with a recovery target (--target-time, --target-lsn, --target-xid, --target-name or --target-immediate)", name)}
			}
		}
		return nil, nil
	}
	if len(targets) > 1 {
		return nil, usageError{fmt.Errorf("%s: give one recovery target, not %d", strings.Join(targets, ", "), len(targets))}
	}
	if cmd.Flags().Changed("target-immediate") && !immediate {
		return nil, usageError{errors.New("--target-immediate=false: leave the flag out instead")}
	}
	rc := &restore.Recovery{XID: tXID, Name: tName, Immediate: immediate, Action: action, Timeline: timeline}
	switch {
	case cmd.Flags().Changed("target-time"):
		t, err := parseTargetTime(tTime)
		if err != nil {
			return nil, usageError{err}
		}
		rc.Time = t
	case cmd.Flags().Changed("target-lsn"):
		l, err := manifest.ParseLSN(tLSN)
		if err != nil || l == 0 {
			return nil, usageError{fmt.Errorf("--target-lsn %q: give a WAL position such as 0/3000028", tLSN)}
		}
		rc.LSN = l
	case cmd.Flags().Changed("target-xid"):
		if !isDigits(tXID) {
			return nil, usageError{fmt.Errorf("--target-xid %q: give a transaction id, a number such as 771", tXID)}
		}
	case cmd.Flags().Changed("target-name"):
		if tName == "" || strings.ContainsAny(tName, "\n\r\x00") {
			return nil, usageError{fmt.Errorf("--target-name %q: give the name of a restore point (pg_create_restore_point), on one line", tName)}
		}
	}
	if err := rc.Validate(); err != nil {
		return nil, usageError{err}
	}
	return rc, nil
}

// isDigits reports whether s is a non-empty string of ASCII digits.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// parseTargetTime accepts RFC 3339 and PostgreSQL's own format, but only
// with a zone: a time without one means different moments on the server,
// the machine restoring and the operator's laptop.
func parseTargetTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999 MST"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--target-time %q: give a time with a zone, e.g. 2026-11-23T21:00:00Z or '2026-11-23 22:00:00+01'", s)
}

// exitWALFatal makes PostgreSQL stop recovery: it takes any exit status up
// to 125 from restore_command as "file not found" and would end recovery
// early, which on a transient store error could lose committed data.
const exitWALFatal = 128

// walFetchError carries wal-fetch's exit status.
type walFetchError struct {
	err  error
	code int
}

func (w walFetchError) Error() string { return w.err.Error() }
func (w walFetchError) Unwrap() error { return w.err }

func newWALFetchCmd(g *globals) *cobra.Command {
	var repoURL string
	var prefetch int
	cmd := &cobra.Command{
		Use:   "wal-fetch WALFILE DEST",
		Short: "Fetch one WAL file from the repository (for restore_command)",
		Long: `Fetch one WAL file (a segment or a .history file) from the repository, verify
it and write it atomically to DEST. Meant for PostgreSQL's restore_command:

  restore_command = 'pgstow wal-fetch --repo file:///var/backups/pg %f %p'

Each call also fetches the next --prefetch segments in parallel into a spool
beside DEST (pg_wal/pgstow_prefetch), verified, so that PostgreSQL's one-at-a-time
loop is served from local disk; the spool is removed at the end of the archive.

Exit status: 0 fetched; 1 the file is not in the repository (PostgreSQL then
ends recovery or tries elsewhere); 128 any other failure (unreachable store,
corrupt file, bad arguments), which makes PostgreSQL stop rather than end
recovery early with WAL missing.`,
		Example: `  pgstow wal-fetch --repo file:///var/backups/pg 000000010000000000000003 /tmp/seg`,
		// Checked in RunE: a usage error must exit 128 here too.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return walFetchError{fmt.Errorf("wal-fetch takes WALFILE and DEST, got %d arguments", len(args)), exitWALFatal}
			}
			if err := intRange("prefetch", prefetch, 0, maxAhead); err != nil {
				return walFetchError{err, exitWALFatal}
			}
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return walFetchError{err, exitWALFatal}
			}
			defer repo.Close()
			// The spool sits beside the destination (pg_wal/), so a
			// spooled segment moves into place with a rename.
			err = restore.FetchWALPrefetch(cmd.Context(), repo, args[0], args[1], restore.Prefetch{
				Ahead: prefetch,
				Spool: filepath.Join(filepath.Dir(args[1]), "pgstow_prefetch"),
			})
			switch {
			case err == nil:
				return nil
			case errors.Is(err, providers.ErrNotExist):
				return walFetchError{fmt.Errorf("WAL file %s is not in %s", args[0], repo), 1}
			default:
				return walFetchError{err, exitWALFatal}
			}
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().IntVar(&prefetch, "prefetch", 8, "segments to fetch ahead in parallel into a spool beside DEST, 0 (off) to 256")
	return cmd
}
