package catalog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// TestPruneLocked checks delete and gc in an immutable repository: locked
// objects are reported, not failures; a backup whose manifest is locked
// stays whole with everything it needs; once the locks expire, the same
// commands remove them.
func TestPruneLocked(t *testing.T) {
	ctx := t.Context()
	s := mem.NewLocking()
	var clock time.Time // zero: the real time
	s.SetClock(func() time.Time {
		if clock.IsZero() {
			return time.Now()
		}
		return clock
	})
	repo := repository.New(s)
	if err := repo.SetImmutability(providers.LockCompliance, time.Hour); err != nil {
		t.Fatal(err)
	}
	var backups []*manifest.Backup
	for i, id := range []string{"20260102T030405Z", "20260102T040405Z", "20260102T050405Z"} {
		b, _ := repotest.Commit(t, repo, repotest.Spec{
			ID:           id,
			Archives:     []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(uint64(10 * (i + 1)))}},
			StartSegment: uint64(3 + 2*i), Segments: 2,
			Finished: repotest.BaseTime.Add(time.Duration(i+1) * time.Hour),
		})
		backups = append(backups, b)
	}
	before := s.Keys()
	var opts PruneOptions

	// Dry run: the two old backups would stay, locked, as the manifests'
	// recorded dates tell.
	rep, err := Delete(ctx, repo, Retention{RetainLast: 1}, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Locked.Count != 2 || rep.Manifests.Count != 0 || rep.Chunks.Count != 0 || rep.WAL.Count != 0 {
		t.Fatalf("dry run: %+v", rep)
	}

	rep, err = Delete(ctx, repo, Retention{RetainLast: 1}, opts)
	if err != nil {
		t.Fatalf("delete in a locked repository: %v", err)
	}
	if rep.Locked.Count != 2 || rep.Manifests.Count != 0 || rep.Chunks.Count != 0 || rep.WAL.Count != 0 {
		t.Fatalf("delete removed something locked or needed: %+v", rep)
	}
	for _, o := range rep.Locked.Objects {
		if o.Until == nil || o.Until.Before(time.Now().Add(59*time.Minute)) {
			t.Errorf("locked %s reported until %v", o.Key, o.Until)
		}
	}
	for _, d := range rep.Backups[:2] {
		if d.Keep || !d.Locked {
			t.Errorf("decision %+v: want not kept, locked", d)
		}
	}
	for _, k := range before {
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("%s removed by a delete in a locked repository: %v", k, err)
		}
	}
	ids, err := repo.BackupIDs(ctx)
	if err != nil || len(ids) != 3 {
		t.Fatalf("backups after a locked delete: %v, %v", ids, err)
	}
	for _, b := range backups {
		if _, err := repo.Backup(ctx, b.ID); err != nil {
			t.Fatalf("backup %s unreadable: %v", b.ID, err)
		}
	}

	// After the locks expire (the store's clock moves on), delete and
	// gc remove everything the kept backup does not need.
	clock = time.Now().Add(3 * time.Hour)
	rep, err = Delete(ctx, repo, Retention{RetainLast: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Locked.Count != 0 || rep.Manifests.Count == 0 || rep.Chunks.Count == 0 {
		t.Fatalf("delete after expiry: %+v", rep)
	}
	rep, err = GC(ctx, repo, opts)
	if err != nil || rep.Locked.Count != 0 {
		t.Fatalf("gc after expiry: %+v, %v", rep, err)
	}
	ids, err = repo.BackupIDs(ctx)
	if err != nil || len(ids) != 1 || ids[0] != backups[2].ID {
		t.Fatalf("backups after expiry: %v, %v", ids, err)
	}
	for _, a := range backups[2].Archives {
		for _, c := range a.Chunks {
			if _, err := s.Stat(ctx, repository.ChunkKey(c.ID)); err != nil {
				t.Fatalf("a chunk the kept backup needs is gone: %v", err)
			}
		}
	}
}

// TestGCReportsLocked checks that gc reports unreferenced objects that
// are still locked and goes on.
func TestGCReportsLocked(t *testing.T) {
	ctx := t.Context()
	s := mem.NewLocking()
	repo := repository.New(s)
	if err := repo.SetImmutability(providers.LockGovernance, time.Hour); err != nil {
		t.Fatal(err)
	}
	repotest.Commit(t, repo, repotest.Spec{ID: "20260102T030405Z", Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	orphan := repotest.PutChunk(t, repo, repotest.PseudoRandom(99, 5000))
	rep, err := GC(ctx, repo, PruneOptions{})
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	if rep.Locked.Count != 1 || rep.Locked.Objects[0].Key != repository.ChunkKey(orphan.ID) || rep.Chunks.Count != 0 {
		t.Fatalf("gc report: %+v", rep)
	}
	if _, err := s.Stat(ctx, repository.ChunkKey(orphan.ID)); err != nil {
		t.Fatalf("locked orphan: %v", err)
	}
	if err := s.Delete(ctx, repository.ChunkKey(orphan.ID)); !errors.Is(err, providers.ErrLocked) {
		t.Fatalf("orphan not locked: %v", err)
	}
}

// TestRepairImmutable checks verify --repair in an immutable repository: a
// damaged chunk is never copied aside; while locked it stays and is
// reported, and once its lock ends it is removed outright.
func TestRepairImmutable(t *testing.T) {
	ctx := t.Context()
	s := mem.NewLocking()
	var clock time.Time
	s.SetClock(func() time.Time {
		if clock.IsZero() {
			return time.Now()
		}
		return clock
	})
	repo := repository.New(s)
	if err := repo.SetImmutability(providers.LockGovernance, time.Hour); err != nil {
		t.Fatal(err)
	}
	b, _ := repotest.Commit(t, repo, repotest.Spec{ID: "20260102T030405Z", Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	key := repository.ChunkKey(b.Archives[0].Chunks[0].ID)
	s.Corrupt(key, 20)

	for _, expired := range []bool{false, true} {
		if expired {
			clock = time.Now().Add(3 * time.Hour)
		}
		vs, err := Verify(ctx, repo, []string{b.ID}, VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Repair(ctx, repo, vs, RepairOptions{})
		if err != nil {
			t.Fatalf("repair (lock expired: %v): %v", expired, err)
		}
		_, statErr := s.Stat(ctx, key)
		switch {
		case !expired && (len(rep.Locked) != 1 || rep.Locked[0].Key != key || len(rep.Quarantined) != 0 || statErr != nil):
			t.Fatalf("repair of a locked chunk: %+v, stat %v", rep, statErr)
		case expired && (len(rep.Quarantined) != 1 || !rep.Quarantined[0].Removed || !errors.Is(statErr, providers.ErrNotExist)):
			t.Fatalf("repair after the lock ended: %+v, stat %v", rep, statErr)
		}
		for _, k := range s.Keys() {
			if strings.HasPrefix(k, repository.QuarantinePrefix) {
				t.Fatalf("a copy was made in an immutable repository: %s", k)
			}
		}
	}
}
