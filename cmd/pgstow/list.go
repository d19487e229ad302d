package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/manifest"
)

// listEntry is the stable --json shape of one backup in `pgstow list`.
type listEntry struct {
	ID string `json:"id"`
	// Type is full or incremental; an incremental backup restores like a
	// full one, and Incremental says what it was taken from.
	Type          string           `json:"type"`
	FormatVersion string           `json:"format_version"`
	Incremental   *incrementalInfo `json:"incremental,omitempty"`
	Label         string           `json:"label"`
	Started       time.Time        `json:"started"`
	Finished      time.Time        `json:"finished"`
	PGVersion     int              `json:"pg_version"`
	Timeline      uint32           `json:"timeline"`
	StartLSN      string           `json:"start_lsn"`
	EndLSN        string           `json:"end_lsn"`
	RawBytes      int64            `json:"raw_bytes"`
	StoredBytes   int64            `json:"stored_bytes"`
	NewBytes      int64            `json:"new_bytes"`
	WALFirst      string           `json:"wal_first"`
	WALLast       string           `json:"wal_last"`
	WALSegments   int              `json:"wal_segments"`
}

// incrementalInfo is an incremental backup's record in --json.
type incrementalInfo struct {
	Parent           string    `json:"parent"`
	ParentStartLSN   string    `json:"parent_start_lsn"`
	FullStarted      time.Time `json:"full_started"`
	SentBytes        int64     `json:"sent_bytes"`
	IncrementalFiles int       `json:"incremental_files"`
	ChangedBlocks    int64     `json:"changed_blocks"`
}

func entryOf(b *manifest.Backup) listEntry {
	e := listEntry{
		ID: b.ID, Type: "full", FormatVersion: b.FormatVersion, Label: b.Label, Started: b.Timings.Started, Finished: b.Timings.Finished,
		PGVersion: b.PGVersion, Timeline: b.StartTimeline, StartLSN: b.StartLSN.String(), EndLSN: b.EndLSN.String(),
		RawBytes: b.Totals.RawBytes, StoredBytes: b.Totals.StoredBytes, NewBytes: b.Totals.NewBytes,
		WALSegments: len(b.WAL),
	}
	if len(b.WAL) > 0 {
		e.WALFirst, e.WALLast = b.WAL[0].Name, b.WAL[len(b.WAL)-1].Name
	}
	if i := b.Incremental; i != nil {
		e.Type = "incremental"
		e.Incremental = &incrementalInfo{Parent: i.Parent, ParentStartLSN: i.ParentStartLSN.String(), FullStarted: i.FullStarted,
			SentBytes: i.SentBytes, IncrementalFiles: i.IncrementalFiles, ChangedBlocks: i.ChangedBlocks}
	}
	return e
}

// shortType is the TYPE column of list.
func shortType(e listEntry) string {
	if e.Incremental != nil {
		return "incr"
	}
	return "full"
}

func newListCmd(g *globals) *cobra.Command {
	var repoURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the committed backups, oldest first",
		Long: `List the committed backups, oldest first. TYPE is full, or incr for an
incremental backup: one the server sent only the changed blocks of, which
restores, verifies and is deleted like a full one (it does not depend on the
backup it was taken from).`,
		Example: `  pgstow list --repo file:///var/backups/pg
  pgstow list --json | jq -r '.[-1].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()
			// One listing and one read per backup, a few at a time; only
			// the summaries are kept, so memory does not grow with the
			// backups' file lists.
			ids, err := repo.BackupIDs(cmd.Context())
			if err != nil {
				return err
			}
			entries := make([]listEntry, len(ids))
			if err := repo.ForEachBackup(cmd.Context(), ids, func(i int, b *manifest.Backup) error {
				entries[i] = entryOf(b)
				return nil
			}); err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, entries)
			}
			if len(entries) == 0 {
				fmt.Fprintf(g.stdout, "no backups in %s\n", repo)
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tFINISHED\tRAW\tSTORED\tNEW\tLSN RANGE\tWAL\tLABEL")
			for _, e := range entries {
				wal := fmt.Sprintf("%d", e.WALSegments)
				if e.WALSegments > 0 {
					wal = fmt.Sprintf("%s..%s (%d)", e.WALFirst[16:], e.WALLast[16:], e.WALSegments)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s-%s\t%s\t%s\n", e.ID, shortType(e), e.Finished.Format(time.RFC3339),
					manifest.HumanBytes(e.RawBytes), manifest.HumanBytes(e.StoredBytes), manifest.HumanBytes(e.NewBytes), e.StartLSN, e.EndLSN, wal, e.Label)
			}
			return tw.Flush()
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
