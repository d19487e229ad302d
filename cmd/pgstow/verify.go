package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/walarchive"
)

// verifyReport is the --json shape of `pgstow verify` when backups are
// verified; `verify --wal` alone prints the continuity report itself.
type verifyReport struct {
	OK      bool                   `json:"ok"`
	Backups []catalog.Verdict      `json:"backups"`
	WAL     *walarchive.Continuity `json:"wal,omitempty"`
	Repair  *catalog.RepairReport  `json:"repair,omitempty"`
}

func newVerifyCmd(g *globals) *cobra.Command {
	var repoURL string
	var wal, asJSON, all, quick, repair bool
	var concurrency int
	var lockWait time.Duration
	var progress string
	var progressEvery time.Duration
	cmd := &cobra.Command{
		Use:   "verify [ID|latest ...] [--all] [--quick] [--wal] [--repair]",
		Short: "Prove backups restorable without restoring them",
		Long: `Verify backups (the latest when none is named; --all for every one).

A full verification downloads everything a backup references, as a restore
would, and checks each chunk's size, LZ4 checksum and SHA-256 and, where the
manifest records it, the CRC32C of its stored bytes (which sees a stored frame
changed so that it still decodes to the right content), recomputes every
file's CRC32C from its bytes and compares it with pgstow's manifest, checks
PostgreSQL's backup_manifest (its own checksum, and every file in it against
pgstow's manifest), and checks each WAL segment the backup needs (presence,
length, SHA-256). It reads --concurrency objects at once, with memory about
two chunks per download, and four more for an incremental backup, whose
archives name some chunks several times: a copy is kept between uses so
each is downloaded once.

--quick instead checks, from one listing of the repository, that every object
a backup references exists with its recorded size: fast on any number of
backups, but it cannot see bytes changed in place.

--repair moves every chunk found damaged in content (undecodable, a bad LZ4
checksum, wrong content or raw size) aside under quarantine/ in the repository,
after checking it again, and names the backups that cannot be restored until a
backup stores that chunk again: the next backup that holds the same content
uploads it afresh, since deduplication no longer finds it, and that heals every
backup referencing it. A chunk whose stored bytes differ from those recorded
but that still decodes to the right content is reported and left in place:
restores read it correctly. Missing and unreadable chunks are left alone. It
takes the delete/gc lock (--lock-wait) for the move only. If the repair fails,
the verdicts are printed before its error.

--wal checks that the WAL archive is continuous, from the oldest backup's
first segment to the newest archived one, following timeline history files;
alone, it checks only that.

Every problem is named (object, the files a chunk holds, segment). The exit
status is 1 if any backup or the WAL archive has a problem.`,
		Example: `  pgstow verify --repo s3://backups/pg                 # the latest backup, fully
  pgstow verify --all --quick                          # every backup, objects only
  pgstow verify --all --repair                         # quarantine damaged chunks; then take a backup
  pgstow verify 20261123T204651Z --json | jq .ok
  pgstow verify --wal                                  # the WAL archive only`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return usageError{errors.New("name backups or pass --all, not both")}
			}
			if repair && len(args) == 0 && !all && wal {
				return usageError{errors.New("--repair mends chunks of backups: name backups or pass --all with --wal")}
			}
			if err := intRange("concurrency", concurrency, 1, 256); err != nil {
				return err
			}
			if cmd.Flags().Changed("lock-wait") && !repair {
				return usageError{errors.New("--lock-wait only applies with --repair")}
			}
			if err := nonNegativeDuration("lock-wait", lockWait, "5m"); err != nil {
				return err
			}
			mode, err := g.progressFromFlags(progress, progressEvery)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			repo, err := g.repoFromFlag(cmd, repoURL)
			if err != nil {
				return err
			}
			defer repo.Close()

			var cont *walarchive.Continuity
			if wal {
				if cont, err = walarchive.CheckContinuity(ctx, repo); err != nil {
					return err
				}
			}
			var ids []string
			switch {
			case all:
				if ids, err = repo.BackupIDs(ctx); err != nil {
					return err
				}
				if len(ids) == 0 {
					return fmt.Errorf("%s holds no committed backup to verify", repo)
				}
			case len(args) > 0:
				for _, a := range args {
					b, err := repo.Backup(ctx, a)
					if err != nil {
						return err
					}
					ids = append(ids, b.ID)
				}
			case !wal:
				b, err := repo.Backup(ctx, "latest")
				if err != nil {
					return err
				}
				ids = []string{b.ID}
			}

			var verdicts []catalog.Verdict
			if len(ids) > 0 {
				vo := catalog.VerifyOptions{Quick: quick, Concurrency: concurrency, Log: g.log}
				if quick {
					mode = progressOff // one listing and one read per backup: quick
				}
				view := g.newProgressView(mode, "verify", progressEvery)
				if mode != progressOff {
					vo.Progress = func(p catalog.VerifyProgress) { view.update(verifySnapshot(p)) }
				}
				verdicts, err = catalog.Verify(ctx, repo, ids, vo)
				view.finish(err == nil)
				if err != nil {
					return err
				}
			}
			// A failed repair is returned after the verdicts and what
			// it did manage are printed: the verification stands.
			var rep *catalog.RepairReport
			var repairErr error
			if repair && len(verdicts) > 0 {
				rep, repairErr = catalog.Repair(ctx, repo, verdicts, catalog.RepairOptions{LockWait: lockWait, Log: g.log})
			}
			bad := 0
			for _, v := range verdicts {
				if !v.OK {
					bad++
				}
			}
			walBad := cont != nil && len(cont.Missing) > 0
			for _, v := range verdicts {
				g.run.problems += int64(len(v.Problems))
				g.run.chunks += int64(v.Chunks)
				g.run.storedBytes += v.StoredBytes
			}
			if cont != nil {
				g.run.problems += int64(len(cont.Missing))
			}

			switch {
			case asJSON && len(ids) == 0:
				if err := printJSON(g.stdout, cont); err != nil {
					return err
				}
			case asJSON:
				if err := printJSON(g.stdout, verifyReport{OK: bad == 0 && !walBad, Backups: verdicts, WAL: cont, Repair: rep}); err != nil {
					return err
				}
			default:
				for _, v := range verdicts {
					printVerdict(g, v)
				}
				if rep != nil {
					printRepair(g, rep)
				}
				if cont != nil {
					fmt.Fprintf(g.stdout, "WAL archive %s to %s (timelines %v): %d segments checked, %d missing\n", cont.From, cont.To, cont.Timelines, cont.Segments, len(cont.Missing))
					printEach(g.stdout, "missing %s\n", cont.Missing)
				}
			}
			if repairErr != nil {
				return repairErr
			}
			var problems []string
			if bad > 0 {
				problems = append(problems, fmt.Sprintf("%d of %d backup(s) have problems", bad, len(verdicts)))
			}
			if rep != nil && len(rep.Quarantined) > 0 {
				problems = append(problems, fmt.Sprintf("%d damaged chunk(s) quarantined: take a backup to store them again", len(rep.Quarantined)))
			}
			if walBad {
				problems = append(problems, fmt.Sprintf("the WAL archive has %d missing file(s), first %s: point-in-time recovery cannot pass them", len(cont.Missing), cont.Missing[0]))
			}
			if len(problems) > 0 {
				return fmt.Errorf("verify %s: %s", repo, strings.Join(problems, "; "))
			}
			return nil
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&all, "all", false, "verify every backup")
	cmd.Flags().BoolVar(&quick, "quick", false, "only check that every referenced object exists with its recorded size")
	cmd.Flags().BoolVar(&wal, "wal", false, "check the WAL archive's continuity")
	cmd.Flags().BoolVar(&repair, "repair", false, "move damaged chunks aside (quarantine/) so that the next backup stores them again")
	cmd.Flags().DurationVar(&lockWait, "lock-wait", 5*time.Minute, "with --repair, how long to wait for a delete or gc to finish")
	cmd.Flags().IntVar(&concurrency, "concurrency", 8, "objects downloaded at once by a full verification, 1 to 256")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	progressFlags(cmd, &progress, &progressEvery)
	g.metricsFlags(cmd)
	return cmd
}

