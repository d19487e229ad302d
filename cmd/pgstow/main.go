// Command pgstow backs PostgreSQL up into object storage over the
// replication protocol and brings it back. This package is the only place
// that reads flags and the environment; everything below it takes plain
// values.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/providers/retry"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// Exit codes scripts can rely on; a signal gives 128 + its number.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors in how pgstow was called.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// globals are the settings every command shares.
type globals struct {
	logFormat                         string
	logLevel                          string
	getenv                            func(string) string
	stdout                            io.Writer
	stderr                            io.Writer
	log                               *slog.Logger // set before any command runs
	logOut                            *switchWriter
	retryStore                        *retry.Store // the opened repository's, for retry counts
	run                               runStats     // what the command did, for metrics
	quiet                             bool
	cpuProfile, memProfile, traceFile string
	keyFile                           string
	kmsKey                            string // --kms-key (kms.go)
	allowSharedKey                    bool
	spoolDir                          string
	stopProfile                       func()
}

func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)}
	}
	if g.quiet {
		level = max(level, slog.LevelWarn)
	}
	opts := &slog.HandlerOptions{Level: level}
	g.logOut = &switchWriter{base: g.stderr}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.logOut, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.logOut, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: use text or json", g.logFormat)}
	}
}

// interrupted is the cause a signal cancels the command's context with.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string { return "interrupted by " + signalName(i.sig) }

func signalName(sig syscall.Signal) string {
	if sig == syscall.SIGINT {
		return "SIGINT"
	}
	return "SIGTERM"
}

