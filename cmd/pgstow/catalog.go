package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// printJSON writes v indented, the one JSON style of every --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// showEntry is the stable --json shape of `pgstow show`.
type showEntry struct {
	listEntry
	ToolVersion      string                `json:"tool_version"`
	SystemID         string                `json:"system_id"`
	EndTimeline      uint32                `json:"end_timeline"`
	DurationSeconds  float64               `json:"duration_seconds"`
	DedupBytes       int64                 `json:"deduplicated_bytes"` // stored bytes shared with earlier backups
	Chunks           int                   `json:"chunks"`
	NewChunks        int                   `json:"new_chunks"`
	Files            int                   `json:"files"` // regular files, as restore and backup_manifest count them
	Directories      int                   `json:"directories"`
	Symlinks         int                   `json:"symlinks"`
	WALBytes         int64                 `json:"wal_bytes"`
	WALSegmentSize   uint64                `json:"wal_segment_size"`
	Tablespaces      []manifest.Tablespace `json:"tablespaces"`
	Archives         []archiveEntry        `json:"archives"`
	PGManifestSHA256 string                `json:"pg_manifest_sha256"`
}

type archiveEntry struct {
	Name       string `json:"name"`
	Tablespace uint32 `json:"tablespace_oid"`
	RawBytes   int64  `json:"raw_bytes"`
	// StoredBytes and Chunks count each chunk the archive uses once;
	// References counts the archive's chunk references, more than Chunks
	// when an incremental backup's archive names a chunk several times
	// (slices of it).
	StoredBytes int64 `json:"stored_bytes"`
	Chunks      int   `json:"chunks"`
	References  int   `json:"references"`
}

func showOf(b *manifest.Backup) showEntry {
	e := showEntry{
		listEntry: entryOf(b), ToolVersion: b.ToolVersion, SystemID: b.SystemID, EndTimeline: b.EndTimeline,
		DurationSeconds: b.Timings.Finished.Sub(b.Timings.Started).Seconds(),
		DedupBytes:      b.Totals.StoredBytes - b.Totals.NewBytes,
		Chunks:          b.Totals.Chunks, NewChunks: b.Totals.NewChunks,
		WALBytes: b.Totals.WALBytes, WALSegmentSize: b.WALSegmentSize,
		Tablespaces: b.Tablespaces, PGManifestSHA256: b.PGManifestSHA256,
	}
	// Totals.Files counts every archive member, directories and symlinks
	// included: a DBA comparing it with restore's count or with
	// backup_manifest would see files missing.
	for _, f := range b.Files {
		switch f.Type {
		case manifest.TypeFile:
			e.Files++
		case manifest.TypeDir:
			e.Directories++
		case manifest.TypeSymlink:
			e.Symlinks++
		}
	}
	if e.Tablespaces == nil {
		e.Tablespaces = []manifest.Tablespace{}
	}
	for _, a := range b.Archives {
		ae := archiveEntry{Name: a.Name, Tablespace: a.TablespaceOID, RawBytes: a.RawSize, References: len(a.Chunks)}
		seen := make(map[string]bool, len(a.Chunks))
		for _, c := range a.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				ae.StoredBytes += c.StoredSize
				ae.Chunks++
			}
		}
		e.Archives = append(e.Archives, ae)
	}
	return e
}

// pgVersion spells server_version_num as PostgreSQL does (15.8).
func pgVersion(num int) string {
	return fmt.Sprintf("%d.%d", num/10000, num%10000)
}

