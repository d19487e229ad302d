package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// keyOptional names the commands that read only pgstow.json and the
// store's settings, so an encrypted repository opens without its key.
var keyOptional = map[string]bool{"pgstow repo check": true}

// newRepoCmd is the `pgstow repo` group: commands on a repository as a
// whole rather than on its backups.
func newRepoCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Check the repository's bucket settings, rotate its KMS key",
		Example: `  # Does the bucket's object lock configuration fit the repository?
  pgstow repo check --repo s3://backups/db1

  # Wrap the data key with a new KMS key and drop the old copies
  pgstow repo rotate-key --repo s3://backups/db1 --kms-key awskms://alias/pgstow-2027`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newRepoCheckCmd(g), newRotateKeyCmd(g))
	return cmd
}

// repoCheckReport is the --json shape of `pgstow repo check`.
type repoCheckReport struct {
	Repository string `json:"repository"`
	Bucket     struct {
		// LockSupport: the store can lock objects at all.
		LockSupport      bool     `json:"lock_support"`
		LockEnabled      bool     `json:"lock_enabled"`
		Versioning       bool     `json:"versioning"`
		DefaultMode      string   `json:"default_mode,omitempty"`
		DefaultRetention string   `json:"default_retention,omitempty"`
		Notes            []string `json:"notes,omitempty"`
	} `json:"bucket"`
	// Configured is false before the repository's first use.
	Configured bool   `json:"configured"`
	Immutable  bool   `json:"immutable"`
	LockMode   string `json:"lock_mode,omitempty"`
	Retention  string `json:"retention,omitempty"`
	OK         bool   `json:"ok"`
	// Problems make the check fail; each says what to do.
	Problems []string `json:"problems"`
	Warnings []string `json:"warnings"`
}

