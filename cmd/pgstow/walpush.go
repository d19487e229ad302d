package main

import (
	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/walarchive"
)

// maxAhead bounds wal-push --ahead and wal-fetch --prefetch: each file
// ahead is a WAL segment staged on local disk (16 MiB by default).
const maxAhead = 256

func newWALPushCmd(g *globals) *cobra.Command {
	var repoURL string
	var ahead int
	cmd := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive one WAL file into the repository (for archive_command)",
		Long: `Archive one WAL file: compress it, checksum it and store it in the repository.
Meant for PostgreSQL's archive_command (PostgreSQL runs it from the data directory):

  archive_mode = on
  archive_command = 'pgstow wal-push --repo file:///var/backups/pg %p'

Pushing a file that is already archived with the same content succeeds (PostgreSQL
retries after a crash); a different file under the same name fails and is never
overwritten. Each call also pushes up to --ahead other files that PostgreSQL has
marked ready, in parallel, so a busy server's archiver does not fall behind; its
later calls for those files find them archived.

A file is never held in memory: it is compressed into a spool file (in
--spool-dir, PGSTOW_SPOOL_DIR, or the system's temporary directory), which is
what the store uploads, and removed at once.`,
		Example: `  pgstow wal-push --repo file:///var/backups/pg pg_wal/000000010000000000000003`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := intRange("ahead", ahead, 0, maxAhead); err != nil {
				return err
			}
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()
			return walarchive.Push(cmd.Context(), repo, args[0], walarchive.Options{Ahead: ahead, Log: g.log})
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().IntVar(&ahead, "ahead", 8, "other ready WAL files to push in the same call, 0 (off) to 256")
	return cmd
}
