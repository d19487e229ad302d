package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/azblob"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/gcs"
	"github.com/pgstow/pgstow/providers/retry"
	"github.com/pgstow/pgstow/providers/s3"
	"github.com/pgstow/pgstow/repository"
)

// createsRepo names the commands that create a file:// repository's
// directory when it is missing: those that write new data.
var createsRepo = map[string]bool{"backup": true, "wal-push": true, "wal-receive": true}

// stores are the providers a repository URL may name, in the order the
// message for an unknown scheme lists them.
func stores() *providers.Registry {
	return providers.NewRegistry(file.Scheme(), s3.Scheme(), gcs.Scheme(), azblob.Scheme())
}

// repoFlag adds --repo to a command; PGSTOW_REPO is its default.
func repoFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "repo", "", "repository URL, e.g. file:///var/backups/pgstow (env PGSTOW_REPO)")
	if createsRepo[cmd.Name()] {
		lockFlags(cmd)
	}
}

// fromEnv applies the precedence flag > environment > default.
func fromEnv(cmd *cobra.Command, g *globals, flag, env string, dst *string) {
	if !cmd.Flags().Changed(flag) {
		if v := g.getenv(env); v != "" {
			*dst = v
		}
	}
}

// repoFromFlag opens the repository --repo (or PGSTOW_REPO) names; the
// caller closes its store.
func (g *globals) repoFromFlag(cmd *cobra.Command, url string) (*repository.Repository, error) {
	fromEnv(cmd, g, "repo", "PGSTOW_REPO", &url)
	return g.openRepo(cmd, url)
}

// openRepo opens the store a repository URL names.
func (g *globals) openRepo(cmd *cobra.Command, raw string) (*repository.Repository, error) {
	return g.openRepoKeyed(cmd, raw, false)
}

// openRepoKeyed is openRepo; with plainOK, a repository whose
// configuration says it is plain is opened plain even though a key was
// given, for WAL written to several repositories, where one key serves
// the encrypted ones.
func (g *globals) openRepoKeyed(cmd *cobra.Command, raw string, plainOK bool) (*repository.Repository, error) {
	ctx := cmd.Context()
	if err := g.checkGlobals(cmd); err != nil {
		return nil, err
	}
	key, err := g.encryptionKey(cmd)
	if err != nil {
		return nil, err
	}
	store, err := g.openStore(cmd, raw)
	if err != nil {
		return nil, err
	}
	// Without a key file, the key may come wrapped by a KMS (kms.go).
	if key, err = g.repoKey(ctx, cmd, store, key, plainOK); err != nil {
		store.Close()
		return nil, err
	}
	repo := repository.New(store)
	if key != nil {
		repo = repository.NewEncrypted(store, key)
	}
	err = repo.CheckKey(ctx)
	if err != nil && key != nil && plainOK && errors.Is(err, repository.ErrEncryption) {
		if c, cerr := repo.Config(ctx); cerr == nil && c.Encryption == nil {
			repo, err = repository.New(store), nil
		}
	}
	if err != nil && key == nil && keyOptional[cmd.CommandPath()] {
		err = nil // reads only pgstow.json and the store's settings
	}
	if err != nil {
		if key == nil && errors.Is(err, repository.ErrEncryption) {
			err = keyNeeded(ctx, repo, err)
		}
		store.Close()
		return nil, err
	}
	if err := g.applyLockFlags(cmd, repo); err != nil {
		store.Close()
		return nil, err
	}
	repo.SetSpoolDir(g.spoolDirPath(cmd))
	return repo, nil
}

// openStore opens the store a repository URL names, behind the one retry
// policy.
func (g *globals) openStore(cmd *cobra.Command, raw string) (providers.Store, error) {
	store, err := stores().Open(cmd.Context(), raw, providers.OpenOptions{Create: createsRepo[cmd.Name()], Log: g.log})
	var missing *file.MissingDirError
	switch {
	case errors.Is(err, providers.ErrBadURL):
		return nil, usageError{err}
	case errors.As(err, &missing):
		return nil, fmt.Errorf("%w (backup, wal-push and wal-receive create it)", err)
	case err != nil:
		return nil, err
	}
	// One retry policy for every store: throttling and dropped
	// connections are retried within a budget, nothing else is.
	rs := retry.Wrap(store, retry.Policy{}, g.log)
	g.retryStore = rs
	return rs, nil
}

