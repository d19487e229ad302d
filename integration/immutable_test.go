package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
	"github.com/pgstow/pgstow/providers/s3"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// immutableRetention is short so the test sees locks expire; the
// headroom on chunks and WAL is a quarter of it (docs/immutability.md).
const immutableRetention = 20 * time.Second

// pruneJSON is what the test reads of delete/gc --json.
type pruneJSON struct {
	Backups []struct {
		ID     string `json:"id"`
		Keep   bool   `json:"keep"`
		Locked bool   `json:"locked"`
	} `json:"backups"`
	Manifests, Chunks, WAL struct {
		Count int `json:"count"`
	}
	Locked struct {
		Count   int `json:"count"`
		Objects []struct {
			Key   string     `json:"key"`
			Until *time.Time `json:"until"`
		} `json:"objects"`
	} `json:"locked"`
}

// TestImmutableRepository: backups into a MinIO bucket with Object Lock,
// in governance and in compliance mode. Every object but the leases is
// written locked; delete --retain-last 1 and gc succeed while the locks
// hold, report what is locked and remove none of it; once the locks
// expire the same commands remove it; every kept backup restores
// throughout; and no delete marker or older version is left behind.
func TestImmutableRepository(t *testing.T) {
	t.Parallel()
	srv := testserver.StartMinIO(t)
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	want := seedBeforeBackup(t, c)
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=" + srv.Region}

	for _, mode := range []providers.LockMode{providers.LockGovernance, providers.LockCompliance} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			bucket := srv.NewLockedBucket(t)
			repoURL := fmt.Sprintf("s3://%s/repo?endpoint=%s&path_style=true", bucket, srv.Endpoint)
			store, err := s3.Open(t.Context(), s3.Config{Bucket: bucket, Prefix: "repo", Region: srv.Region, Endpoint: srv.Endpoint,
				PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			cli := func(args ...string) cliResult {
				t.Helper()
				return runCLI(t, 3*time.Minute, env, append(args, "--repo", repoURL)...)
			}

			if r := cli("repo", "check"); r.code != 0 || !strings.Contains(r.stdout, "object lock      yes") {
				t.Fatalf("repo check of a new locked bucket: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			lockArgs := []string{"--lock-mode", string(mode), "--lock-retention", immutableRetention.String()}
			var ids []string
			for i := range 3 {
				args := []string{"backup", "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB"}
				if i == 0 {
					args = append(args, lockArgs...) // later ones read pgstow.json
				}
				r := cli(args...)
				m := committedRE.FindStringSubmatch(r.stdout)
				if r.code != 0 || m == nil {
					t.Fatalf("backup %d: exit %d\n%s\n%s", i, r.code, r.stdout, r.stderr)
				}
				ids = append(ids, m[1])
			}
			other := providers.LockGovernance
			if mode == other {
				other = providers.LockCompliance
			}
			r := cli("backup", "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--lock-mode", string(other), "--lock-retention", immutableRetention.String())
			if r.code == 0 || !strings.Contains(r.stderr, "--lock-mode "+string(other)) || !strings.Contains(r.stderr, "says mode "+string(mode)) {
				t.Fatalf("backup with lock flags that contradict pgstow.json: exit %d\n%s", r.code, r.stderr)
			}
			if r := cli("repo", "check", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"immutable": true`) {
				t.Fatalf("repo check of the immutable repository: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}

			// Every object but the leases is locked, in the mode asked for,
			// and each backup's objects at least as long as its manifest.
			repo := repository.New(store)
			lastLock := checkAllLocked(t, store, mode)
			for _, id := range ids {
				b, err := repo.Backup(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				checkBackupLocked(t, store, b)
			}

			// While everything is locked: delete and gc succeed, report,
			// and remove nothing.
			before := objectKeys(t, store)
			var dj pruneJSON
			r = cli("delete", "--retain-last", "1", "--json")
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &dj) != nil {
				t.Fatalf("delete --retain-last 1 while locked: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if dj.Locked.Count != 2 || dj.Manifests.Count != 0 || dj.Chunks.Count != 0 || dj.WAL.Count != 0 ||
				!dj.Backups[0].Locked || !dj.Backups[1].Locked || !dj.Backups[2].Keep {
				t.Fatalf("delete while locked reported %s", r.stdout)
			}
			for _, o := range dj.Locked.Objects {
				if o.Until == nil || !o.Until.After(time.Now()) {
					t.Errorf("locked %s reported until %v", o.Key, o.Until)
				}
			}
			if r := cli("delete", "--retain-last", "1"); r.code != 0 || !strings.Contains(r.stdout, "locked object(s)") {
				t.Fatalf("delete (text) while locked: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if r := cli("gc", "--grace", "0s", "--json"); r.code != 0 {
				t.Fatalf("gc while locked: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if after := objectKeys(t, store); !slices.Equal(before, after) {
				t.Fatalf("objects changed while locked:\nbefore %v\nafter  %v", before, after)
			}
			for _, id := range ids {
				restoreAndCheck(t, repo, id, want)
			}

			// After the locks expire, the same commands remove what the
			// newest backup does not need.
			providertest.WaitUnlocked(t, store, lastLock.Add(time.Second))
			dj = pruneJSON{}
			r = cli("delete", "--retain-last", "1", "--json")
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &dj) != nil {
				t.Fatalf("delete after expiry: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if dj.Locked.Count != 0 || dj.Manifests.Count == 0 {
				t.Fatalf("delete after expiry reported %s", r.stdout)
			}
			if r := cli("gc", "--grace", "0s"); r.code != 0 || strings.Contains(r.stdout, "locked") {
				t.Fatalf("gc after expiry: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			got, err := repo.BackupIDs(t.Context())
			if err != nil || !slices.Equal(got, ids[2:]) {
				t.Fatalf("backups after expiry: %v, %v; want %v", got, err, ids[2:])
			}
			b, err := repo.Backup(t.Context(), ids[2])
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids[:2] {
				for _, k := range objectKeys(t, store) {
					if strings.HasPrefix(k, repository.BackupsPrefix+id) {
						t.Errorf("%s of a deleted backup is left", k)
					}
				}
			}
			restoreAndCheck(t, repo, ids[2], want)

			// Nothing left behind: no delete markers, and every version is
			// the current one of an object that exists.
			current := map[string]bool{}
			for _, k := range objectKeys(t, store) {
				current["repo/"+k] = true
			}
			for _, v := range srv.Versions(t, bucket, "repo/") {
				if v.DeleteMarker || !v.Latest || !current[v.Key] {
					t.Errorf("left behind: %+v", v)
				}
			}
			checkBackupLocked(t, store, b)
		})
	}
}

// objectKeys lists every object of the repository but the leases.
func objectKeys(t *testing.T, s providers.Store) []string {
	t.Helper()
	var keys []string
	for obj, err := range s.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(obj.Key, repository.LocksPrefix) {
			keys = append(keys, obj.Key)
		}
	}
	return keys
}

// checkAllLocked checks that every object but the leases is locked in
// mode, and returns when the last lock ends.
func checkAllLocked(t *testing.T, s *s3.Store, mode providers.LockMode) time.Time {
	t.Helper()
	var last time.Time
	for _, k := range objectKeys(t, s) {
		ret, err := s.Retention(t.Context(), k)
		if err != nil || ret.Mode != mode || !ret.Until.After(time.Now()) {
			t.Fatalf("%s: lock %+v, %v; want %s in the future", k, ret, err, mode)
		}
		if ret.Until.After(last) {
			last = ret.Until
		}
	}
	return last
}

// checkBackupLocked checks that every chunk and WAL segment of b is locked
// at least as long as its manifest, as its recorded dates say.
func checkBackupLocked(t *testing.T, s *s3.Store, b *manifest.Backup) {
	t.Helper()
	if b.Retention == nil {
		t.Fatalf("backup %s records no lock dates", b.ID)
	}
	mret, err := s.Retention(t.Context(), repository.BackupManifestKey(b.ID))
	if err != nil || !mret.Until.Equal(b.Retention.Until) {
		t.Fatalf("manifest of %s locked %+v, %v; recorded %s", b.ID, mret, err, b.Retention.Until)
	}
	keys := []string{repository.PGManifestKey(b.ID)}
	for id := range chunkRefs(b) {
		keys = append(keys, repository.ChunkKey(id))
	}
	for _, w := range b.WAL {
		keys = append(keys, repository.WALKey(w.Name))
	}
	for _, k := range keys {
		ret, err := s.Retention(t.Context(), k)
		if err != nil || ret.Until.Before(b.Retention.Until) {
			t.Fatalf("%s of backup %s locked %+v, %v: less than the manifest's %s", k, b.ID, ret, err, b.Retention.Until)
		}
	}
}

// restoreAndCheck restores backup id and checks it with pg_verifybackup,
// by starting it and by its data.
func restoreAndCheck(t *testing.T, repo *repository.Repository, id, want string) {
	t.Helper()
	target := filepath.Join(pgtest.TempDir(t), "data-"+id)
	if _, err := restore.Run(t.Context(), repo, restore.Options{BackupID: id, Target: target, Log: testLogger(t)}); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	r := restoreChecks(t, 15, target)
	if got := fingerprint(t, r); got != want {
		t.Fatalf("backup %s restored %s, want %s", id, got, want)
	}
	r.Stop(t)
}