// onSignals cancels ctx, with an interrupted cause, at the first SIGINT or
// SIGTERM, so every command unwinds through its own cleanup (uploads
// aborted, the temporary slot dropped with its connection, leases
// released). A second signal exits at once.
func onSignals(ctx context.Context, stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			sig := s.(syscall.Signal)
			cancel(interrupted{sig})
			select {
			case <-ch:
				fmt.Fprintf(stderr, "pgstow: second signal, exiting without cleaning up\n")
				os.Exit(128 + int(sig))
			case <-done:
			}
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := onSignals(context.Background(), stderr)
	defer stop()
	g := &globals{getenv: getenv, stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "pgstow: %s\n", oneLine(err.Error()))
	// A command stopped by a signal exits as shells expect: 128 + signal
	// (130 for SIGINT, 143 for SIGTERM), whatever error it unwound with.
	var in interrupted
	if errors.As(context.Cause(ctx), &in) {
		return 128 + int(in.sig)
	}
	var wf walFetchError
	if errors.As(err, &wf) {
		return wf.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "pgstow",
		Short: "Back PostgreSQL up into object storage and bring it back",
		Long: `pgstow backs PostgreSQL up over the replication protocol (no agent or SSH on the
database host) into a repository of compressed, checksummed, deduplicated chunks,
and records exactly which WAL a restore needs.

Repositories are named by URL (--repo or PGSTOW_REPO), e.g. file:///var/backups/pgstow.
The server is named by a libpq connection string or URL (--pg or PGSTOW_PG); what
it leaves out comes from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE and friends.

Exit codes: 0 success; 1 failure; 2 usage error (a flag or argument is wrong,
nothing was done); 130 and 143 stopped by SIGINT and SIGTERM. wal-fetch exits 1
only when the WAL file is not in the repository, and 128 on any other failure,
so that PostgreSQL stops recovery rather than end it early.

Shell completion: pgstow completion bash|zsh|fish|powershell --help.
Documentation: docs/ in the source tree, starting with docs/quickstart.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print only warnings, errors and results: no progress, no info logs")
	root.PersistentFlags().StringVar(&g.keyFile, "encryption-key-file", "", "file holding the repository's encryption key (env PGSTOW_ENCRYPTION_KEY_FILE); see docs/encryption.md")
	root.PersistentFlags().StringVar(&g.kmsKey, "kms-key", "", "KMS key that wraps the repository's data key: awskms://…, gcpkms://… or azurekv://… (env PGSTOW_KMS_KEY); see docs/encryption.md")
	root.PersistentFlags().BoolVar(&g.allowSharedKey, "allow-shared-key-file", false, "accept an encryption key file that other users may read or write (refused by default, as ssh does)")
	root.PersistentFlags().StringVar(&g.spoolDir, "spool-dir", "", "directory WAL segments and large manifests are staged in on their way to or from the repository, default the system's temporary directory (env PGSTOW_SPOOL_DIR); see docs/tuning.md")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		var err error
		if g.log, err = g.logger(); err != nil {
			return err
		}
		g.stopProfile, err = startProfiles(g.cpuProfile, g.memProfile, g.traceFile)
		return err
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if g.stopProfile != nil {
			g.stopProfile()
		}
	}
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile to this file (for performance work)")
	root.PersistentFlags().StringVar(&g.memProfile, "memprofile", "", "write an allocation profile to this file at exit")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentFlags().StringVar(&g.traceFile, "trace", "", "write an execution trace to this file (go tool trace: where goroutines wait)")
	_ = root.PersistentFlags().MarkHidden("memprofile")
	_ = root.PersistentFlags().MarkHidden("trace")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newBackupCmd(g), newListCmd(g), newRestoreCmd(g), newWALPushCmd(g), newWALReceiveCmd(g), newWALFetchCmd(g), newVerifyCmd(g), newShowCmd(g), newDeleteCmd(g), newGCCmd(g), newDiscardCmd(g), newCopyCmd(g), newVersionCmd(g), newRepoCmd(g))
	for _, c := range root.Commands() {
		// A wrong number of arguments is a usage error too (exit 2).
		if check := c.Args; check != nil {
			c.Args = func(c *cobra.Command, args []string) error {
				if err := check(c, args); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
	}
	return root
}

// retries counts the storage requests retried so far.
func (g *globals) retries() int64 {
	if g.retryStore == nil {
		return 0
	}
	return g.retryStore.Retries()
}

func toolVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newVersionCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print pgstow's version",
		Example: `  pgstow version
  pgstow version --json | jq -r .version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return printJSON(g.stdout, map[string]string{"version": toolVersion(), "go": runtime.Version(), "lz4": chunker.Encoder()})
			}
			fmt.Fprintf(g.stdout, "pgstow %s (%s, lz4: %s)\n", toolVersion(), runtime.Version(), chunker.Encoder())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// oneLine folds a multi-line error (some libraries report one line per
// attempt) into one line, dropping repeated lines, so scripts and log
// collectors see one record per failure.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || seen[l] {
			continue
		}
		seen[l] = true
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

// startProfiles starts the profiles asked for and returns what stops them.
func startProfiles(cpu, mem, exec string) (func(), error) {
	var stops []func()
	stopAll := func() {
		for _, s := range stops {
			s()
		}
	}
	// The recorders that stream the whole run into a file.
	for _, r := range []struct {
		flag, path, what string
		start            func(io.Writer) error
		stop             func()
	}{
		{"--trace", exec, "execution trace", trace.Start, trace.Stop},
		{"--cpuprofile", cpu, "CPU profile", pprof.StartCPUProfile, pprof.StopCPUProfile},
	} {
		if r.path == "" {
			continue
		}
		f, err := os.Create(r.path)
		if err != nil {
			stopAll()
			return nil, usageError{fmt.Errorf("%s: %w", r.flag, err)}
		}
		if err := r.start(f); err != nil {
			f.Close()
			stopAll()
			return nil, fmt.Errorf("start %s: %w", r.what, err)
		}
		stops = append(stops, func() { r.stop(); f.Close() })
	}
	if mem != "" {
		runtime.MemProfileRate = 64 << 10
		stops = append(stops, func() {
			if f, err := os.Create(mem); err == nil {
				// The profile reports allocations up to the last
				// collection: one now makes it complete.
				runtime.GC()
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		})
	}
	return stopAll, nil
}
