package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/walarchive"
)

func newVerifyCmd(g *globals) *cobra.Command {
	var repoURL string
	var wal, asJSON bool
	cmd := &cobra.Command{
		Use:   "verify --wal",
		Short: "Check the WAL archive for gaps",
		Long: `Check that the WAL archive is continuous: every segment from the oldest backup's
first one to the newest archived one, following timeline history files across
timeline switches. Every missing file is listed; the exit status is 1 if any is.

(Verifying the backups themselves, chunk by chunk, comes with the catalog work.)`,
		Example: `  pgstow verify --wal --repo file:///var/backups/pg`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !wal {
				return usageError{errors.New("verify checks the WAL archive only, for now: pass --wal")}
			}
			fromEnv(cmd, g, "repo", "PGSTOW_REPO", &repoURL)
			repo, err := openRepo(cmd.Context(), repoURL, g.log)
			if err != nil {
				return err
			}
			defer repo.Store().Close()
			c, err := walarchive.CheckContinuity(cmd.Context(), repo)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(c); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "WAL archive %s to %s (timelines %v): %d segments checked, %d missing\n", c.From, c.To, c.Timelines, c.Segments, len(c.Missing))
				for _, m := range c.Missing {
					fmt.Fprintf(g.stdout, "missing %s\n", m)
				}
			}
			if len(c.Missing) > 0 {
				return fmt.Errorf("the WAL archive in %s has %d missing file(s), first %s: point-in-time recovery cannot pass them", repo, len(c.Missing), strings.Join(c.Missing[:1], ""))
			}
			return nil
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&wal, "wal", false, "check the WAL archive's continuity")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
