package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// Recovery asks for point-in-time recovery: PostgreSQL replays archived
// WAL (fetched with the restore_command) up to the target and then acts.
// At most one of Time, LSN, XID, Name and Immediate may be set.
type Recovery struct {
	Time      time.Time
	LSN       manifest.LSN
	XID       string
	Name      string
	Immediate bool
	// Action after reaching the target: promote (default), pause or
	// shutdown.
	Action string
	// Timeline to recover along: latest (default), current, or a number.
	Timeline string
}

// ErrTarget is returned (wrapped) when the repository cannot serve a
// recovery target.
var ErrTarget = errors.New("recovery target cannot be reached from this repository")

// Validate checks the target is one of the kinds PostgreSQL knows, alone,
// with a known action and timeline; callers check it before any work.
func (rc *Recovery) Validate() error {
	n := 0
	for _, set := range []bool{!rc.Time.IsZero(), rc.LSN != 0, rc.XID != "", rc.Name != "", rc.Immediate} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("give exactly one recovery target (time, LSN, xid, name or immediate), not %d", n)
	}
	switch rc.Action {
	case "", "promote", "pause", "shutdown":
	default:
		return fmt.Errorf("recovery target action %q: use promote, pause or shutdown", rc.Action)
	}
	if rc.Timeline != "" && rc.Timeline != "latest" && rc.Timeline != "current" && strings.Trim(rc.Timeline, "0123456789") != "" {
		return fmt.Errorf("recovery target timeline %q: use latest, current or a number", rc.Timeline)
	}
	if strings.ContainsAny(rc.XID+rc.Name, "\n\r\x00") {
		return errors.New("recovery target contains a line break or NUL")
	}
	return nil
}

// settings are the postgresql.auto.conf lines for the target.
func (rc *Recovery) settings() []string {
	var out []string
	switch {
	case !rc.Time.IsZero():
		out = append(out, "recovery_target_time = "+ConfQuote(rc.Time.UTC().Format("2006-01-02 15:04:05.999999")+"+00"))
	case rc.LSN != 0:
		out = append(out, "recovery_target_lsn = "+ConfQuote(rc.LSN.String()))
	case rc.XID != "":
		out = append(out, "recovery_target_xid = "+ConfQuote(rc.XID))
	case rc.Name != "":
		out = append(out, "recovery_target_name = "+ConfQuote(rc.Name))
	case rc.Immediate:
		out = append(out, "recovery_target = 'immediate'")
	}
	action := rc.Action
	if action == "" {
		action = "promote"
	}
	out = append(out, "recovery_target_action = "+ConfQuote(action))
	if rc.Timeline != "" {
		out = append(out, "recovery_target_timeline = "+ConfQuote(rc.Timeline))
	}
	return out
}

// ChooseBackup picks the newest backup from which PostgreSQL can reach the
// target: for a time, the newest that finished before it; for an LSN, the
// newest that ended at or before it; otherwise the newest. It refuses a
// target before the oldest backup, and one beyond the archived WAL.
func ChooseBackup(ctx context.Context, repo *repository.Repository, rc *Recovery) (*manifest.Backup, error) {
	backups, err := repo.Backups(ctx)
	if err != nil {
		return nil, err
	}
	if len(backups) == 0 {
		return nil, fmt.Errorf("%w: %s holds no committed backup", repository.ErrNoBackup, repo)
	}
	var pick *manifest.Backup
	for _, b := range backups {
		switch {
		case !rc.Time.IsZero():
			if b.Timings.Finished.Before(rc.Time) {
				pick = b
			}
		case rc.LSN != 0:
			if b.EndLSN <= rc.LSN {
				pick = b
			}
		default:
			pick = b
		}
	}
	if pick == nil {
		oldest := backups[0]
		if !rc.Time.IsZero() {
			return nil, fmt.Errorf("%w: target time %s is before the end of the oldest backup (%s, finished %s)",
				ErrTarget, rc.Time.UTC().Format(time.RFC3339), oldest.ID, oldest.Timings.Finished.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("%w: target LSN %s is before the end of the oldest backup (%s, ends at %s)", ErrTarget, rc.LSN, oldest.ID, oldest.EndLSN)
	}
	if err := checkArchiveReaches(ctx, repo, pick, rc); err != nil {
		return nil, err
	}
	return pick, nil
}

// checkArchiveReaches refuses targets the archived WAL cannot reach.
func checkArchiveReaches(ctx context.Context, repo *repository.Repository, b *manifest.Backup, rc *Recovery) error {
	switch {
	case rc.LSN != 0:
		seg := manifest.SegmentName(b.EndTimeline, manifest.SegmentNo(rc.LSN, b.WALSegmentSize), b.WALSegmentSize)
		ok, err := repo.HasWAL(ctx, seg)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: target LSN %s lies beyond the archived WAL (segment %s is not in %s)", ErrTarget, rc.LSN, seg, repo)
		}
	case !rc.Time.IsZero():
		// A segment archived after the target time holds WAL written
		// after it (or the switch that closed it). Any timeline counts:
		// the target may lie on a later one (recovery_target_timeline).
		var newest time.Time
		for obj, err := range repo.WALFiles(ctx) {
			if err != nil {
				return err
			}
			if obj.ModTime.After(newest) {
				newest = obj.ModTime
			}
		}
		if newest.Before(rc.Time) {
			return fmt.Errorf("%w: target time %s is after the newest archived WAL (stored %s); archive more WAL first (pg_switch_wal())",
				ErrTarget, rc.Time.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339))
		}
	}
	return nil
}
