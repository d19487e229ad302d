// Package repository is pgstow's repository format applied to a store: it
// binds a store to one cluster, reads and commits backup manifests, and
// stores WAL segments. Backup, restore and the catalog commands share it so
// that the object layout is decided in one place.
package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// ErrOtherCluster is returned when a repository belongs to another cluster.
var ErrOtherCluster = errors.New("repository belongs to another cluster")

// ErrWALConflict is returned when a WAL file exists with other content.
var ErrWALConflict = errors.New("WAL file exists with different content")

// ErrIDTaken is returned by Commit when another backup holds the id.
var ErrIDTaken = errors.New("backup id already taken by another backup")

// ErrCommitUnknown is returned by Commit when the write of pgstow's
// manifest, the commit point, failed in a way that does not say whether
// the store took it: a timeout or a cancellation after the body was sent
// may be followed by the store completing the write. The backup may
// therefore appear committed later, and nothing it references may be
// removed on the strength of its having failed.
var ErrCommitUnknown = errors.New("the commit's outcome is unknown: its manifest may still be stored")

// ErrNoBackup is returned when no committed backup matches.
var ErrNoBackup = errors.New("no such backup")

// ErrEncryption is returned when the key given does not fit the
// repository: none for an encrypted one, one for a plain one, or another.
var ErrEncryption = errors.New("encryption key does not fit the repository")

// Repository is a store seen through pgstow's format.
type Repository struct {
	// store holds the data objects (chunks, WAL, manifests): with a key
	// it seals everything it is given.
	store providers.Store
	// raw is store without the encryption layer. Encryption is decided
	// here, by what an object is, not by the wrapper from its key: the
	// configuration (which says whether and with which key the
	// repository is encrypted) and the leases (which hold no data) are
	// kept plain, and quarantine moves a damaged object's bytes as they
	// are, which a failed seal would not let it read.
	raw providers.Store
	key *encryption.Key // nil: a plain repository
	// cfg caches the configuration once read: it is written once and
	// never changes, and several steps of one command need it.
	cfgMu sync.Mutex
	cfg   *manifest.Repo
	// spoolDir is where WAL is staged before upload (see SetSpoolDir).
	spoolDir string
	// lockWant is the immutability asked for (SetImmutability).
	lockWant *manifest.RepoImmutability
	// clock dates locks (SetClock); nil means the system clock.
	clock func() time.Time
	// written maps the keys of chunks and WAL this process stored
	// locked to their lock's end, and extended counts the locks extended
	// before commits (immutable.go).
	writtenMu sync.Mutex
	written   map[string]time.Time
	extended  atomic.Int64
	// policyCached is the lock policy, once read (policyRead): parsed
	// from Config's cached configuration (policyOf), or read on its own
	// by a Repository whose configuration Config has not cached.
	policyMu     sync.Mutex
	policyRead   bool
	policyCached *lockPolicy
	policyOf     *manifest.Repo
}

// New wraps a store.
func New(store providers.Store) *Repository { return &Repository{store: store, raw: store} }

// NewEncrypted wraps a store whose objects are sealed with key.
func NewEncrypted(store providers.Store, key *encryption.Key) *Repository {
	return &Repository{store: encryption.Wrap(store, key), raw: store, key: key}
}

// ChunkID names a chunk by its content: SHA-256, or with encryption the
// keyed hash, so that object names reveal nothing.
func (r *Repository) ChunkID(raw []byte) string {
	if r.key != nil {
		return r.key.ChunkID(raw)
	}
	return chunker.ID(raw)
}

// CheckKey refuses a key that does not fit the repository's
// configuration, before anything else is read or written. A repository
// not yet configured fits any.
func (r *Repository) CheckKey(ctx context.Context) error {
	c, err := r.Config(ctx)
	if errors.Is(err, providers.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read repository configuration of %s: %w", r, err)
	}
	return r.checkKey(c)
}