// keyNeededError says that a repository is encrypted and no key was
// given, where the repository's own message ("encryption key does not fit
// the repository") suggests a wrong key. It is still ErrEncryption.
type keyNeededError struct {
	msg string
	err error
}

func (k keyNeededError) Error() string { return k.msg }
func (k keyNeededError) Unwrap() error { return k.err }

// keyNeeded words err, a refusal of no key, for what happened.
func keyNeeded(ctx context.Context, repo *repository.Repository, err error) error {
	c, cerr := repo.Config(ctx)
	if cerr != nil || c.Encryption == nil {
		return err
	}
	return keyNeededError{
		msg: fmt.Sprintf("%s is encrypted (%s, key fingerprint %s) and no key was given: pass its key file with --encryption-key-file or PGSTOW_ENCRYPTION_KEY_FILE",
			repo, c.Encryption.Algorithm, c.Encryption.KeyFingerprint),
		err: err,
	}
}

// spoolDirPath is the spool directory named by flag or environment, if
// any ("" means the system's temporary directory).
func (g *globals) spoolDirPath(cmd *cobra.Command) string {
	if !cmd.Flags().Changed("spool-dir") {
		if v := g.getenv("PGSTOW_SPOOL_DIR"); v != "" {
			return v
		}
	}
	return g.spoolDir
}

// keyFilePath is the key file named by flag or environment, if any.
func (g *globals) keyFilePath(cmd *cobra.Command) string {
	if !cmd.Flags().Changed("encryption-key-file") {
		if v := g.getenv("PGSTOW_ENCRYPTION_KEY_FILE"); v != "" {
			return v
		}
	}
	return g.keyFile
}

// checkKeyFileMode refuses a key file that other users may read or write,
// as ssh refuses such a private key and PostgreSQL such an ssl_key_file:
// whoever reads the key can read every backup, and whoever writes it can
// make the next backup use a key they chose. A warning would scroll past in
// a cron job's mail; a refusal is fixed once with chmod. PostgreSQL's
// exception is kept: a file owned by root may be readable by its group, the
// usual way to share one key between root's backups and the postgres
// user's archive_command. Pipes and devices (a key handed over by a
// secrets tool as /dev/fd/N) are not files others can open later, and are
// not checked.
func checkKeyFileMode(path string, allow bool) error {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || allow {
		return nil // a missing file is reported when it is read
	}
	perm := fi.Mode().Perm()
	open := perm & 0o077
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
		open = perm & 0o037
	}
	if open == 0 {
		return nil
	}
	return usageError{fmt.Errorf("encryption key file %s has mode %04o, so other users may read or change it: chmod 600 it (or 640, owned by root, to share it with a group); --allow-shared-key-file accepts it as it is", path, perm)}
}

// encryptionKey reads the key file --encryption-key-file or
// PGSTOW_ENCRYPTION_KEY_FILE names, if any. The key itself never passes
// through flags or the environment, where other processes can read it.
func (g *globals) encryptionKey(cmd *cobra.Command) (*encryption.Key, error) {
	master, err := g.keyFileBytes(cmd)
	if master == nil || err != nil {
		return nil, err
	}
	return encryption.NewKey(master)
}

// keyFileBytes returns the 32 bytes of the key file, if one is named.
func (g *globals) keyFileBytes(cmd *cobra.Command) ([]byte, error) {
	// archive_command only warns about the file's mode: a refusal would
	// stop archiving over a mode that was accepted before, and WAL would
	// pile up in pg_wal until the disk filled; the warning goes to the
	// server's log every time it runs.
	return g.readKeyFile(g.keyFilePath(cmd), "encryption key file", cmd.Name() == "wal-push")
}

// readKeyFile reads the 32 bytes of a key file (none when path is
// empty), after checking its mode: a mode others can read is refused, or
// with warnMode only logged. what names the file in messages.
func (g *globals) readKeyFile(path, what string, warnMode bool) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	if err := checkKeyFileMode(path, g.allowSharedKey); err != nil {
		if !warnMode {
			return nil, err
		}
		g.log.Warn(err.Error() + "; wal-push goes on, so that archiving does not stop")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", what, err)}
	}
	master, err := encryption.DecodeKeyFile(data)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s %s: %w", what, path, err)}
	}
	return master, nil
}
