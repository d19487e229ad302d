package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// holdLease takes a restore lease naming backup id, so that delete and gc
// leave its manifests, chunks and WAL alone while the restore reads them
// (docs/catalog.md). It returns a nil lease, after a warning, when this
// user cannot write to the repository (a read-only replica bucket or
// mount, read-only credentials): getting the data back matters more than
// holding off a delete, and every object read is verified anyway, so a
// delete meanwhile can fail the restore but not corrupt it.
func holdLease(ctx context.Context, repo *repository.Repository, id string, o Options) (*repository.Lease, error) {
	l, err := repo.TakeLease(ctx, repository.LockRestore, repository.LeaseOptions{
		Command: "restore", Backup: id, TTL: o.LeaseTTL, Log: o.Log,
	})
	switch {
	case err == nil:
	case readOnly(err):
		o.Log.Warn("cannot write a restore lease: the repository is read-only to this user, so restoring without one; a delete or gc run meanwhile is not held off and can make this restore fail",
			"backup", id, "err", err)
		return nil, nil
	default:
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	// The backup was chosen before the lease existed, so a delete that
	// did not see the lease may have removed it in between. TakeLease
	// waited for any such delete to finish: one look now settles it.
	committed, err := repo.HasBackup(ctx, id)
	if err != nil || !committed {
		l.Release(ctx)
	}
	if err != nil {
		return nil, err
	}
	if !committed {
		return nil, fmt.Errorf("backup %s was deleted from %s as this restore started; restore another backup (pgstow list shows them)", id, repo)
	}
	return l, nil
}

// readOnly reports whether err says that this user may not write to the
// store, as opposed to the store failing.
func readOnly(err error) bool {
	return errors.Is(err, providers.ErrAccessDenied) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// leaseLapsed returns why the lease may have been judged dead by a delete
// or gc during the restore, or nil if it held throughout (or there was
// none).
func leaseLapsed(l *repository.Lease) error {
	if l == nil {
		return nil
	}
	return l.Held()
}