func (r *Repository) checkKey(c *manifest.Repo) error {
	switch {
	case c.Encryption == nil && r.key != nil:
		return fmt.Errorf("%w: %s is not encrypted; leave out --encryption-key-file, or use a new repository for encrypted backups", ErrEncryption, r)
	case c.Encryption != nil && r.key == nil:
		return fmt.Errorf("%w: %s is encrypted (%s, key %s); pass its key with --encryption-key-file or PGSTOW_ENCRYPTION_KEY_FILE", ErrEncryption, r, c.Encryption.Algorithm, c.Encryption.KeyFingerprint)
	case c.Encryption != nil && c.Encryption.Algorithm != encryption.Algorithm:
		return fmt.Errorf("%w: %s is encrypted with %s, which this pgstow does not know", ErrEncryption, r, c.Encryption.Algorithm)
	case c.Encryption != nil && c.Encryption.KeyFingerprint != r.key.Fingerprint():
		return fmt.Errorf("%w: %s is encrypted with the key of fingerprint %s, and the key given has fingerprint %s", ErrEncryption, r, c.Encryption.KeyFingerprint, r.key.Fingerprint())
	case c.Encryption != nil && c.Encryption.ConfigMAC != r.configMAC(c):
		return fmt.Errorf("%s in %s has been changed since it was written (its MAC does not match): the repository cannot be trusted", RepoKey, r)
	}
	return nil
}

// configMAC authenticates what the configuration says.
func (r *Repository) configMAC(c *manifest.Repo) string {
	fields := []string{c.FormatVersion, c.SystemID, strconv.FormatUint(c.WALSegmentSize, 10),
		c.Created.UTC().Format(time.RFC3339Nano), c.Encryption.Algorithm, c.Encryption.KeyFingerprint}
	if c.Immutability != nil {
		// Only then, so that the MAC of older configurations holds.
		fields = append(fields, "immutability", c.Immutability.Mode, c.Immutability.Retention)
	}
	return r.key.MAC(fields...)
}

// Store returns the store data objects go through: in an encrypted
// repository it seals everything written to it, so the configuration and
// the leases, which stay plain, must never be written through it.
func (r *Repository) Store() providers.Store { return r.store }

// String names the repository for messages.
func (r *Repository) String() string { return r.store.String() }

// Config reads the repository configuration; ErrNotExist before first use.
func (r *Repository) Config(ctx context.Context) (*manifest.Repo, error) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	if r.cfg != nil {
		return r.cfg, nil
	}
	b, err := providers.ReadAll(ctx, r.raw, RepoKey)
	if err != nil {
		return nil, err
	}
	c, err := manifest.DecodeRepo(b)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", RepoKey, r, err)
	}
	r.cfg = c
	return c, nil
}

// Bind makes sure the repository belongs to the cluster systemID, writing
// the configuration at first use. WAL segment names of two clusters
// collide, so one repository holds one cluster.
func (r *Repository) Bind(ctx context.Context, systemID string, segSize uint64) error {
	for attempt := 0; attempt < 2; attempt++ {
		c, err := r.Config(ctx)
		if err == nil {
			if err := r.checkKey(c); err != nil {
				return err
			}
			if c.SystemID != systemID {
				return fmt.Errorf("%w: %s holds backups of cluster %s, and this server is cluster %s; use another repository (or prefix) for this cluster",
					ErrOtherCluster, r, c.SystemID, systemID)
			}
			if c.WALSegmentSize != segSize {
				return fmt.Errorf("%w: %s was created with WAL segment size %d, and this server uses %d", ErrOtherCluster, r, c.WALSegmentSize, segSize)
			}
			return r.checkImmutability(c)
		}
		if !errors.Is(err, providers.ErrNotExist) {
			return fmt.Errorf("read repository configuration of %s: %w", r, err)
		}
		cfg := &manifest.Repo{
			FormatVersion:  manifest.FormatVersion,
			SystemID:       systemID,
			WALSegmentSize: segSize,
			Created:        time.Now().UTC(),
		}
		var opts providers.PutOptions
		if r.lockWant != nil {
			// Never an unlocked object in an immutable repository: the
			// bucket must be able to lock before anything is written.
			if err := r.CheckLockSupport(ctx); err != nil {
				return err
			}
			cfg.FormatVersion = manifest.RepoFormatVersionImmutable
			cfg.Immutability = r.lockWant
			p, err := newLockPolicy(r.lockWant)
			if err != nil {
				return err
			}
			opts.Retention = providers.Retention{Mode: p.mode, Until: ceilSecond(time.Now().Add(p.period))}
		}
		if r.key != nil {
			cfg.Encryption = &manifest.RepoEncryption{Algorithm: encryption.Algorithm, KeyFingerprint: r.key.Fingerprint()}
			cfg.Encryption.ConfigMAC = r.configMAC(cfg)
		}
		data, err := manifest.EncodeRepo(cfg)
		if err != nil {
			return err
		}
		opts.IfAbsent = true
		err = r.raw.Put(ctx, RepoKey, bytes.NewReader(data), int64(len(data)), opts)
		if err == nil {
			return nil
		}
		if !errors.Is(err, providers.ErrExist) {
			return fmt.Errorf("initialise repository %s: %w", r, err)
		}
		// Another process initialised it first: check what it wrote.
	}
	return fmt.Errorf("initialise repository %s: configuration keeps changing", r)
}

