package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/walarchive"
)

func newWALReceiveCmd(g *globals) *cobra.Command {
	var repoURLs []string
	var dsn, slot string
	var createSlot bool
	var ioTimeout time.Duration
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "wal-receive",
		Short: "Stream WAL continuously into the repository, or several (like pg_receivewal)",
		Long: `Stream WAL over the replication protocol into the repository until stopped
(SIGINT or SIGTERM), for servers where archive_command cannot be set.

A segment is reported to the server as flushed only after the store has
acknowledged it, so the replication slot keeps every byte that is not yet safe;
after a restart, wal-receive resumes from the slot. On shutdown the unfinished
segment is stored as <segment>.partial. Run it under a supervisor that restarts
it. Following a timeline switch (a promoted standby) is not supported yet: the
command stops with a clear error.

Give --repo more than once to stream into several repositories. Each segment goes
to all of them, and is reported to the server as flushed only when every one has
it, so the slot's position is the lowest any repository holds. When a repository
fails, wal-receive stops (exit 1) with a line naming it, rather than going on with
the others: the slot keeps the WAL on the server until the repository is back, and
the restart resumes from there (the others take segments they already hold again
as the same file). PGSTOW_REPO holds one URL; several are given with --repo only.

The segment being received is written to a spool file as it arrives, and each
complete segment is compressed into a second one for the upload, so memory does
not depend on wal_segment_size; the spool directory (--spool-dir,
PGSTOW_SPOOL_DIR, or the system's temporary directory) needs room for about two
segments.`,
		Example: `  pgstow wal-receive --repo file:///var/backups/pg --pg "host=db1 user=backup" --slot pgstow --create-slot
  pgstow wal-receive --slot pgstow --metrics-listen 127.0.0.1:9187   # then scrape /metrics`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromEnv(cmd, g, "pg", "PGSTOW_PG", &dsn)
			if err := checkSlotName(slot); err != nil {
				return err
			}
			if err := durationOrOff("io-timeout", ioTimeout, "2m"); err != nil {
				return err
			}
			if metricsAddr != "" {
				if err := checkListenAddr("metrics-listen", metricsAddr); err != nil {
					return err
				}
			}
			if err := checkDSN(dsn); err != nil {
				return err
			}
			// A repository that cannot be opened stops wal-receive before
			// it streams: it could not confirm anything anyway.
			repos, openErr, err := g.openRepos(cmd, repoURLs)
			if err != nil {
				return err
			}
			defer closeRepos(repos)
			if openErr != nil {
				return openErr
			}
			o := walarchive.ReceiveOptions{Slot: slot, CreateSlot: createSlot, IOTimeout: ioTimeout, Log: g.log}
			if metricsAddr != "" {
				m := &walReceiveMetrics{}
				stop, err := serveMetrics(cmd.Context(), metricsAddr, m.registry(g, slot, g.repoLabels(cmd, repoURLs)), g)
				if err != nil {
					return err
				}
				defer stop()
				o.Status = m.update
			}
			return walarchive.Receive(cmd.Context(), dsn, repos, o)
		},
	}
	reposFlag(cmd, &repoURLs)
	cmd.Flags().StringVar(&dsn, "pg", "", "server connection string or URL (env PGSTOW_PG; libpq PG* variables fill the rest)")
	cmd.Flags().StringVar(&slot, "slot", "", "physical replication slot to stream from (required)")
	cmd.Flags().BoolVar(&createSlot, "create-slot", false, "create the slot if it does not exist")
	cmd.Flags().StringVar(&metricsAddr, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187 or :9187")
	cmd.Flags().DurationVar(&ioTimeout, "io-timeout", 2*time.Minute, "fail when the server sends nothing for this long (a stalled connection); 0 turns it off")
	return cmd
}
