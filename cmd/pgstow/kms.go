package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/encryption/kms"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// kmsKeyURI is the KMS key --kms-key or PGSTOW_KMS_KEY names, if any.
func (g *globals) kmsKeyURI(cmd *cobra.Command) string {
	if !cmd.Flags().Changed("kms-key") {
		if v := g.getenv("PGSTOW_KMS_KEY"); v != "" {
			return v
		}
	}
	return g.kmsKey
}

// openWrapper opens a KMS key with its provider's default credentials.
func openWrapper(ctx context.Context, uri string) (repository.KeyWrapper, error) {
	w, err := kms.Open(ctx, uri, kms.Options{})
	if errors.Is(err, kms.ErrBadURI) {
		return nil, usageError{err}
	}
	return w, err
}

// repoKey returns the key of the repository in store: the key file's
// (fileKey) when one was given; else, for an encrypted repository, its
// data key unwrapped through a KMS from a copy under keys/ (only a copy of
// --kms-key's key when that is given, so a copy planted with another key
// is never used); else, at first use with --kms-key, a new data key
// wrapped with it. nil means a plain repository, or an encrypted one
// without copies, which CheckKey then refuses with its own message.
// plainOK is openRepoKeyed's: a plain repository among several takes no
// key, and --kms-key is then no error.
func (g *globals) repoKey(ctx context.Context, cmd *cobra.Command, store providers.Store, fileKey *encryption.Key, plainOK bool) (*encryption.Key, error) {
	ret, err := g.newKeyRetention(cmd, "lock-mode", "lock-retention", "PGSTOW_LOCK_MODE", "PGSTOW_LOCK_RETENTION")
	if err != nil {
		return nil, err
	}
	return resolveKey(ctx, store, fileKey, keySource{
		uri: g.kmsKeyURI(cmd), create: createsRepo[cmd.Name()], plainOK: plainOK, retention: ret,
		fileFlag: "--encryption-key-file", kmsFlag: "--kms-key", kmsEnv: "PGSTOW_KMS_KEY",
	}, g.log)
}

// destinationKMSKey resolves the key of a copy's destination as repoKey does
// the source's, with --to-kms-key (PGSTOW_TO_KMS_KEY); create is false
// for a dry run, which writes nothing.
func (g *globals) destinationKMSKey(cmd *cobra.Command, store providers.Store, fileKey *encryption.Key, create bool, retention providers.Retention) (*encryption.Key, error) {
	uri, _ := cmd.Flags().GetString("to-kms-key")
	if !cmd.Flags().Changed("to-kms-key") {
		if v := g.getenv("PGSTOW_TO_KMS_KEY"); v != "" {
			uri = v
		}
	}
	return resolveKey(cmd.Context(), store, fileKey, keySource{
		uri: uri, create: create, retention: retention,
		fileFlag: "--to-encryption-key-file", kmsFlag: "--to-kms-key", kmsEnv: "PGSTOW_TO_KMS_KEY",
	}, g.log)
}

// keySource is what a command was given to find one repository's key.
type keySource struct {
	uri     string // the KMS key, "" for none
	create  bool   // the command may make the repository
	plainOK bool   // a plain repository is no error with uri set
	// retention locks the copy of a new data key (immutable repositories)
	retention providers.Retention
	fileFlag  string // the flags and variable named in messages
	kmsFlag   string
	kmsEnv    string
}