func newShowCmd(g *globals) *cobra.Command {
	var repoURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID|latest",
		Short: "Show everything about one backup",
		Long: `Show one backup: when it ran, its sizes (raw, stored, and how much of what it
stores it shares with earlier backups), its LSN range and timeline, the WAL a
restore needs, its tablespaces and archives, and the PostgreSQL and pgstow
versions that made it.`,
		Example: `  pgstow show latest --repo file:///var/backups/pg
  pgstow show 20261123T204651Z --json | jq .wal_first`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()
			b, err := repo.Backup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			e := showOf(b)
			if asJSON {
				return printJSON(g.stdout, e)
			}
			return printShow(g.stdout, e)
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printShow prints one backup as show does without --json.
func printShow(w io.Writer, e showEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("backup", "%s", e.ID)
	if i := e.Incremental; i != nil {
		row("type", "incremental from %s (the server sent %s of the %s it describes; %d files as changed blocks, %d blocks)",
			i.Parent, manifest.HumanBytes(i.SentBytes), manifest.HumanBytes(e.RawBytes), i.IncrementalFiles, i.ChangedBlocks)
		row("full line since", "%s", i.FullStarted.Format(time.RFC3339))
	} else {
		row("type", "full")
	}
	if e.Label != "" {
		row("label", "%s", e.Label)
	}
	row("started", "%s", e.Started.Format(time.RFC3339))
	row("finished", "%s (%s)", e.Finished.Format(time.RFC3339), time.Duration(e.DurationSeconds*float64(time.Second)).Round(time.Second))
	row("PostgreSQL", "%s (system identifier %s)", pgVersion(e.PGVersion), e.SystemID)
	row("timeline", "%d", e.Timeline)
	row("LSN range", "%s - %s", e.StartLSN, e.EndLSN)
	if e.WALSegments > 0 {
		row("WAL needed", "%s .. %s (%d segment(s) of %s, %s stored)", e.WALFirst, e.WALLast, e.WALSegments, manifest.HumanBytes(int64(e.WALSegmentSize)), manifest.HumanBytes(e.WALBytes))
	} else {
		row("WAL needed", "none recorded")
	}
	ratio := 0.0
	if e.StoredBytes > 0 {
		ratio = float64(e.RawBytes) / float64(e.StoredBytes)
	}
	row("size", "%s raw, %s stored (%.1fx)", manifest.HumanBytes(e.RawBytes), manifest.HumanBytes(e.StoredBytes), ratio)
	row("uploaded", "%s new, %s shared with earlier backups", manifest.HumanBytes(e.NewBytes), manifest.HumanBytes(e.DedupBytes))
	row("chunks", "%d (%d new)", e.Chunks, e.NewChunks)
	row("files", "%d regular files, %d directories, %d symlinks", e.Files, e.Directories, e.Symlinks)
	for _, a := range e.Archives {
		refs := ""
		if a.References != a.Chunks {
			refs = fmt.Sprintf(" (%d references: slices of them)", a.References)
		}
		row("archive "+a.Name, "%s raw, %s stored, %d chunks%s", manifest.HumanBytes(a.RawBytes), manifest.HumanBytes(a.StoredBytes), a.Chunks, refs)
	}
	for _, ts := range e.Tablespaces {
		row(fmt.Sprintf("tablespace %d", ts.OID), "%s", ts.Location)
	}
	row("made by", "pgstow %s", e.ToolVersion)
	return tw.Flush()
}

// pruneFlags are the flags delete and gc share.
type pruneFlags struct {
	repoURL  string
	dryRun   bool
	asJSON   bool
	lockWait time.Duration
}

func (f *pruneFlags) add(cmd *cobra.Command) {
	repoFlag(cmd, &f.repoURL)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print exactly what would be removed, and remove nothing")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&f.lockWait, "lock-wait", 5*time.Minute, "how long to wait for another delete or gc to finish")
}

// run checks --lock-wait, opens the repository and prints the report of
// prune, which it calls with o completed by the flags.
func (f *pruneFlags) run(g *globals, cmd *cobra.Command, o catalog.PruneOptions, prune func(context.Context, *repository.Repository, catalog.PruneOptions) (*catalog.Report, error)) error {
	if err := nonNegativeDuration("lock-wait", f.lockWait, "5m"); err != nil {
		return err
	}
	repo, err := g.repoFromFlag(cmd, f.repoURL)
	if err != nil {
		return err
	}
	defer repo.Close()
	o.DryRun, o.LockWait, o.Log = f.dryRun, f.lockWait, g.log
	rep, err := prune(cmd.Context(), repo, o)
	if err != nil {
		return err
	}
	return printReport(g, rep, f.asJSON)
}

func newDeleteCmd(g *globals) *cobra.Command {
	var f pruneFlags
	var retainLast int
	var retainWithin, keepWAL string
	cmd := &cobra.Command{
		Use:   "delete ID... | --retain-last N | --retain-within DURATION",
		Short: "Delete backups, by id or by retention policy",
		Long: `Delete the named backups, or every backup a retention policy does not keep.

--retain-last N keeps the newest N backups; --retain-within DURATION keeps those
that finished within it (7d, 2w, 36h); both together keep the union. A policy
always keeps the newest backup. --keep-wal-within DURATION keeps point-in-time
recovery possible to any moment within it: the newest backup that finished
before that window is kept as its base, with the WAL from it on.

Each backup's manifest goes first, so it disappears at once; then its other
objects, the chunks no kept backup references, and the WAL segments older than
the oldest kept backup's first one. Backups running meanwhile may share those
chunks, so while any runs they are left for a later "pgstow gc". A backup that a
running restore reads is not deleted ("defer"): run the delete again after it.
In an immutable repository (docs/immutability.md) objects still locked stay and
are listed with their lock's end, a backup whose manifest is locked stays whole
("locked"), and the delete still succeeds; run it again after the locks end.
Only one delete or gc runs at a time (--lock-wait).`,
		Example: `  pgstow delete --retain-last 7 --dry-run
  pgstow delete --retain-within 14d --keep-wal-within 7d
  pgstow delete 20261101T010000Z 20261102T010000Z`,
		RunE: func(cmd *cobra.Command, args []string) error {
			r := catalog.Retention{IDs: args, RetainLast: retainLast}
			var err error
			if retainWithin != "" {
				if r.RetainWithin, err = catalog.ParseDuration(retainWithin); err != nil {
					return usageError{fmt.Errorf("--retain-within: %w", err)}
				}
			}
			if keepWAL != "" {
				if r.KeepWALWithin, err = catalog.ParseDuration(keepWAL); err != nil {
					return usageError{fmt.Errorf("--keep-wal-within: %w", err)}
				}
			}
			if cmd.Flags().Changed("retain-last") && retainLast < 1 {
				return usageError{fmt.Errorf("--retain-last %d: must be 1 or more", retainLast)}
			}
			if err := r.Validate(); err != nil {
				return usageError{err}
			}
			return f.run(g, cmd, catalog.PruneOptions{}, func(ctx context.Context, repo *repository.Repository, o catalog.PruneOptions) (*catalog.Report, error) {
				return catalog.Delete(ctx, repo, r, o)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().IntVar(&retainLast, "retain-last", 0, "keep the newest N backups")
	cmd.Flags().StringVar(&retainWithin, "retain-within", "", "keep the backups that finished within DURATION (e.g. 14d)")
	cmd.Flags().StringVar(&keepWAL, "keep-wal-within", "", "keep point-in-time recovery possible within DURATION (e.g. 7d)")
	g.metricsFlags(cmd)
	return cmd
}

func newGCCmd(g *globals) *cobra.Command {
	var f pruneFlags
	var grace string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove what no backup can use",
		Long: `Remove chunks no committed backup references, the objects of backups that never
committed (killed or failed runs), WAL segments older than the oldest backup's
first one, and the expired leases of dead processes.

Nothing younger than --grace is removed, and while a backup is running only
expired leases are: a running backup may commit a manifest that references
chunks no committed backup does yet (see docs/catalog.md). Objects still locked
in an immutable repository stay and are listed with their lock's end. Only one
delete or gc runs at a time (--lock-wait).`,
		Example: `  pgstow gc --dry-run
  pgstow gc --grace 24h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := catalog.ParseDuration(grace)
			if err != nil {
				return usageError{fmt.Errorf("--grace: %w", err)}
			}
			return f.run(g, cmd, catalog.PruneOptions{Grace: d}, catalog.GC)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&grace, "grace", "1h", "spare unreferenced objects younger than this (by the store's clock)")
	g.metricsFlags(cmd)
	return cmd
}

// printReport prints what delete or gc did or would do.
func printReport(g *globals, rep *catalog.Report, asJSON bool) error {
	if asJSON {
		return printJSON(g.stdout, rep)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, b := range rep.Backups {
		action := "delete"
		if rep.DryRun {
			action = "would delete"
		}
		switch {
		case b.Keep:
			action = "keep"
		case b.Locked:
			action = "locked"
		case b.Deferred && rep.DryRun:
			action = "would defer"
		case b.Deferred:
			action = "defer"
		}
		fmt.Fprintf(g.stdout, "%-12s %s  finished %s  %s\n", action, b.ID, b.Finished.Format(time.RFC3339), b.Reason)
	}
	var parts []string
	for _, s := range []struct {
		name string
		o    catalog.Objects
	}{{"backup objects", rep.Manifests}, {"chunks", rep.Chunks}, {"WAL files", rep.WAL}, {"leftover objects", rep.Leftovers}, {"expired leases", rep.Locks}} {
		if s.o.Count > 0 {
			parts = append(parts, fmt.Sprintf("%d %s (%s)", s.o.Count, s.name, manifest.HumanBytes(s.o.Bytes)))
		}
	}
	if len(parts) == 0 {
		parts = []string{"nothing"}
	}
	fmt.Fprintf(g.stdout, "%s %s\n", verb, strings.Join(parts, ", "))
	if rep.WALKeptFrom != "" {
		fmt.Fprintf(g.stdout, "WAL kept from %s\n", rep.WALKeptFrom)
	}
	if rep.Young.Count > 0 {
		fmt.Fprintf(g.stdout, "spared %d unreferenced object(s) (%s) younger than the grace period\n", rep.Young.Count, manifest.HumanBytes(rep.Young.Bytes))
	}
	if rep.Deferred.Count > 0 {
		fmt.Fprintf(g.stdout, "deferred %d object(s) (%s) because backups are running (%s); run pgstow gc after they finish\n",
			rep.Deferred.Count, manifest.HumanBytes(rep.Deferred.Bytes), strings.Join(rep.RunningBackup, "; "))
	}
	printLocked(g.stdout, rep)
	var deferred []string
	for _, b := range rep.Backups {
		if b.Deferred {
			deferred = append(deferred, b.ID)
		}
	}
	if len(deferred) > 0 {
		fmt.Fprintf(g.stdout, "deferred backup(s) %s: a restore is reading them (%s); run the delete again once it has finished\n",
			strings.Join(deferred, ", "), strings.Join(rep.RunningRestore, "; "))
	}
	if rep.DryRun {
		for _, s := range []catalog.Objects{rep.Manifests, rep.Chunks, rep.WAL, rep.Leftovers, rep.Locks} {
			for _, k := range s.Keys {
				fmt.Fprintf(g.stdout, "%s %s\n", verb, k)
			}
		}
	}
	return nil
}

// maxLockedLines bounds the locked objects delete and gc name in text;
// --json lists them all.
const maxLockedLines = 20

// printLocked says which objects stayed because they are locked (an
// immutable repository), and until when: not a failure, and a later run
// removes them.
func printLocked(w io.Writer, rep *catalog.Report) {
	l := rep.Locked
	if l.Count == 0 {
		return
	}
	var last time.Time
	for _, o := range l.Objects {
		if o.Until != nil && o.Until.After(last) {
			last = *o.Until
		}
	}
	verb := "left"
	if rep.DryRun {
		verb = "would leave"
	}
	msg := fmt.Sprintf("%s %d locked object(s) (%s) in place", verb, l.Count, manifest.HumanBytes(l.Bytes))
	if !last.IsZero() {
		msg += "; the last lock ends " + last.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%s; a delete or gc after their locks end removes them\n", msg)
	for i, o := range l.Objects {
		if i == maxLockedLines {
			fmt.Fprintf(w, "locked ... and %d more (--json lists them all)\n", len(l.Objects)-i)
			break
		}
		switch {
		case o.Hold:
			fmt.Fprintf(w, "locked %s (legal hold)\n", o.Key)
		case o.Until != nil:
			fmt.Fprintf(w, "locked %s until %s\n", o.Key, o.Until.Format(time.RFC3339))
		default:
			fmt.Fprintf(w, "locked %s\n", o.Key)
		}
	}
}
