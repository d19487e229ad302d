package catalog

import (
	"errors"
	"testing"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

func TestNewestLabelled(t *testing.T) {
	repo := repository.New(mem.New())
	// Committed oldest first; the ids sort as they were taken.
	for i, c := range []struct{ id, label string }{
		{"20260102T030405Z", "nightly"},
		{"20260103T030405Z", "sanitised"},
		{"20260104T030405Z", "nightly"},
		{"20260105T030405Z", "weekly"},
	} {
		label := c.label
		repotest.Commit(t, repo, repotest.Spec{
			ID:       c.id,
			Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(uint64(i))}},
			Finished: repotest.BaseTime.Add(time.Duration(i+1) * time.Hour),
			Edit:     func(b *manifest.Backup) { b.Label = label },
		})
	}
	for _, tc := range []struct {
		label, want string
	}{
		{"nightly", "20260104T030405Z"},
		{"sanitised", "20260103T030405Z"},
		{"weekly", "20260105T030405Z"},
		{"Nightly", ""}, // labels are compared exactly
		{"", ""},
	} {
		t.Run(tc.label, func(t *testing.T) {
			got, err := NewestLabelled(t.Context(), repo, tc.label)
			switch {
			case tc.want == "" && !errors.Is(err, repository.ErrNoBackup):
				t.Fatalf("NewestLabelled(%q) = %q, %v, want ErrNoBackup", tc.label, got, err)
			case tc.want != "" && (err != nil || got != tc.want):
				t.Fatalf("NewestLabelled(%q) = %q, %v, want %s", tc.label, got, err, tc.want)
			}
		})
	}
}

func TestNewestLabelledEmpty(t *testing.T) {
	_, err := NewestLabelled(t.Context(), repository.New(mem.New()), "nightly")
	if !errors.Is(err, repository.ErrNoBackup) {
		t.Fatalf("NewestLabelled on an empty repository = %v, want ErrNoBackup", err)
	}
}
