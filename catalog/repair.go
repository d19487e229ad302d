package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// RepairOptions tune Repair.
type RepairOptions struct {
	// LockWait is how long to wait for a delete or gc to finish.
	LockWait time.Duration
	// LeaseTTL is the prune lock's TTL (repository.DefaultLeaseTTL).
	LeaseTTL time.Duration
	Log      *slog.Logger
}

// QuarantinedChunk is one damaged chunk Repair moved aside.
type QuarantinedChunk struct {
	Chunk string `json:"chunk"`          // its key, now free
	To    string `json:"quarantined_as"` // where its bytes are
	// Removed is set in an immutable repository, where a damaged chunk
	// is deleted (once its lock has expired) rather than copied aside:
	// To is then empty.
	Removed bool `json:"removed,omitempty"`
	// Unrestorable are the committed backups that reference it: they
	// cannot be restored until a backup stores the chunk again.
	Unrestorable []string `json:"unrestorable"`
}

// RepairReport says what Repair did.
type RepairReport struct {
	Quarantined []QuarantinedChunk `json:"quarantined"`
	// Intact are chunks whose stored bytes differ from those recorded
	// (size or CRC32C) but still decode to the right content: restores
	// read them correctly, so they are left in place, since moving them
	// would leave every backup that references them unrestorable.
	Intact []string `json:"intact,omitempty"`
	// Sound are chunks verify found damaged that were fine when
	// checked again under the lock (replaced since), left in place.
	Sound []string `json:"sound,omitempty"`
	// Gone are chunks that had disappeared by then (another repair).
	Gone []string `json:"gone,omitempty"`
	// RunningBackups are the backups that held a lease during the
	// quarantine: one that deduplicated against a damaged chunk before
	// it moved commits a reference to it, healed like the others by the
	// next backup that stores the chunk.
	RunningBackups []string `json:"running_backups,omitempty"`
	// RunningRestores are the restores that held a lease meanwhile: one
	// that needs a quarantined chunk fails, as it would have on the
	// damaged copy.
	RunningRestores []string `json:"running_restores,omitempty"`
	// Unchecked are backups whose manifest could not be read while
	// looking for the ones a quarantined chunk breaks.
	Unchecked []string `json:"unchecked,omitempty"`
	// Locked are damaged chunks of an immutable repository that stay
	// because they are locked: a repair after the lock ends removes
	// them; until then backups that deduplicate against them reference
	// the damaged copy.
	Locked []LockedObject `json:"locked,omitempty"`
}

// Repair moves aside, under repository.QuarantinePrefix, every chunk the
// verdicts found damaged in content (undecodable, a bad LZ4 checksum,
// content that does not hash to its id, the wrong raw size), so that the
// next backup that cuts the same content uploads it again and with that
// heals every backup that references it. A chunk whose stored bytes
// differ from those recorded but still decode to the right content is
// reported and left in place: restores read it correctly, and moving it
// would make restorable backups unrestorable. Missing chunks and chunks
// that could not be read (a store failure) are left to the operator.
//
// Verify runs without a lock; Repair takes the prune lock only for the
// quarantine, so a long verification holds back neither backups nor
// deletes. Under the lock each chunk is downloaded and checked again, and
// moved only if still damaged: between the verification and the lock,
// another repair and a backup may have replaced it with a sound copy.
// Running backups are not waited for: a backup that already found a
// damaged chunk references it whether it stays or not, and one that looks
// after the quarantine uploads it again.
func Repair(ctx context.Context, repo *repository.Repository, verdicts []Verdict, o RepairOptions) (*RepairReport, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	rep := &RepairReport{}
	// Every record of each suspect chunk, as the backups verified have
	// it: the chunk stays if any of them reads it correctly.
	var order []string
	records := map[string][]manifest.ChunkRef{}
	for _, v := range verdicts {
		for _, ref := range v.suspect {
			if _, ok := records[ref.ID]; !ok {
				order = append(order, ref.ID)
			}
			if !slices.ContainsFunc(records[ref.ID], func(r manifest.ChunkRef) bool { return sameRecord(r, ref) }) {
				records[ref.ID] = append(records[ref.ID], ref)
			}
		}
	}
	if len(order) == 0 {
		return rep, nil
	}
	moved, err := quarantine(ctx, repo, order, records, o, rep)
	if err != nil || len(moved) == 0 {
		return rep, err
	}
	// Which backups the quarantine leaves unrestorable: every one that
	// references a chunk moved, not only those verified.
	ids, err := repo.BackupIDs(ctx)
	if err != nil {
		return rep, fmt.Errorf("repair: find the backups the quarantined chunks break: %w", err)
	}
	for _, id := range ids {
		b, err := repo.Backup(ctx, id)
		if err != nil {
			o.Log.Warn("cannot read a manifest to see whether the quarantined chunks break it", "backup", id, "error", err)
			rep.Unchecked = append(rep.Unchecked, id)
			continue
		}
		for _, a := range b.Archives {
			for _, c := range a.Chunks {
				if i, ok := moved[c.ID]; ok && !slices.Contains(rep.Quarantined[i].Unrestorable, id) {
					rep.Quarantined[i].Unrestorable = append(rep.Quarantined[i].Unrestorable, id)
				}
			}
		}
	}
	return rep, nil
}

