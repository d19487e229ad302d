package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/uploader"
)

func newBackupCmd(g *globals) *cobra.Command {
	var (
		repoURL, dsn, label, wal, checkpoint, chunkSize, maxRate, compression string
		concurrency                                                           int
		walTimeout, ioTimeout, progressEvery                                  time.Duration
		progress                                                              string
		noVerifyChecksums, asJSON                                             bool
		backupType                                                            string
		fullEvery                                                             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take a base backup into the repository",
		Long: `Take a base backup over the replication protocol and commit it to the repository.

The server needs a role with the REPLICATION attribute, a pg_hba.conf line for
replication connections, and max_wal_senders of at least 2 (one for the backup,
one for the WAL stream). With --wal=stream (the default) a temporary replication
slot keeps the needed WAL on the server until pgstow has stored it; with
--wal=none another archiver (archive_command) must store it into the same
repository, and pgstow only checks that it arrived.

From a hot standby the last WAL segment is stored up to the backup's end (a
standby cannot complete it), so the backup commits at once.

On PostgreSQL 17 and later with summarize_wal = on, --type auto (the default)
takes an incremental backup: the server sends only the blocks changed since the
newest backup of the same server, and pgstow stores a backup that describes
every file whole, taking unchanged blocks from chunks already stored. It
restores, verifies and is deleted like a full backup: it does not depend on the
backup it was taken from. A full backup is taken instead, with one log line
saying why, when the server is older than 17 or summarize_wal is off, when no
earlier backup records block checksums, when the full backup the chain began
with is older than --full-every, when restoring would read over 1.5x the bytes
the backup describes, or when the server refuses. --type incremental fails
(exit 2) where auto would take a full backup; --type full always takes one.

The backup becomes visible (pgstow list) only when everything is stored. A
failed backup removes the chunks it stored that nothing else uses; its error
says what it removed, or what it left and why.`,
		Example: `  pgstow backup --repo file:///var/backups/pg --pg "host=db1 user=backup"
  PGSTOW_REPO=file:///var/backups/pg PGHOST=db1 PGUSER=backup pgstow backup --checkpoint fast
  pgstow backup --quiet --metrics-push http://pushgateway:9091   # from cron: results and errors only
  pgstow backup --json | jq -r .id`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromEnv(cmd, g, "repo", "PGSTOW_REPO", &repoURL)
			fromEnv(cmd, g, "pg", "PGSTOW_PG", &dsn)
			log := g.log
			o := backup.Options{
				DSN:                      dsn,
				Label:                    label,
				WAL:                      backup.WALMode(wal),
				WALTimeout:               walTimeout,
				IOTimeout:                ioTimeout,
				Compression:              compression,
				SkipChecksumVerification: noVerifyChecksums,
				ToolVersion:              toolVersion(),
				Log:                      log,
				Uploader:                 uploader.Config{Concurrency: concurrency},
				Type:                     backup.Type(backupType),
				FullEvery:                fullEvery,
			}
			switch o.Type {
			case backup.TypeAuto, backup.TypeFull, backup.TypeIncremental:
			default:
				return usageError{fmt.Errorf("--type %q: use auto, full or incremental", backupType)}
			}
			if err := positiveDuration("full-every", fullEvery, "168h"); err != nil {
				return err
			}
			switch checkpoint {
			case "fast":
				o.FastCheckpoint = true
			case "spread":
			default:
				return usageError{fmt.Errorf("--checkpoint %q: use fast or spread", checkpoint)}
			}
			if o.WAL != backup.WALStream && o.WAL != backup.WALNone {
				return usageError{fmt.Errorf("--wal %q: use stream or none", wal)}
			}
			cs, err := manifest.ParseSize(chunkSize)
			if err != nil || cs < 1<<20 || cs > 1<<30 {
				return usageError{fmt.Errorf("--chunk-size %q: give a size from 1MB to 1GB, e.g. 16MB", chunkSize)}
			}
			o.Uploader.ChunkSize = int(cs)
			if concurrency < 1 || concurrency > 256 {
				return usageError{fmt.Errorf("--concurrency %d: give 1 to 256", concurrency)}
			}
			if maxRate != "" {
				// PostgreSQL takes MAX_RATE in kB/s, from 32 to 1048576.
				r, err := manifest.ParseSize(maxRate)
				if err != nil || r < 32<<10 || r > 1<<30 {
					return usageError{fmt.Errorf("--max-rate %q: give a rate per second from 32kB to 1GB, e.g. 20MB, or leave it out for no limit", maxRate)}
				}
				o.MaxRate = uint64(r)
			}
			switch compression {
			case "none", "lz4", "zstd", "gzip":
			default:
				return usageError{fmt.Errorf("--server-compression %q: use none, lz4, zstd or gzip", compression)}
			}
			if err := positiveDuration("wal-timeout", walTimeout, "5m"); err != nil {
				return err
			}
			if err := durationOrOff("io-timeout", ioTimeout, "2m"); err != nil {
				return err
			}
			if err := checkLabel(label); err != nil {
				return err
			}
			if err := checkDSN(dsn); err != nil {
				return err
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
			view := g.newProgressView(mode, "backup", progressEvery)
			if mode != progressOff {
				o.Progress = func(p backup.Progress) { view.update(backupSnapshot(p)) }
				// Bars want a total from the start. Log lines do without
				// one on a repository's first backup of the server (later
				// ones take the newest backup's size), which spares the
				// server a stat of every file before it sends a byte.
				o.EstimateSize = mode == progressBars
			}
			budget := o.Uploader.MemoryBudget()
			setMemoryPolicy(budget)
			log.Debug("memory budget", "pipeline_bytes", budget)
			b, err := backup.Run(cmd.Context(), repo, o)
			view.finish(err == nil)
			if errors.Is(err, backup.ErrIncrementalUnavailable) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			t := b.Totals
			g.run = runStats{rawBytes: t.RawBytes, storedBytes: t.StoredBytes, newBytes: t.NewBytes, chunks: int64(t.Chunks), newChunks: int64(t.NewChunks)}
			if asJSON {
				return printJSON(g.stdout, entryOf(b))
			}
			kind := "full"
			if i := b.Incremental; i != nil {
				kind = fmt.Sprintf("incremental from %s, the server sent %s", i.Parent, manifest.HumanBytes(i.SentBytes))
			}
			fmt.Fprintf(g.stdout, "backup %s committed (%s): %s raw, %s stored (%s new), WAL %s to %s (%d segments)\n",
				b.ID, kind, manifest.HumanBytes(b.Totals.RawBytes), manifest.HumanBytes(b.Totals.StoredBytes), manifest.HumanBytes(b.Totals.NewBytes),
				b.StartLSN, b.EndLSN, len(b.WAL))
			return nil
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().StringVar(&dsn, "pg", "", "server connection string or URL (env PGSTOW_PG; libpq PG* variables fill the rest)")
	cmd.Flags().StringVar(&label, "label", "pgstow", "backup label")
	cmd.Flags().StringVar(&backupType, "type", "auto", "auto (incremental when the server and the repository allow it, else full, saying why), full or incremental (fail if it cannot be)")
	cmd.Flags().DurationVar(&fullEvery, "full-every", backup.DefaultFullEvery, "take a full backup when the full one the incrementals descend from started this long ago")
	cmd.Flags().StringVar(&wal, "wal", "stream", "how the needed WAL reaches the repository: stream or none")
	cmd.Flags().DurationVar(&walTimeout, "wal-timeout", 5*time.Minute, "longest wait for the last WAL segment after the base backup ends (above 0)")
	cmd.Flags().DurationVar(&ioTimeout, "io-timeout", 2*time.Minute, "fail when a streaming connection to the server brings nothing for this long (a stalled network path); 0 turns it off")
	cmd.Flags().StringVar(&checkpoint, "checkpoint", "spread", "checkpoint at start: spread (gentle on the server) or fast (starts at once)")
	cmd.Flags().StringVar(&chunkSize, "chunk-size", "8MB", "target chunk size (memory: at most cores + 1 + --concurrency buffers of this size)")
	cmd.Flags().IntVar(&concurrency, "concurrency", uploader.DefaultConcurrency, "uploads in flight (each holds one compressed chunk buffer)")
	cmd.Flags().StringVar(&maxRate, "max-rate", "", "server-side rate limit per second, e.g. 20MB (32kB to 1GB; default no limit)")
	cmd.Flags().StringVar(&compression, "server-compression", "none", "compress on the server before sending: none, lz4, zstd or gzip")
	progressFlags(cmd, &progress, &progressEvery)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the committed backup as JSON (the shape of one list --json entry)")
	g.metricsFlags(cmd)
	cmd.Flags().BoolVar(&noVerifyChecksums, "no-verify-checksums", false, "do not let the server verify data-page checksums while sending")
	return cmd
}

// memoryLimitSlack is the room the Go heap gets above a pipeline's pooled
// buffers before the collector is pressed (debug.SetMemoryLimit): enough
// for the manifest, the providers' own allocations and some garbage.
const memoryLimitSlack = 64 << 20

// gcPercent replaces Go's default GOGC of 100 for backup and restore. Their
// heap is mostly the pipeline's pooled buffers, live for the whole run and
// free of pointers, so a collection costs little (the collector does not
// scan them) while the default would let garbage grow to the pools' size
// before collecting: tens of MB of peak memory for nothing. Measured
// (issue 13): the many-files restore's peak RSS went from 146–167 MiB at
// 100 to 125–128 MiB at 25; the many-files backup's anonymous memory while
// streaming from 88 MiB at 25 to 77 MiB at 10, where a backup of the
// 2.2 GB dataset runs 21 collections.
const gcPercent = 10

// setMemoryPolicy sets the collector for a pipeline of budget bytes of
// pooled buffers: a backstop limit with room above the pools (one at the
// budget itself would make the collector run without end against buffers
// that are all live) and gcPercent, unless the user set GOGC.
func setMemoryPolicy(budget int64) {
	debug.SetMemoryLimit(budget + memoryLimitSlack)
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