func resolveKey(ctx context.Context, store providers.Store, fileKey *encryption.Key, src keySource, log *slog.Logger) (*encryption.Key, error) {
	if fileKey != nil {
		if src.uri != "" {
			return nil, usageError{fmt.Errorf("%s and %s (or their PGSTOW_ variables) are both set: give one (repo rotate-key takes both, to wrap the key file's key with the KMS key)", src.fileFlag, src.kmsFlag)}
		}
		return fileKey, nil
	}
	cfg, err := repository.New(store).Config(ctx)
	switch {
	case errors.Is(err, providers.ErrNotExist):
		if src.uri == "" || !src.create {
			return nil, nil
		}
		w, err := openWrapper(ctx, src.uri)
		if err != nil {
			return nil, err
		}
		// Locked as the lock flags ask: pgstow.json, written later, will
		// record them, and each commit extends the lock.
		dk, adopted, err := repository.InitDataKey(ctx, store, w, src.retention)
		if err != nil {
			return nil, fmt.Errorf("make the data key of %s: %w", store, err)
		}
		if adopted != nil {
			log.Warn("another first use of the repository made its data key moments ago; using it", "copy", adopted.Key, "created", adopted.Created, "fingerprint", adopted.KeyFingerprint)
		}
		return encryption.NewKey(dk)
	case err != nil:
		return nil, fmt.Errorf("read repository configuration of %s: %w", store, err)
	case cfg.Encryption == nil:
		if src.uri != "" && !src.plainOK {
			return nil, usageError{fmt.Errorf("%s is not encrypted, so no KMS key applies: leave out %s (%s)", store, src.kmsFlag, src.kmsEnv)}
		}
		return nil, nil
	}
	if src.uri == "" {
		copies, err := repository.WrappedKeys(ctx, store)
		if err != nil {
			return nil, err
		}
		if len(copies) == 0 {
			return nil, nil // a key-file repository: "pass its key file"
		}
	}
	dk, used, err := repository.UnwrapDataKey(ctx, store, cfg, openWrapper, src.uri)
	if err != nil {
		return nil, err
	}
	log.Debug("data key unwrapped", "copy", used.Key, "kms", used.KMS)
	return encryption.NewKey(dk)
}

// rotateResult is what rotate-key did, for --json.
type rotateResult struct {
	Added   rotatedCopy   `json:"added"`
	Removed []rotatedCopy `json:"removed"`
	Kept    []rotatedCopy `json:"kept,omitempty"`
}

type rotatedCopy struct {
	Object      string     `json:"object"`
	KMS         string     `json:"kms"`
	LockedUntil *time.Time `json:"locked_until,omitempty"`
	Reason      string     `json:"reason,omitempty"`
}