func newRepoCheckCmd(g *globals) *cobra.Command {
	var repoURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Say whether the bucket's lock settings fit the repository",
		Long: `Print the bucket's object lock configuration (lock support, versioning, a default
retention), what the repository's pgstow.json asks for (an immutable repository:
lock mode and retention), and whether they fit. Each problem is one line saying
what to set; the exit code is 1 when any is found. It needs no encryption key.

A bucket default retention is reported as a warning: it would lock the leases
(locks/) that pgstow writes and removes, and pgstow already sets a lock on every
other object it writes. See docs/immutability.md.`,
		Example: `  pgstow repo check --repo "s3://backups/pg?region=eu-west-1"
  pgstow repo check --json`,
		Args: func(c *cobra.Command, args []string) error {
			if err := cobra.NoArgs(c, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()
			rep, err := checkRepo(cmd, repo)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				printRepoCheck(g, rep)
			}
			if !rep.OK {
				return fmt.Errorf("the bucket's lock configuration does not fit %s: %d problem(s)", rep.Repository, len(rep.Problems))
			}
			return nil
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// checkRepo compares the bucket's lock configuration with pgstow.json.
func checkRepo(cmd *cobra.Command, repo *repository.Repository) (*repoCheckReport, error) {
	ctx := cmd.Context()
	rep := &repoCheckReport{Repository: repo.String(), Problems: []string{}, Warnings: []string{}}
	c, err := repo.Config(ctx)
	switch {
	case errors.Is(err, providers.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read the configuration of %s: %w", repo, err)
	default:
		rep.Configured = true
		if im := c.Immutability; im != nil {
			rep.Immutable, rep.LockMode = true, im.Mode
			if d, err := im.Period(); err == nil {
				rep.Retention = d.String()
			}
		}
	}
	l, ok := providers.AsLocker(repo.Store())
	var lc providers.LockConfig
	if ok {
		lc, err = l.LockConfig(ctx)
		switch {
		case errors.Is(err, providers.ErrLockUnsupported):
			ok = false
		case err != nil:
			return nil, err
		}
	}
	rep.Bucket.LockSupport = ok
	rep.Bucket.LockEnabled, rep.Bucket.Versioning, rep.Bucket.Notes = lc.Enabled, lc.Versioning, lc.Notes
	if lc.DefaultPeriod > 0 {
		rep.Bucket.DefaultMode, rep.Bucket.DefaultRetention = string(lc.DefaultMode), lc.DefaultPeriod.String()
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"the bucket has a default retention (%s, %s): it locks the leases under locks/ too, which pgstow removes when a command ends (they then stay until it expires); remove the default retention: pgstow locks every other object itself", lc.DefaultMode, lc.DefaultPeriod))
	}
	switch {
	case rep.Immutable && !ok:
		rep.Problems = append(rep.Problems, "the repository is immutable but this store cannot lock objects: use S3 with Object Lock, Azure with version-level immutability or GCS with object retention")
	case rep.Immutable:
		if !lc.Enabled {
			rep.Problems = append(rep.Problems, "the repository is immutable but object lock is not enabled on the bucket: enable it (S3: Object Lock on the bucket; Azure: version-level immutability on the container; GCS: object retention on the bucket)")
		}
		if lc.NeedsVersioning && !lc.Versioning {
			rep.Problems = append(rep.Problems, "the repository is immutable but the bucket keeps no versions: enable versioning")
		}
	case rep.Configured && lc.Enabled:
		rep.Warnings = append(rep.Warnings, "the bucket can lock objects but the repository was created without --lock-mode: its objects are not locked")
	case !rep.Configured && ok && lc.Enabled && (lc.Versioning || !lc.NeedsVersioning):
		// Fits a new immutable repository: nothing to say.
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printRepoCheck(g *globals, rep *repoCheckReport) {
	w := g.stdout
	fmt.Fprintf(w, "repository       %s\n", rep.Repository)
	b := rep.Bucket
	fmt.Fprintf(w, "lock support     %s\n", yesNo(b.LockSupport))
	fmt.Fprintf(w, "object lock      %s\n", yesNo(b.LockEnabled))
	fmt.Fprintf(w, "versioning       %s\n", yesNo(b.Versioning))
	if b.DefaultRetention != "" {
		fmt.Fprintf(w, "default lock     %s, %s\n", b.DefaultMode, b.DefaultRetention)
	} else {
		fmt.Fprintf(w, "default lock     none\n")
	}
	for _, n := range b.Notes {
		fmt.Fprintf(w, "note             %s\n", n)
	}
	switch {
	case !rep.Configured:
		fmt.Fprintf(w, "pgstow.json      not written yet (the first backup, wal-push or wal-receive writes it; --lock-mode makes it immutable)\n")
	case rep.Immutable:
		fmt.Fprintf(w, "pgstow.json      immutable: %s, retention %s\n", rep.LockMode, rep.Retention)
	default:
		fmt.Fprintf(w, "pgstow.json      not immutable\n")
	}
	for _, p := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if rep.OK {
		fmt.Fprintf(w, "ok\n")
	}
}

// lockFlags adds --lock-mode and --lock-retention to a command that may
// create a repository (backup, wal-push, wal-receive). They only take
// effect when the repository is created; later uses read pgstow.json and
// refuse flags that contradict it.
func lockFlags(cmd *cobra.Command) {
	cmd.Flags().String("lock-mode", "", "make a new repository immutable: governance or compliance (env PGSTOW_LOCK_MODE; docs/immutability.md)")
	cmd.Flags().String("lock-retention", "", "how long each object stays locked in a new immutable repository, e.g. 30d or 720h (env PGSTOW_LOCK_RETENTION)")
}

// applyLockFlags passes --lock-mode and --lock-retention (or their
// environment variables) on to the repository, for Bind to apply or
// check. Neither given: the repository's configuration decides.
func (g *globals) applyLockFlags(cmd *cobra.Command, repo *repository.Repository) error {
	m, d, ok, err := g.lockFlags(cmd, "lock-mode", "lock-retention", "PGSTOW_LOCK_MODE", "PGSTOW_LOCK_RETENTION")
	if err != nil || !ok {
		return err
	}
	if err := repo.SetImmutability(m, d); err != nil {
		return usageError{err}
	}
	return nil
}

// lockFlags reads a lock mode and retention flag pair (or their
// variables); ok is false when neither is set.
func (g *globals) lockFlags(cmd *cobra.Command, modeFlag, periodFlag, modeEnv, periodEnv string) (m providers.LockMode, d time.Duration, ok bool, err error) {
	if cmd.Flags().Lookup(modeFlag) == nil {
		return "", 0, false, nil
	}
	mode, _ := cmd.Flags().GetString(modeFlag)
	period, _ := cmd.Flags().GetString(periodFlag)
	fromEnv(cmd, g, modeFlag, modeEnv, &mode)
	fromEnv(cmd, g, periodFlag, periodEnv, &period)
	if mode == "" && period == "" {
		return "", 0, false, nil
	}
	if mode == "" || period == "" {
		return "", 0, false, usageError{fmt.Errorf("--%s and --%s go together (or %s and %s)", modeFlag, periodFlag, modeEnv, periodEnv)}
	}
	m = providers.LockMode(strings.ToLower(mode))
	if !m.Valid() {
		return "", 0, false, usageError{fmt.Errorf("--%s %q: want governance or compliance", modeFlag, mode)}
	}
	if d, err = parseRetention(period); err != nil {
		return "", 0, false, usageError{fmt.Errorf("--%s: %w", periodFlag, err)}
	}
	return m, d, true, nil
}

// newKeyRetention is the lock of the wrapped data-key copies a command
// makes with a new repository: the one its lock flags ask for, if any.
func (g *globals) newKeyRetention(cmd *cobra.Command, modeFlag, periodFlag, modeEnv, periodEnv string) (providers.Retention, error) {
	m, d, ok, err := g.lockFlags(cmd, modeFlag, periodFlag, modeEnv, periodEnv)
	if err != nil || !ok {
		return providers.Retention{}, err
	}
	return repository.NewObjectRetention(m, d)
}

// parseRetention reads a retention period: a Go duration (720h, 90s) or
// a whole number of days (30d), at least one second.
func parseRetention(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 36500 {
			return 0, fmt.Errorf("%q: want a number of days such as 30d, or a duration such as 720h", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q: want a number of days such as 30d, or a duration such as 720h", s)
		}
	}
	if d < time.Second {
		return 0, fmt.Errorf("%q: must be at least 1s", s)
	}
	return d, nil
}
