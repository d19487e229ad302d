package restore

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestShellQuote runs each quoted word through /bin/sh, as PostgreSQL
// runs restore_command, and checks that it comes back unchanged.
func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "with space", "it's", "''", `a"b`, "$HOME `id` $(id) ; | & \\ *", "line\nbreak"} {
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+ShellQuote(s)).Output()
		if err != nil {
			t.Fatalf("sh with %q: %v", s, err)
		}
		if string(out) != s {
			t.Errorf("ShellQuote(%q) read back by sh as %q", s, out)
		}
	}
}

func TestFetchCommand(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct {
		name, self, repo, keyFile string
		allowShared               bool
		restore, probe            string
	}{
		{
			name: "plain", self: "/usr/bin/pgstow", repo: "file:///var/backups/pg",
			restore: "'/usr/bin/pgstow' wal-fetch --repo 'file:///var/backups/pg' %f %p",
			probe:   "'/usr/bin/pgstow' show --quiet --repo 'file:///var/backups/pg' latest",
		},
		{
			name: "quotes", self: "/opt/it's/pgstow", repo: "s3://b/p?endpoint=http://h:9000&path_style=true",
			restore: `'/opt/it'\''s/pgstow' wal-fetch --repo 's3://b/p?endpoint=http://h:9000&path_style=true' %f %p`,
			probe:   `'/opt/it'\''s/pgstow' show --quiet --repo 's3://b/p?endpoint=http://h:9000&path_style=true' latest`,
		},
		{
			name: "absolute key file", self: "/usr/bin/pgstow", repo: "file:///r", keyFile: "/etc/pgstow/key",
			restore: "'/usr/bin/pgstow' wal-fetch --repo 'file:///r' --encryption-key-file '/etc/pgstow/key' %f %p",
			probe:   "'/usr/bin/pgstow' show --quiet --repo 'file:///r' --encryption-key-file '/etc/pgstow/key' latest",
		},
		{
			// The server runs in its data directory, not ours.
			name: "relative key file", self: "/usr/bin/pgstow", repo: "file:///r", keyFile: "keys/k",
			restore: "'/usr/bin/pgstow' wal-fetch --repo 'file:///r' --encryption-key-file '" + filepath.Join(dir, "keys/k") + "' %f %p",
			probe:   "'/usr/bin/pgstow' show --quiet --repo 'file:///r' --encryption-key-file '" + filepath.Join(dir, "keys/k") + "' latest",
		},
		{
			name: "shared key file", self: "/usr/bin/pgstow", repo: "file:///r", keyFile: "/k", allowShared: true,
			restore: "'/usr/bin/pgstow' wal-fetch --repo 'file:///r' --encryption-key-file '/k' --allow-shared-key-file %f %p",
			probe:   "'/usr/bin/pgstow' show --quiet --repo 'file:///r' --encryption-key-file '/k' --allow-shared-key-file latest",
		},
		{
			// Without a key there is nothing to accept.
			name: "shared without key", self: "/usr/bin/pgstow", repo: "file:///r", allowShared: true,
			restore: "'/usr/bin/pgstow' wal-fetch --repo 'file:///r' %f %p",
			probe:   "'/usr/bin/pgstow' show --quiet --repo 'file:///r' latest",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := NewFetchCommand(tc.self, tc.repo, tc.keyFile, tc.allowShared)
			if err != nil {
				t.Fatal(err)
			}
			if got := fc.RestoreCommand(); got != tc.restore {
				t.Errorf("RestoreCommand() = %s\nwant               %s", got, tc.restore)
			}
			if got := fc.Probe(); got != tc.probe {
				t.Errorf("Probe() = %s\nwant      %s", got, tc.probe)
			}
		})
	}
}

func TestMemoryBudget(t *testing.T) {
	const chunk = 8 << 20 // uploader.DefaultChunkSize
	t.Run("GOMAXPROCS=2", func(t *testing.T) {
		setMaxProcs(t, 2)
		for _, tc := range []struct {
			concurrency int
			want        int64
		}{
			{0, (DefaultConcurrency + 2 + 2 + fetchCacheChunks) * chunk},
			{1, (1 + 2 + 2 + fetchCacheChunks) * chunk},
			{16, (16 + 2 + 2 + fetchCacheChunks) * chunk},
		} {
			if got := (Options{Concurrency: tc.concurrency}).MemoryBudget(); got != tc.want {
				t.Errorf("concurrency %d: MemoryBudget() = %d MiB, want %d MiB", tc.concurrency, got>>20, tc.want>>20)
			}
		}
	})
	t.Run("GOMAXPROCS=8", func(t *testing.T) {
		setMaxProcs(t, 8)
		if got, want := (Options{Concurrency: 4}).MemoryBudget(), int64(4+8+2+fetchCacheChunks)*chunk; got != want {
			t.Errorf("MemoryBudget() = %d MiB, want %d MiB", got>>20, want>>20)
		}
	})
}

// setMaxProcs sets GOMAXPROCS for the rest of the test.
func setMaxProcs(t *testing.T, n int) {
	t.Helper()
	old := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
}
