package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/copier"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/retry"
	"github.com/pgstow/pgstow/repository"
)

func newCopyCmd(g *globals) *cobra.Command {
	var srcURL, dstURL, dstKeyFile, retainWithin string
	var all, dryRun, asJSON, toPlain bool
	var retainLast, parallel int
	var progress string
	var progressEvery time.Duration
	cmd := &cobra.Command{
		Use:   "copy --repo SRC --to DST [ID|latest ...] [--all] [--retain-last N] [--retain-within DURATION]",
		Short: "Copy backups and their WAL to another repository",
		Long: `Copy backups, and the WAL they need, from the repository --repo names to the one
--to names: any store to any store, plain or encrypted at either end. The
source's key is --encryption-key-file (PGSTOW_ENCRYPTION_KEY_FILE), the
destination's --to-encryption-key-file (PGSTOW_TO_ENCRYPTION_KEY_FILE); or, for
keys kept by a KMS, --kms-key and --to-kms-key (docs/encryption.md). A
destination used for the first time is created with the key given, or plain
without one; from an encrypted source only with --to-plain, so that a
forgotten key does not leave a decrypted copy. It must belong to the same
cluster as the source.

Which backups: the ids named (or latest); --all for every backup and every WAL
file (so point-in-time recovery reaches as far at the destination); or
--retain-last N and --retain-within DURATION, as delete keeps them (their union).

Every source chunk is decompressed and checked against its id before it is
sent, every WAL file against its SHA-256; the store checks each upload's
CRC32C. Only what the destination lacks is sent (one listing of it). Between
repositories that name chunks differently (plain and encrypted, or two keys)
each chunk is renamed and the manifest rewritten; the stored frames are the
same. Each backup is committed at the destination (its manifest written last)
only once every chunk and WAL file it needs is there, so a copy interrupted or
stopped by a damaged source object commits nothing half-done, and running it
again sends only what had not arrived. See docs/copy.md.`,
		Example: `  pgstow copy --repo file:///var/backups/pg --to s3://dr-bucket/pg latest
  pgstow copy --repo s3://main/pg --to azblob://dr/pg --all --json
  pgstow copy --repo s3://main/pg --to gs://dr/pg --retain-last 7 --to-encryption-key-file /etc/pgstow/dr.key
  pgstow copy --repo s3://main/pg --to gs://dr/pg --all --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := copier.Options{IDs: args, All: all, RetainLast: retainLast, DryRun: dryRun, ToPlain: toPlain, Parallel: parallel, Log: g.log}
			if err := checkCopySelection(cmd, &o, retainWithin); err != nil {
				return err
			}
			if err := intRange("parallel", parallel, 1, 64); err != nil {
				return err
			}
			mode, err := g.progressFromFlags(progress, progressEvery)
			if err != nil {
				return err
			}
			fromEnv(cmd, g, "to", "PGSTOW_TO_REPO", &dstURL)
			if dstURL == "" {
				return usageError{errors.New("no destination: pass --to URL or set PGSTOW_TO_REPO")}
			}
			if toPlain && (dstKeyFile != "" || g.getenv("PGSTOW_TO_ENCRYPTION_KEY_FILE") != "" || cmd.Flags().Changed("to-kms-key") || g.getenv("PGSTOW_TO_KMS_KEY") != "") {
				return usageError{errors.New("--to-plain contradicts the destination key given (--to-encryption-key-file, --to-kms-key or their PGSTOW_TO_ variables)")}
			}
			src, err := g.repoFromFlag(cmd, srcURL)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := g.openCopyDestination(cmd, dstURL, dstKeyFile, dryRun)
			if err != nil {
				return err
			}
			defer dst.Close()
			if dst.String() == src.String() {
				return usageError{fmt.Errorf("--to names the source repository %s", src)}
			}

			view := g.newProgressView(mode, "copy", progressEvery)
			if mode != progressOff {
				o.Progress = func(p copier.Progress) { view.update(copySnapshot(p)) }
			}
			res, err := copier.Copy(cmd.Context(), src, dst, o)
			view.finish(err == nil)
			if res != nil {
				g.run.newBytes += res.ChunkBytes + res.WALBytes
				g.run.chunks += int64(res.ChunksSent + res.ChunksPresent)
				g.run.newChunks += int64(res.ChunksSent)
				if asJSON {
					if perr := printJSON(g.stdout, res); perr != nil && err == nil {
						err = perr
					}
				} else {
					printCopy(g, res)
				}
			}
			return err
		},
	}
	repoFlag(cmd, &srcURL)
	cmd.Flags().StringVar(&dstURL, "to", "", "destination repository URL (env PGSTOW_TO_REPO)")
	cmd.Flags().StringVar(&dstKeyFile, "to-encryption-key-file", "", "file holding the destination repository's encryption key (env PGSTOW_TO_ENCRYPTION_KEY_FILE); none for a plain destination")
	cmd.Flags().String("to-kms-key", "", "instead of --to-encryption-key-file: the KMS key that wraps the destination's key, or makes a new one there (env PGSTOW_TO_KMS_KEY); see docs/encryption.md")
	cmd.Flags().BoolVar(&toPlain, "to-plain", false, "allow creating a plain destination from an encrypted source (without it that is refused)")
	cmd.Flags().String("to-lock-mode", "", "make a new destination immutable: governance or compliance, with --to-lock-retention (env PGSTOW_TO_LOCK_MODE); see docs/immutability.md")
	cmd.Flags().String("to-lock-retention", "", "how long each object at a new immutable destination stays locked, e.g. 30d or 720h (env PGSTOW_TO_LOCK_RETENTION)")
	cmd.Flags().BoolVar(&all, "all", false, "copy every backup and every WAL file")
	cmd.Flags().IntVar(&retainLast, "retain-last", 0, "copy the newest N backups")
	cmd.Flags().StringVar(&retainWithin, "retain-within", "", "copy the backups that finished within DURATION (e.g. 14d)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be copied, and write nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "chunks copied at once; memory is about twice the chunk size each")
	progressFlags(cmd, &progress, &progressEvery)
	g.metricsFlags(cmd)
	return cmd
}

// checkCopySelection checks that exactly one way of choosing backups is
// given and completes o with --retain-within.
func checkCopySelection(cmd *cobra.Command, o *copier.Options, retainWithin string) error {
	if retainWithin != "" {
		d, err := catalog.ParseDuration(retainWithin)
		if err != nil || d <= 0 {
			return usageError{fmt.Errorf("--retain-within %q: use e.g. 7d, 2w or 36h", retainWithin)}
		}
		o.RetainWithin = d
	}
	if cmd.Flags().Changed("retain-last") && o.RetainLast < 1 {
		return usageError{fmt.Errorf("--retain-last %d: must be 1 or more", o.RetainLast)}
	}
	ways := 0
	for _, given := range []bool{len(o.IDs) > 0, o.All, o.RetainLast > 0 || o.RetainWithin > 0} {
		if given {
			ways++
		}
	}
	switch {
	case ways == 0:
		return usageError{errors.New("nothing to copy: name backups (or latest), or give --all, --retain-last N or --retain-within DURATION")}
	case ways > 1:
		return usageError{errors.New("choose backups one way: ids, --all, or --retain-last/--retain-within")}
	}
	for _, id := range o.IDs {
		if id != "latest" && !manifest.ValidBackupID(id) {
			return usageError{fmt.Errorf("%q is not a backup id (e.g. 20261123T204651Z) or latest", id)}
		}
	}
	return nil
}

// openCopyDestination opens the repository a copy writes to, with the
// destination's key, creating a file:// directory that does not exist yet
// unless dryRun.
func (g *globals) openCopyDestination(cmd *cobra.Command, raw, keyFile string, dryRun bool) (*repository.Repository, error) {
	ctx, log := cmd.Context(), g.log
	key, err := g.destinationKey(cmd, keyFile)
	if err != nil {
		return nil, err
	}
	// A dry run writes nothing, not even a file:// destination's
	// directory.
	store, err := stores().Open(ctx, raw, providers.OpenOptions{Create: !dryRun, Log: log})
	var missing *file.MissingDirError
	switch {
	case errors.Is(err, providers.ErrBadURL):
		return nil, usageError{fmt.Errorf("--to: %w", err)}
	case errors.As(err, &missing):
		return nil, fmt.Errorf("--to: %w (copy creates it; a dry run does not)", err)
	case err != nil:
		return nil, fmt.Errorf("--to: %w", err)
	}
	store = retry.Wrap(store, retry.Policy{}, log)
	lockMode, lockPeriod, locked, err := g.lockFlags(cmd, "to-lock-mode", "to-lock-retention", "PGSTOW_TO_LOCK_MODE", "PGSTOW_TO_LOCK_RETENTION")
	if err != nil {
		store.Close()
		return nil, err
	}
	var keyLock providers.Retention
	if locked {
		if keyLock, err = repository.NewObjectRetention(lockMode, lockPeriod); err != nil {
			store.Close()
			return nil, usageError{err}
		}
	}
	if key, err = g.destinationKMSKey(cmd, store, key, !dryRun, keyLock); err != nil { // kms.go
		store.Close()
		return nil, err
	}
	repo := repository.New(store)
	if key != nil {
		repo = repository.NewEncrypted(store, key)
	}
	if locked {
		// Bind (in the copier) writes it into a new destination's
		// configuration and refuses an existing one that says otherwise.
		if err := repo.SetImmutability(lockMode, lockPeriod); err != nil {
			store.Close()
			return nil, usageError{err}
		}
	}
	if err := repo.CheckKey(ctx); err != nil {
		store.Close()
		if key == nil && errors.Is(err, repository.ErrEncryption) {
			return nil, fmt.Errorf("destination %s is encrypted: pass its key with --to-encryption-key-file or PGSTOW_TO_ENCRYPTION_KEY_FILE (%w)", repo, err)
		}
		return nil, fmt.Errorf("destination: %w", err)
	}
	repo.SetSpoolDir(g.spoolDirPath(cmd))
	return repo, nil
}

// destinationKey reads the destination's key file, named by
// --to-encryption-key-file or PGSTOW_TO_ENCRYPTION_KEY_FILE; nil for a
// plain destination. It is the destination's counterpart of
// encryptionKey, checked the same way.
func (g *globals) destinationKey(cmd *cobra.Command, path string) (*encryption.Key, error) {
	fromEnv(cmd, g, "to-encryption-key-file", "PGSTOW_TO_ENCRYPTION_KEY_FILE", &path)
	master, err := g.readKeyFile(path, "destination encryption key file", false)
	if master == nil || err != nil {
		return nil, err
	}
	return encryption.NewKey(master)
}

// copySnapshot shows a copy: the stored bytes of the current backup's
// chunks checked and stored at the destination, against their total.
func copySnapshot(p copier.Progress) snapshot {
	phase := p.Phase
	if p.Backup != "" {
		phase = fmt.Sprintf("%s (%d of %d) %s", p.Backup, p.Index, p.Count, p.Phase)
	}
	return snapshot{
		phase:      phase,
		done:       p.BytesDone,
		total:      p.BytesTotal,
		elapsed:    p.Elapsed,
		detail:     fmt.Sprintf("%d of %d chunks", p.ChunksDone, p.ChunksTotal),
		detailTail: fmt.Sprintf("sent %s · WAL %d", manifest.HumanBytes(p.SentBytes), p.WALFiles),
		uploaded:   p.SentBytes,
		final:      p.Phase == "done",
		fields: []any{"backup", p.Backup, "index", p.Index, "count", p.Count, "chunks_done", p.ChunksDone,
			"chunks_total", p.ChunksTotal, "sent_bytes", p.SentBytes, "wal_files", p.WALFiles},
	}
}

// printCopy prints a copy's result: a line per backup, then the totals.
func printCopy(g *globals, r *copier.Result) {
	for _, b := range r.Backups {
		switch b.Status {
		case "present":
			fmt.Fprintf(g.stdout, "%s  already at the destination\n", b.ID)
		default:
			fmt.Fprintf(g.stdout, "%s  %s: %d chunks, %d sent, %s sent, %d WAL files\n", b.ID, b.Status, b.Chunks, b.ChunksSent, manifest.HumanBytes(b.BytesSent), b.WALSegments)
		}
	}
	verb := "sent"
	if r.DryRun {
		verb = "would send"
	}
	fmt.Fprintf(g.stdout, "%s → %s: %d chunks %s (%s), %d already there; %d WAL files %s (%s), %d already there",
		r.From, r.To, r.ChunksSent, verb, manifest.HumanBytes(r.ChunkBytes), r.ChunksPresent, r.WALSent, verb, manifest.HumanBytes(r.WALBytes), r.WALPresent)
	if r.ChunksToCheck > 0 {
		fmt.Fprintf(g.stdout, "; %d chunks to read to tell (the two repositories name chunks differently)", r.ChunksToCheck)
	}
	if r.Rekeyed {
		fmt.Fprintf(g.stdout, "; chunks renamed for the destination's keying")
	}
	fmt.Fprintln(g.stdout)
}