// Backups returns every committed backup, oldest first. A backup exists
// only once its manifest does; leftovers of failed runs are not listed.
// It holds every manifest in memory; ForEachBackup does not.
func (r *Repository) Backups(ctx context.Context) ([]*manifest.Backup, error) {
	ids, err := r.BackupIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*manifest.Backup, len(ids))
	err = r.ForEachBackup(ctx, ids, func(i int, b *manifest.Backup) error {
		out[i] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BackupIDs lists the ids of the committed backups, oldest first, in one
// listing pass.
func (r *Repository) BackupIDs(ctx context.Context) ([]string, error) {
	var ids []string
	for obj, err := range r.store.List(ctx, BackupsPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list backups in %s: %w", r, err)
		}
		if id, ok := BackupIDFromKey(obj.Key); ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// HasBackup reports whether backup id is committed, i.e. whether its
// manifest is stored, asking the store now rather than trusting an
// earlier listing.
func (r *Repository) HasBackup(ctx context.Context, id string) (bool, error) {
	ok, err := r.has(ctx, BackupManifestKey(id))
	if err != nil {
		return false, fmt.Errorf("check whether backup %s is committed in %s: %w", id, r, err)
	}
	return ok, nil
}

// has reports whether an object is stored; a failure to tell is an error.
func (r *Repository) has(ctx context.Context, key string) (bool, error) {
	_, err := r.store.Stat(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, providers.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// manifestReaders is how many manifests are read at once: enough to hide
// a remote store's latency, few enough that memory stays a handful of
// manifests however many backups there are.
const manifestReaders = 8

// ForEachBackup reads the manifests of ids in parallel and calls fn with
// each one's index in ids; fn runs concurrently and must not keep the
// manifest unless it means to hold it in memory. The first error stops
// the rest.
func (r *Repository) ForEachBackup(ctx context.Context, ids []string, fn func(i int, b *manifest.Backup) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for i, id := range ids {
		g.Go(func() error {
			b, err := r.Backup(gctx, id)
			if err != nil {
				return err
			}
			return fn(i, b)
		})
	}
	return g.Wait()
}

// Backup reads one committed backup's manifest; id may be "latest".
func (r *Repository) Backup(ctx context.Context, id string) (*manifest.Backup, error) {
	return r.backup(ctx, id, manifest.DecodeFrom)
}

// BackupWithoutFiles is Backup without the file records (Files is nil),
// for callers that need only the chunks, the WAL or the totals: with many
// files it holds a fraction of the memory.
func (r *Repository) BackupWithoutFiles(ctx context.Context, id string) (*manifest.Backup, error) {
	return r.backup(ctx, id, manifest.DecodeFromWithoutFiles)
}

func (r *Repository) backup(ctx context.Context, id string, decode func(io.Reader) (*manifest.Backup, error)) (*manifest.Backup, error) {
	if id == "latest" || id == "" {
		var newest string
		for obj, err := range r.store.List(ctx, BackupsPrefix) {
			if err != nil {
				return nil, fmt.Errorf("list backups in %s: %w", r, err)
			}
			if bid, ok := BackupIDFromKey(obj.Key); ok && bid > newest {
				newest = bid
			}
		}
		if newest == "" {
			return nil, fmt.Errorf("%w: %s holds no committed backup", ErrNoBackup, r)
		}
		id = newest
	}
	if !manifest.ValidBackupID(id) {
		return nil, fmt.Errorf("%w: %q is not a backup id (expected e.g. 20261123T204651Z or latest)", ErrNoBackup, id)
	}
	// Streamed: with many files the manifest is tens of MB, and holding
	// its bytes next to the decoded backup doubled what a restore needs.
	rc, err := r.store.Get(ctx, BackupManifestKey(id), 0, -1)
	if errors.Is(err, providers.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no committed backup %s", ErrNoBackup, r, id)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s in %s: read manifest: %w", id, r, err)
	}
	defer rc.Close()
	b, err := decode(rc)
	if err != nil {
		return nil, fmt.Errorf("backup %s in %s: %w", id, r, err)
	}
	if b.ID != id {
		return nil, fmt.Errorf("backup %s in %s: manifest names backup %s", id, r, b.ID)
	}
	return b, nil
}

// PGManifest reads PostgreSQL's backup_manifest stored with a backup into
// memory and checks it against the hash recorded in pgstow's manifest.
// PGManifestTo and ParsePGManifest do not hold it.
func (r *Repository) PGManifest(ctx context.Context, b *manifest.Backup) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := r.PGManifestTo(ctx, b, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// PGManifestTo copies PostgreSQL's backup_manifest stored with a backup
// into w, hashing it on the way, and returns the number of bytes written.
// The hash is only known at the end: when it does not match the one
// recorded in pgstow's manifest the error wraps ErrCorrupt, and what was
// written must be thrown away.
func (r *Repository) PGManifestTo(ctx context.Context, b *manifest.Backup, w io.Writer) (int64, error) {
	rc, err := r.store.Get(ctx, PGManifestKey(b.ID), 0, -1)
	if err != nil {
		return 0, fmt.Errorf("backup %s: read backup_manifest: %w", b.ID, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), rc)
	if err != nil {
		return n, fmt.Errorf("backup %s: copy backup_manifest: %w", b.ID, err)
	}
	if err := r.checkPGManifestSum(b, h); err != nil {
		return n, err
	}
	return n, nil
}

// ParsePGManifest reads and parses PostgreSQL's backup_manifest stored
// with a backup, streaming it (manifest.ParsePGManifestFrom), and checks
// it against the hash recorded in pgstow's manifest.
func (r *Repository) ParsePGManifest(ctx context.Context, b *manifest.Backup) (*manifest.PGManifest, error) {
	rc, err := r.store.Get(ctx, PGManifestKey(b.ID), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("backup %s: read backup_manifest: %w", b.ID, err)
	}
	defer rc.Close()
	h := sha256.New()
	src := &recordingReader{r: rc}
	pg, perr := manifest.ParsePGManifestFrom(io.TeeReader(src, h))
	// The parser reads to the end whether or not it accepts, so unless
	// the read failed the hash is whole, and a mismatch is the clearer
	// message.
	if src.err != nil {
		return nil, fmt.Errorf("backup %s: read backup_manifest: %w", b.ID, src.err)
	}
	if err := r.checkPGManifestSum(b, h); err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, perr)
	}
	return pg, nil
}

// recordingReader keeps the first error other than io.EOF that r returned,
// for a caller whose consumer may not pass it on.
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && rr.err == nil {
		rr.err = err
	}
	return n, err
}

func (r *Repository) checkPGManifestSum(b *manifest.Backup, h hash.Hash) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != b.PGManifestSHA256 {
		return corruptf("backup %s: backup_manifest is corrupt (sha256 %s, manifest says %s)", b.ID, got, b.PGManifestSHA256)
	}
	return nil
}
