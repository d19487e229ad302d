package catalog

import (
	"context"
	"fmt"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// NewestLabelled is the id of the newest committed backup labelled label,
// for restoring "the latest sanitised copy" without knowing its id. Only
// the labels are kept while the manifests are read, so memory does not
// grow with the backups' file lists. None is repository.ErrNoBackup.
func NewestLabelled(ctx context.Context, repo *repository.Repository, label string) (string, error) {
	ids, err := repo.BackupIDs(ctx)
	if err != nil {
		return "", err
	}
	labels := make([]string, len(ids))
	if err := repo.ForEachBackup(ctx, ids, func(i int, b *manifest.Backup) error {
		labels[i] = b.Label
		return nil
	}); err != nil {
		return "", err
	}
	for i := len(ids) - 1; i >= 0; i-- { // ids sort oldest first
		if labels[i] == label {
			return ids[i], nil
		}
	}
	return "", fmt.Errorf("%w: %s holds no committed backup labelled %q (pgstow list shows the labels)", repository.ErrNoBackup, repo, label)
}
