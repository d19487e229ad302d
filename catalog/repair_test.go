package catalog

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// refrained returns another LZ4 frame of the same size that decodes to
// the same content as frame, a frame of one block: the "independent
// blocks" flag, meaningless for one block, is flipped and the header
// checksum byte set to the one value the decoder accepts.
func reframed(t *testing.T, ref manifest.ChunkRef, frame []byte) []byte {
	t.Helper()
	out := bytes.Clone(frame)
	out[4] ^= 0x20
	hc := 6
	if out[4]&0x08 != 0 {
		hc += 8 // content size
	}
	dec := chunker.NewDecompressor()
	var raw bytes.Buffer
	for v := range 256 {
		out[hc] = byte(v)
		raw.Reset()
		if dec.Decompress(&raw, out, ref.ID) == nil {
			return out
		}
	}
	t.Fatalf("chunk %s: no header checksum makes the reframed chunk decode", ref.ID[:12])
	return nil
}

// overwrite replaces a stored object's bytes.
func overwrite(t *testing.T, s providers.Store, key string, data []byte) {
	t.Helper()
	deleteKey(t, s, key)
	putKey(t, s, key, data)
}

// TestRepairHeals damages one chunk at a time in each way verify can
// see, repairs, and takes the backup that made the chunk again: the
// repair must move exactly that chunk aside, name every backup that
// references it, and the next backup must make every one verify clean.
// The "still decodes" damage is seen only through the stored CRC32C, and
// the repair must leave it in place: restores read it correctly.
func TestRepairHeals(t *testing.T) {
	base := threeBackups(t)
	hasCRC := func(b *manifest.Backup) func(string) bool {
		return func(key string) bool {
			for _, c := range b.Archives[0].Chunks {
				if repository.ChunkKey(c.ID) == key {
					return c.StoredCRC32C != nil
				}
			}
			return false
		}
	}
	for _, tc := range []struct {
		name   string
		owner  int // the backup that uploaded the chunk, taken again
		pick   func(f *fixture) manifest.ChunkRef
		damage func(t *testing.T, f *fixture, ref manifest.ChunkRef)
		// want are the backups verify reports the chunk's damage in.
		want   []int
		detail string
		// intact: the content is right, so the repair leaves it.
		intact bool
	}{
		{
			name:  "bytes overwritten, in a chunk three backups share",
			owner: 0,
			pick: func(f *fixture) manifest.ChunkRef {
				return pickChunk(t, f.backups[0], "postgresql.auto.conf", referencedBy(f.backups))
			},
			damage: func(t *testing.T, f *fixture, ref manifest.ChunkRef) {
				key := repository.ChunkKey(ref.ID)
				data := readKey(t, f.store, key)
				for i := len(data) / 3; i < len(data)/3+16; i++ {
					data[i] ^= 0xff
				}
				overwrite(t, f.store, key, data)
			},
			want:   []int{0, 1, 2},
			detail: "is corrupt",
		},
		{
			name:  "still decodes, in a chunk of one backup",
			owner: 0,
			pick: func(f *fixture) manifest.ChunkRef {
				b := f.backups[0]
				ok := referencedBy([]*manifest.Backup{b}, f.backups[1], f.backups[2])
				return pickChunk(t, b, "base/1/1259", func(k string) bool { return ok(k) && hasCRC(b)(k) })
			},
			damage: func(t *testing.T, f *fixture, ref manifest.ChunkRef) {
				key := repository.ChunkKey(ref.ID)
				overwrite(t, f.store, key, reframed(t, ref, readKey(t, f.store, key)))
			},
			want:   []int{0},
			detail: "(it still decodes to the right content)",
			intact: true,
		},
		{
			name:  "still decodes, in a chunk two backups share, one with the CRC carried forward",
			owner: 1,
			pick: func(f *fixture) manifest.ChunkRef {
				b := f.backups[1]
				ok := referencedBy([]*manifest.Backup{b, f.backups[2]}, f.backups[0])
				return pickChunk(t, b, "base/1/1259", func(k string) bool { return ok(k) && hasCRC(b)(k) })
			},
			damage: func(t *testing.T, f *fixture, ref manifest.ChunkRef) {
				key := repository.ChunkKey(ref.ID)
				overwrite(t, f.store, key, reframed(t, ref, readKey(t, f.store, key)))
			},
			want:   []int{1, 2},
			detail: "(it still decodes to the right content)",
			intact: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			f := base.clone(t)
			ref := tc.pick(f)
			key := repository.ChunkKey(ref.ID)
			tc.damage(t, f, ref)

			vs, err := Verify(ctx, f.repo, f.ids(), VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vs {
				hit := slices.ContainsFunc(v.Problems, func(p Problem) bool {
					return p.Kind == CorruptChunk && p.Object == key && strings.Contains(p.Detail, tc.detail)
				})
				if hit != slices.Contains(tc.want, i) || len(v.Problems) != map[bool]int{true: 1}[hit] {
					t.Errorf("verify %d: problems %v; want one %s %s (%q) only in backups %v", i, v.Problems, CorruptChunk, key, tc.detail, tc.want)
				}
			}

			rep, err := Repair(ctx, f.repo, vs, RepairOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.intact {
				if len(rep.Quarantined) != 0 || !slices.Equal(rep.Intact, []string{key}) || len(rep.Sound)+len(rep.Gone) != 0 {
					t.Fatalf("repair report %+v; want %s left in place as intact, nothing quarantined", rep, key)
				}
				if _, err := f.store.Stat(ctx, key); err != nil {
					t.Fatalf("%s after the repair: %v, want it in place", key, err)
				}
				// Every backup still restores: the chunk decodes, and a
				// full verify goes on reporting only its stored bytes.
				dec := chunker.NewDecompressor()
				var buf []byte
				var raw bytes.Buffer
				data, err := f.repo.DownloadChunk(ctx, ref, &buf)
				if err == nil {
					err = f.repo.DecodeChunk(dec, ref, data, &raw)
				}
				if err != nil {
					t.Fatalf("%s after the repair: %v, want it to decode", key, err)
				}
				if q, err := f.repo.Quarantined(ctx, ref.ID); err != nil || q {
					t.Fatalf("a quarantined copy of %s: %v, %v; want none", key, q, err)
				}
				return
			}
			var want []string
			for _, i := range tc.want {
				want = append(want, f.backups[i].ID)
			}
			if len(rep.Quarantined) != 1 || rep.Quarantined[0].Chunk != key || !slices.Equal(rep.Quarantined[0].Unrestorable, want) ||
				!strings.HasPrefix(rep.Quarantined[0].To, repository.QuarantinePrefix) || len(rep.Sound)+len(rep.Gone) != 0 {
				t.Fatalf("repair report %+v; want %s quarantined, unrestorable %v", rep, key, want)
			}
			if _, err := f.store.Stat(ctx, key); !errors.Is(err, providers.ErrNotExist) {
				t.Fatalf("%s after the repair: %v, want gone", key, err)
			}
			vs, err = Verify(ctx, f.repo, f.ids(), VerifyOptions{Quick: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vs {
				if v.OK == slices.Contains(tc.want, i) {
					t.Errorf("quick verify %d after the repair: %v", i, v.Problems)
				}
			}

			// The next backup of the same content uploads the chunk again.
			spec := []backupSpec{{seed: 1, firstSeg: 3, segs: 2}, {seed: 2, firstSeg: 5, segs: 1}}[tc.owner]
			f.commit(t, spec)
			vs, err = Verify(ctx, f.repo, f.ids(), VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vs {
				checkClean(t, f.backups[i], "full", v)
			}
			if q, err := f.repo.Quarantined(ctx, ref.ID); err != nil || !q {
				t.Errorf("the quarantined copy of %s: %v, %v", key, q, err)
			}
		})
	}
}

// Repair moves only what is still damaged when it looks again under the
// lock, and nothing for problems it cannot mend.
func TestRepairRechecks(t *testing.T) {
	ctx := t.Context()
	f := threeBackups(t).clone(t)
	b := f.backups[0]
	bad := pickChunk(t, b, "base/1/1259", referencedBy([]*manifest.Backup{b}, f.backups[1], f.backups[2]))
	missing := pickChunk(t, f.backups[2], "global/pg_control", referencedBy([]*manifest.Backup{f.backups[2]}, f.backups[0], f.backups[1]))
	good := readKey(t, f.store, repository.ChunkKey(bad.ID))
	broken := bytes.Clone(good)
	broken[len(broken)/2] ^= 1
	overwrite(t, f.store, repository.ChunkKey(bad.ID), broken)
	deleteKey(t, f.store, repository.ChunkKey(missing.ID))
	vs, err := Verify(ctx, f.repo, f.ids(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].OK || vs[2].OK {
		t.Fatalf("verify did not see the damage: %+v", vs)
	}
	// Mended between the verification and the repair.
	overwrite(t, f.store, repository.ChunkKey(bad.ID), good)
	rep, err := Repair(ctx, f.repo, vs, RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quarantined) != 0 || !slices.Equal(rep.Sound, []string{repository.ChunkKey(bad.ID)}) {
		t.Fatalf("repair report %+v; want nothing moved, %s sound", rep, repository.ChunkKey(bad.ID))
	}
	if locks, err := f.repo.Locks(ctx); err != nil || len(locks) != 0 {
		t.Fatalf("locks left after the repair: %v, %v", locks, err)
	}
}

// Repair waits for a delete or gc at most LockWait, then fails with
// ErrLocked and moves nothing.
func TestRepairLocked(t *testing.T) {
	ctx := t.Context()
	f := threeBackups(t).clone(t)
	ref := pickChunk(t, f.backups[0], "base/1/1259", referencedBy([]*manifest.Backup{f.backups[0]}))
	key := repository.ChunkKey(ref.ID)
	data := readKey(t, f.store, key)
	data[len(data)/2] ^= 1
	overwrite(t, f.store, key, data)
	vs, err := Verify(ctx, f.repo, f.ids()[:1], VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gc, err := f.repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{Command: "gc"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Release(ctx)
	_, err = Repair(ctx, f.repo, vs, RepairOptions{LockWait: 100 * time.Millisecond})
	if !errors.Is(err, repository.ErrLocked) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("repair under another prune's lock: %v, want ErrLocked in one line", err)
	}
	if got := readKey(t, f.store, key); !bytes.Equal(got, data) {
		t.Fatal("the damaged chunk moved without the lock")
	}
}

// A chunk quarantined and uploaded again by a backup built with another
// encoder has another frame, of another size: the backups before it,
// whose manifests record the old size and CRC32C, must still read it,
// verify clean and keep it through a repair, even one given a record of
// the chunk that does not read it (a wrong raw size) before one that does.
func TestRepairKeepsChunkFramedByAnotherEncoder(t *testing.T) {
	ctx := t.Context()
	f := threeBackups(t).clone(t)
	b := f.backups[0]
	ref := pickChunk(t, b, "base/1/1259", referencedBy([]*manifest.Backup{b}, f.backups[1], f.backups[2]))
	key := repository.ChunkKey(ref.ID)
	dec := chunker.NewDecompressor()
	var raw bytes.Buffer
	if err := dec.Decompress(&raw, readKey(t, f.store, key), ref.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.QuarantineChunk(ctx, ref.ID); err != nil {
		t.Fatal(err)
	}
	var frame bytes.Buffer
	w := lz4.NewWriter(&frame)
	if err := w.Apply(lz4.BlockChecksumOption(true), lz4.ChecksumOption(true), lz4.CompressionLevelOption(lz4.Level9)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(frame.Len()) == ref.StoredSize {
		t.Fatal("the other frame has the recorded size: the test sees nothing")
	}
	putKey(t, f.store, key, frame.Bytes())

	var buf []byte
	var got bytes.Buffer
	data, err := f.repo.DownloadChunk(ctx, ref, &buf)
	if err == nil {
		err = f.repo.DecodeChunk(dec, ref, data, &got)
	}
	if err != nil || !bytes.Equal(got.Bytes(), raw.Bytes()) {
		t.Fatalf("the older backup's record of %s reads the new upload: %v", key, err)
	}
	for _, quick := range []bool{false, true} {
		vs, err := Verify(ctx, f.repo, f.ids(), VerifyOptions{Quick: quick})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			checkClean(t, f.backups[i], v.Mode, v)
		}
	}

	wrong := ref
	wrong.RawSize++
	rep, err := Repair(ctx, f.repo, []Verdict{{ID: b.ID, suspect: []manifest.ChunkRef{wrong}}, {ID: b.ID, suspect: []manifest.ChunkRef{ref}}}, RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quarantined)+len(rep.Intact) != 0 || !slices.Equal(rep.Sound, []string{key}) {
		t.Fatalf("repair report %+v; want %s left in place as sound", rep, key)
	}
	if !bytes.Equal(readKey(t, f.store, key), frame.Bytes()) {
		t.Fatal("the repair moved the new upload")
	}
}