func newRotateKeyCmd(g *globals) *cobra.Command {
	var repoURL string
	var keepOld, asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate-key --repo URL --kms-key NEW_URI",
		Short: "Wrap the repository's data key with another KMS key, then remove the old wrapped copies",
		Long: `Wraps the data key of an encrypted repository with the KMS key --kms-key
names and stores that copy under keys/, reads it back and unwraps it to prove
it, then removes every other wrapped copy (unless --keep-old), so the old KMS
key can be disabled. The data is not re-encrypted: the data key stays the same.

The data key comes from a working wrapped copy, or from --encryption-key-file:
that way a repository created with a key file gains a KMS-wrapped copy, and
from then on opens without the file. A copy that a locked (immutable) store
keeps is reported and left. See docs/encryption.md.`,
		Example: `  # Move to a new AWS KMS key; the old one can then be disabled
  pgstow repo rotate-key --repo s3://backups/db1 --kms-key awskms://alias/pgstow-2027

  # Give a key-file repository a KMS-wrapped copy of its key
  pgstow repo rotate-key --repo s3://backups/db1 --encryption-key-file /etc/pgstow/key \
      --kms-key gcpkms://projects/p/locations/europe-west1/keyRings/pgstow/cryptoKeys/db1

  # A second copy in another region, keeping the first
  pgstow repo rotate-key --repo s3://backups/db1 --keep-old \
      --kms-key 'awskms://arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			fromEnv(cmd, g, "repo", "PGSTOW_REPO", &repoURL)
			newURI := g.kmsKeyURI(cmd)
			if repoURL == "" || newURI == "" {
				return usageError{errors.New("rotate-key needs --repo and --kms-key (the new KMS key)")}
			}
			if err := g.checkGlobals(cmd); err != nil {
				return err
			}
			master, err := g.keyFileBytes(cmd)
			if err != nil {
				return err
			}
			w, err := openWrapper(ctx, newURI)
			if err != nil {
				return err
			}
			store, err := g.openStore(cmd, repoURL)
			if err != nil {
				return err
			}
			defer store.Close()
			res, err := rotateKey(ctx, store, master, w, keepOld)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(g.stdout, "added %s (%s), verified\n", res.Added.Object, res.Added.KMS)
			for _, c := range res.Removed {
				fmt.Fprintf(g.stdout, "removed %s (%s)\n", c.Object, c.KMS)
			}
			for _, c := range res.Kept {
				fmt.Fprintf(g.stdout, "kept %s (%s): %s\n", c.Object, c.KMS, c.Reason)
			}
			return nil
		},
	}
	repoFlag(cmd, &repoURL)
	cmd.Flags().BoolVar(&keepOld, "keep-old", false, "keep the other wrapped copies (e.g. a second KMS key in another region)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// rotateKey adds a copy of the data key wrapped with w and removes the
// others. The data key is master (a key file's) or unwrapped from a
// copy; either way it is checked against pgstow.json (fingerprint and
// MAC) before anything is written.
func rotateKey(ctx context.Context, store providers.Store, master []byte, w repository.KeyWrapper, keepOld bool) (*rotateResult, error) {
	cfg, err := repository.New(store).Config(ctx)
	switch {
	case errors.Is(err, providers.ErrNotExist):
		return nil, fmt.Errorf("%s has no configuration yet: give --kms-key to its first backup (or wal-push) instead", store)
	case err != nil:
		return nil, fmt.Errorf("read repository configuration of %s: %w", store, err)
	case cfg.Encryption == nil:
		return nil, fmt.Errorf("%s is not encrypted: a KMS key wraps the key of an encrypted repository, and this one has none (docs/encryption.md)", store)
	}
	if master == nil {
		if master, _, err = repository.UnwrapDataKey(ctx, store, cfg, openWrapper, ""); err != nil {
			return nil, err
		}
	}
	key, err := encryption.NewKey(master)
	if err != nil {
		return nil, err
	}
	if err := repository.NewEncrypted(store, key).CheckKey(ctx); err != nil {
		return nil, err
	}
	// In an immutable repository the new copy is locked like the
	// objects written now; each commit extends it.
	var lock providers.Retention
	if i := cfg.Immutability; i != nil {
		period, err := i.Period()
		if err != nil {
			return nil, err
		}
		if lock, err = repository.NewObjectRetention(providers.LockMode(i.Mode), period); err != nil {
			return nil, err
		}
	}
	added, err := repository.AddWrappedKey(ctx, store, master, w, lock)
	if errors.Is(err, providers.ErrExist) {
		// A copy with this key is there (an earlier run stopped before
		// removing the old ones): use it if it unwraps.
		var dk []byte
		dk, added, err = repository.UnwrapDataKey(ctx, store, cfg, func(context.Context, string) (repository.KeyWrapper, error) { return w, nil }, w.URI())
		if err == nil && !bytes.Equal(dk, master) {
			err = fmt.Errorf("%s holds another data key", added.Key)
		}
	}
	if err != nil {
		return nil, err
	}
	res := &rotateResult{Added: rotatedCopy{Object: added.Key, KMS: added.KMS}, Removed: []rotatedCopy{}}
	if keepOld {
		return res, nil
	}
	copies, err := repository.WrappedKeys(ctx, store)
	if err != nil {
		return nil, err
	}
	for _, c := range copies {
		if c.Key == added.Key {
			continue
		}
		rc := rotatedCopy{Object: c.Key, KMS: c.KMS}
		err := store.Delete(ctx, c.Key)
		var locked *providers.LockedError
		switch {
		case errors.As(err, &locked):
			rc.Reason = "locked"
			if !locked.Until.IsZero() {
				until := locked.Until.UTC()
				rc.LockedUntil = &until
				rc.Reason = "locked until " + until.Format(time.RFC3339) + "; remove it then (rotate-key again)"
			}
			res.Kept = append(res.Kept, rc)
		case errors.Is(err, providers.ErrNotExist):
			res.Removed = append(res.Removed, rc)
		case err != nil:
			return nil, fmt.Errorf("remove the old copy %s of %s (the new one %s is stored): %w", c.Key, store, added.Key, err)
		default:
			res.Removed = append(res.Removed, rc)
		}
	}
	return res, nil
}