func printVerdict(g *globals, v catalog.Verdict) {
	state := "OK"
	if !v.OK {
		state = fmt.Sprintf("BROKEN (%d problem(s))", len(v.Problems))
	}
	what := fmt.Sprintf("%d chunks, %d WAL segments, %s", v.Chunks, v.WALSegments, manifest.HumanBytes(v.StoredBytes))
	if v.Mode == "full" {
		what = fmt.Sprintf("%d chunks, %d files checksummed, %d WAL segments, %s read", v.Chunks, v.Files, v.WALSegments, manifest.HumanBytes(v.StoredBytes))
	}
	fmt.Fprintf(g.stdout, "%s  %s  %s: %s\n", v.ID, state, v.Mode, what)
	for _, p := range v.Problems {
		fmt.Fprintf(g.stdout, "  %s\n", p)
	}
}

// printEach prints format, a line with one %s, for each item.
func printEach(w io.Writer, format string, items []string) {
	for _, item := range items {
		fmt.Fprintf(w, format, item)
	}
}

// printRepair says what --repair moved and what that leaves broken until
// the next backup.
func printRepair(g *globals, rep *catalog.RepairReport) {
	for _, q := range rep.Quarantined {
		if q.Removed {
			fmt.Fprintf(g.stdout, "removed damaged %s (an immutable repository keeps no copy)\n", q.Chunk)
		} else {
			fmt.Fprintf(g.stdout, "quarantined %s as %s\n", q.Chunk, q.To)
		}
		if len(q.Unrestorable) > 0 {
			fmt.Fprintf(g.stdout, "  unrestorable until a backup stores this chunk again: %s\n", strings.Join(q.Unrestorable, " "))
		}
	}
	printEach(g.stdout, "left %s in place, content intact: restores read it correctly; its stored bytes differ from the recorded checksum\n", rep.Intact)
	printEach(g.stdout, "left %s in place: sound when checked again\n", rep.Sound)
	printEach(g.stdout, "%s was gone when checked again\n", rep.Gone)
	if len(rep.Quarantined) > 0 {
		fmt.Fprintln(g.stdout, "take a backup now: it uploads the quarantined chunks again if the database still holds their content")
	}
	printEach(g.stdout, "a backup was running (%s): if it had already found a quarantined chunk, the next backup heals it too\n", rep.RunningBackups)
	printEach(g.stdout, "a restore was running (%s): if it needs a quarantined chunk it fails, as it would have on the damaged copy\n", rep.RunningRestores)
	printEach(g.stdout, "could not read backup %s to see whether the quarantine breaks it\n", rep.Unchecked)
	for _, l := range rep.Locked {
		if l.Until != nil {
			fmt.Fprintf(g.stdout, "left damaged %s in place: locked until %s; repair again after that\n", l.Key, l.Until.Format(time.RFC3339))
		} else {
			fmt.Fprintf(g.stdout, "left damaged %s in place: locked; repair again after the lock ends\n", l.Key)
		}
	}
}