// sameRecord tells whether two records of a chunk say the same about it.
func sameRecord(a, b manifest.ChunkRef) bool {
	crc := func(r manifest.ChunkRef) int64 {
		if r.StoredCRC32C == nil {
			return -1
		}
		return int64(*r.StoredCRC32C)
	}
	return a.RawSize == b.RawSize && a.StoredSize == b.StoredSize && crc(a) == crc(b)
}

// quarantine moves the chunks still damaged under the prune lock, and
// returns the index in rep.Quarantined of each chunk id moved.
func quarantine(ctx context.Context, repo *repository.Repository, order []string, records map[string][]manifest.ChunkRef, o RepairOptions, rep *RepairReport) (map[string]int, error) {
	lock, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{
		Command: "verify --repair", TTL: o.LeaseTTL, Wait: o.LockWait, Log: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	defer lock.Release(ctx)
	for _, h := range lock.Others() {
		if h.Kind == repository.LockRestore {
			rep.RunningRestores = append(rep.RunningRestores, h.String())
		} else {
			rep.RunningBackups = append(rep.RunningBackups, h.String())
		}
	}
	moved := map[string]int{} // chunk id → index in rep.Quarantined
	dec := chunker.NewDecompressor()
	var buf []byte
	var raw bytes.Buffer
	for _, id := range order {
		key := repository.ChunkKey(id)
		state, err := recheck(ctx, repo, dec, records[id], &buf, &raw)
		switch {
		case errors.Is(err, providers.ErrNotExist):
			rep.Gone = append(rep.Gone, key)
			continue
		case err != nil:
			return moved, fmt.Errorf("repair: check %s again: %w", key, err)
		case state == chunkSound:
			rep.Sound = append(rep.Sound, key)
			continue
		case state == chunkIntact:
			o.Log.Warn("chunk left in place: its content is intact, its stored bytes differ from those recorded", "chunk", key)
			rep.Intact = append(rep.Intact, key)
			continue
		}
		// A prune that stalled past its lease stops before it changes
		// anything: a delete or gc may have started meanwhile.
		if err := lock.Held(); err != nil {
			return moved, fmt.Errorf("repair: %w", err)
		}
		to, err := repo.QuarantineChunk(ctx, id)
		var le *providers.LockedError
		switch {
		case errors.Is(err, providers.ErrNotExist):
			rep.Gone = append(rep.Gone, key)
			continue
		case errors.As(err, &le):
			o.Log.Warn("damaged chunk is locked: it stays until a repair after its lock ends", "chunk", key, "until", le.Until)
			lo := LockedObject{Key: key, Mode: string(le.Mode), Hold: le.Hold}
			if !le.Until.IsZero() {
				u := le.Until.UTC()
				lo.Until = &u
			}
			rep.Locked = append(rep.Locked, lo)
			continue
		case err != nil:
			return moved, fmt.Errorf("repair: %w", err)
		}
		o.Log.Info("damaged chunk quarantined", "chunk", key, "to", to)
		moved[id] = len(rep.Quarantined)
		rep.Quarantined = append(rep.Quarantined, QuarantinedChunk{Chunk: key, To: to, Removed: to == "", Unrestorable: []string{}})
	}
	return moved, nil
}

// chunkState is what checking a chunk again under the lock found.
type chunkState int

const (
	chunkDamaged chunkState = iota // no record of it reads right content
	chunkIntact                    // right content, other bytes than recorded
	chunkSound                     // as recorded, or a later upload
)

// recheck downloads and checks a chunk as a full verify does, against
// every record of it: it is damaged only if none of them decodes it to the
// right content, since a backup that reads it correctly must stay
// restorable. An error is a chunk that could not be read (ErrNotExist
// when missing).
func recheck(ctx context.Context, repo *repository.Repository, dec *chunker.Decompressor, refs []manifest.ChunkRef, buf *[]byte, raw *bytes.Buffer) (chunkState, error) {
	state := chunkDamaged
	for _, ref := range refs {
		data, err := repo.DownloadChunk(ctx, ref, buf)
		if err == nil {
			err = repo.DecodeChunk(dec, ref, data, raw)
		}
		switch {
		case errors.Is(err, repository.ErrCorrupt):
			continue
		case err != nil:
			return state, err
		}
		if repository.CheckStoredCRC(ref, data) == nil {
			return chunkSound, nil
		}
		state = chunkIntact
	}
	if state == chunkIntact {
		// A later upload after a quarantine may be framed differently
		// from what older backups recorded.
		replaced, err := repo.Quarantined(ctx, refs[0].ID)
		if err != nil {
			return state, err
		}
		if replaced {
			return chunkSound, nil
		}
	}
	return state, nil
}
