package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/localserver"
	"github.com/pgstow/pgstow/restore"
)

// serverFlags are restore's --start options: a throw-away server on the
// restored directory, for CI jobs and quick looks.
type serverFlags struct {
	start, keepHBA, asJSON bool
	port                   int
	user, dbname, runAs    string
	binDir                 string
	timeout                time.Duration
}

func (f *serverFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.start, "start", false, "start a throw-away server on the restored directory and print its URI (see docs/ci-seeding.md)")
	cmd.Flags().IntVar(&f.port, "port", 0, "with --start: port on 127.0.0.1 (default: a free one)")
	cmd.Flags().StringVar(&f.user, "user", "postgres", "with --start: role of the backed-up cluster to put in the URI")
	cmd.Flags().StringVar(&f.dbname, "dbname", "postgres", "with --start: database to put in the URI")
	cmd.Flags().StringVar(&f.runAs, "run-as", "postgres", "with --start, when run as root: OS user the server runs as")
	cmd.Flags().StringVar(&f.binDir, "pg-bin", "", "with --start: directory of pg_ctl and postgres of the backup's major version (default: searched)")
	cmd.Flags().BoolVar(&f.keepHBA, "keep-hba", false, "with --start: keep the backup's pg_hba.conf instead of trusting local connections")
	cmd.Flags().DurationVar(&f.timeout, "start-timeout", 30*time.Minute, "with --start: longest wait for the server to finish recovery and accept connections")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the result as JSON (with --start: the server's URI, port, directories and log file)")
}

// check refuses server options without --start, and a recovery target
// that would shut the server down.
func (f *serverFlags) check(cmd *cobra.Command, o restore.Options) error {
	if !f.start {
		for _, name := range []string{"port", "user", "dbname", "run-as", "pg-bin", "keep-hba", "start-timeout"} {
			if cmd.Flags().Changed(name) {
				return usageError{fmt.Errorf("--%s only applies with --start", name)}
			}
		}
		return nil
	}
	if f.port < 0 || f.port > 65535 {
		return usageError{fmt.Errorf("--port %d: give 1 to 65535, or leave it out for a free one", f.port)}
	}
	if o.Recovery != nil && o.Recovery.Action == "shutdown" {
		return usageError{errors.New("--start with --target-action shutdown: the server would stop at the target; use promote or pause")}
	}
	if err := positiveDuration("start-timeout", f.timeout, "30m"); err != nil {
		return err
	}
	if f.user == "" {
		return usageError{errors.New("--user: give the role to put in the URI, e.g. postgres")}
	}
	if f.dbname == "" {
		return usageError{errors.New("--dbname: give the database to put in the URI, e.g. postgres")}
	}
	if err := checkOSUser("run-as", f.runAs); err != nil {
		return err
	}
	if f.binDir != "" {
		if err := checkBinDir("pg-bin", f.binDir); err != nil {
			return err
		}
	}
	return nil
}

// run starts the server on the restored directory and prints its URI.
// probe is a shell command that reads the repository as restore_command
// will.
func (f *serverFlags) run(cmd *cobra.Command, g *globals, o restore.Options, res *restore.Result, probe string) error {
	so := localserver.Options{
		DataDir: o.Target,
		Major:   res.Backup.PGVersion / 10000,
		BinDir:  f.binDir,
		Port:    f.port,
		RunAs:   f.runAs,
		User:    f.user,
		DBName:  f.dbname,
		KeepHBA: f.keepHBA,
		Timeout: f.timeout,
		Log:     g.log,
	}
	so.Tablespaces = res.TablespaceDirs
	so.WaitPromotion, so.WaitPause = o.RecoveryEnd()
	if o.WAL == restore.WALFetch {
		// restore_command runs as the server's user: make sure it can
		// read what it will need before the server fails on it.
		so.Probe = []string{"/bin/sh", "-c", probe + " >/dev/null"}
	}
	s, err := localserver.Start(cmd.Context(), so)
	if err != nil {
		return fmt.Errorf("%w; the restored directory %s stays, remove it with: pgstow discard -D %s", err, o.Target, restore.ShellQuote(o.Target))
	}
	if f.asJSON {
		return printJSON(g.stdout, s)
	}
	fmt.Fprintln(g.stdout, s.URI)
	return nil
}

func newDiscardCmd(g *globals) *cobra.Command {
	var pgdata string
	var keep bool
	cmd := &cobra.Command{
		Use:   "discard",
		Short: "Stop a server started by restore --start and delete its directory",
		Long: `Stop the throw-away server 'pgstow restore --start' started on a directory and
delete the directory (and the tablespace directories the restore created).

Only directories marked by restore --start are touched: anything else, such as a
real data directory, is refused. A directory that does not exist is nothing to
do (exit 0), so the command fits an always-run cleanup step.`,
		Example: `  pgstow discard -D /var/tmp/seed
  pgstow discard -D /var/tmp/seed --keep   # stop only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pgdata == "" {
				return usageError{errors.New("--pgdata (-D) is required: the directory restore --start used")}
			}
			dir, err := filepath.Abs(pgdata)
			if err != nil {
				return usageError{fmt.Errorf("--pgdata %q: %w", pgdata, err)}
			}
			removed, err := localserver.Discard(cmd.Context(), dir, keep, g.log)
			if err != nil {
				return err
			}
			switch {
			case removed:
				fmt.Fprintf(g.stdout, "discarded %s\n", dir)
			case keep:
				fmt.Fprintf(g.stdout, "stopped the server on %s; the directory stays\n", dir)
			default:
				fmt.Fprintf(g.stdout, "%s does not exist: nothing to discard\n", dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&pgdata, "pgdata", "D", "", "the directory restore --start used")
	cmd.Flags().BoolVar(&keep, "keep", false, "stop the server but keep the directory")
	return cmd
}
