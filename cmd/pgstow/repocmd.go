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
	if cmd.Flags().Lookup("lock-mode") == nil {
		return nil
	}
	mode, _ := cmd.Flags().GetString("lock-mode")
	period, _ := cmd.Flags().GetString("lock-retention")
	fromEnv(cmd, g, "lock-mode", "PGSTOW_LOCK_MODE", &mode)
	fromEnv(cmd, g, "lock-retention", "PGSTOW_LOCK_RETENTION", &period)
	if mode == "" && period == "" {
		return nil
	}
	if mode == "" || period == "" {
		return usageError{errors.New("--lock-mode and --lock-retention go together (or PGSTOW_LOCK_MODE and PGSTOW_LOCK_RETENTION)")}
	}
	m := providers.LockMode(strings.ToLower(mode))
	if !m.Valid() {
		return usageError{fmt.Errorf("--lock-mode %q: want governance or compliance", mode)}
	}
	d, err := parseRetention(period)
	if err != nil {
		return usageError{fmt.Errorf("--lock-retention: %w", err)}
	}
	if err := repo.SetImmutability(m, d); err != nil {
		return usageError{err}
	}
	return nil
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
