package catalog

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgstow/pgstow/manifest"
)

// Retention says which backups Delete removes: exactly the named ones, or
// every one a policy does not keep.
type Retention struct {
	// IDs are deleted; nothing else is.
	IDs []string
	// RetainLast keeps the newest N backups.
	RetainLast int
	// RetainWithin keeps the backups that finished within this long.
	RetainWithin time.Duration
	// KeepWALWithin keeps point-in-time recovery possible to any moment
	// within this long: the newest backup that finished before the window
	// opened is kept as its base, and the WAL from it on.
	KeepWALWithin time.Duration
}

// Validate refuses policies that are empty, mixed or would delete
// everything.
func (r Retention) Validate() error {
	policy := r.RetainLast != 0 || r.RetainWithin != 0 || r.KeepWALWithin != 0
	switch {
	case len(r.IDs) > 0 && policy:
		return errors.New("name backups to delete or give a retention policy, not both")
	case len(r.IDs) == 0 && !policy:
		return errors.New("nothing to delete: name backups, or give --retain-last N or --retain-within DURATION")
	case r.RetainLast < 0:
		return fmt.Errorf("--retain-last %d: must be 1 or more", r.RetainLast)
	case r.RetainWithin < 0 || r.KeepWALWithin < 0:
		return errors.New("retention durations must be positive")
	case policy && r.RetainLast == 0 && r.RetainWithin == 0:
		return errors.New("--keep-wal-within widens a retention policy: give --retain-last N or --retain-within DURATION too")
	}
	for _, id := range r.IDs {
		if !manifest.ValidBackupID(id) {
			return fmt.Errorf("%q is not a backup id (e.g. 20261123T204651Z)", id)
		}
	}
	return nil
}

// BackupDecision says what happens to one backup and why.
type BackupDecision struct {
	ID       string    `json:"id"`
	Finished time.Time `json:"finished"`
	Keep     bool      `json:"keep"`
	// Deferred is set on a backup that was to be deleted but stays,
	// whole, because a restore holds a lease on it; a delete after the
	// restore removes it.
	Deferred bool `json:"deferred,omitempty"`
	// Locked is set on a backup that was to be deleted but stays, whole,
	// because its manifest is locked (an immutable repository); a delete
	// after the lock expires removes it.
	Locked bool   `json:"locked,omitempty"`
	Reason string `json:"reason"`
}

// summary is what retention needs of a backup; manifests themselves are
// not held, so memory does not grow with their file lists.
type summary struct {
	id       string
	finished time.Time
	firstSeg uint64 // segment number of the first WAL segment it needs
	firstWAL string // and its name
	segSize  uint64
}

func summarize(b *manifest.Backup) summary {
	seg := manifest.SegmentNo(b.StartLSN, b.WALSegmentSize)
	return summary{id: b.ID, finished: b.Timings.Finished, firstSeg: seg,
		firstWAL: manifest.SegmentName(b.StartTimeline, seg, b.WALSegmentSize), segSize: b.WALSegmentSize}
}

// decide applies a policy to backups sorted oldest first. The newest
// backup is always kept by a policy; only naming it deletes it.
func decide(backups []summary, r Retention, now time.Time) ([]BackupDecision, error) {
	out := make([]BackupDecision, len(backups))
	for i, b := range backups {
		out[i] = BackupDecision{ID: b.id, Finished: b.finished}
	}
	if len(r.IDs) > 0 {
		for _, id := range r.IDs {
			if !slices.ContainsFunc(backups, func(b summary) bool { return b.id == id }) {
				return nil, fmt.Errorf("backup %s does not exist (see pgstow list)", id)
			}
		}
		for i := range out {
			if slices.Contains(r.IDs, out[i].ID) {
				out[i].Reason = "named"
			} else {
				out[i].Keep, out[i].Reason = true, "not named"
			}
		}
		return out, nil
	}
	n := len(out)
	for i := range out {
		switch {
		case i == n-1:
			out[i].Keep, out[i].Reason = true, "newest backup"
		case r.RetainLast > 0 && i >= n-r.RetainLast:
			out[i].Keep, out[i].Reason = true, fmt.Sprintf("one of the newest %d", r.RetainLast)
		case r.RetainWithin > 0 && !out[i].Finished.Before(now.Add(-r.RetainWithin)):
			out[i].Keep, out[i].Reason = true, "finished within "+r.RetainWithin.String()
		default:
			out[i].Reason = "outside the retention policy"
		}
	}
	if r.KeepWALWithin > 0 {
		// Recovering to the moment the window opens needs a backup that
		// was consistent by then: the newest that finished before it.
		opens := now.Add(-r.KeepWALWithin)
		for i := n - 1; i >= 0; i-- {
			if out[i].Finished.Before(opens) {
				if !out[i].Keep {
					out[i].Keep, out[i].Reason = true, "base of the point-in-time window of "+r.KeepWALWithin.String()
				}
				break
			}
		}
	}
	return out, nil
}

// ParseDuration reads a retention duration: Go's syntax (36h, 90m) plus
// days and weeks ("7d", "2w"), which retention is usually spoken in.
func ParseDuration(s string) (time.Duration, error) {
	if n := len(s); n > 1 && (s[n-1] == 'd' || s[n-1] == 'w') {
		var v int64
		if _, err := fmt.Sscanf(s[:n-1], "%d", &v); err == nil && fmt.Sprint(v) == s[:n-1] && v >= 0 {
			unit := 24 * time.Hour
			if s[n-1] == 'w' {
				unit *= 7
			}
			if v > int64((1<<63-1)/unit) {
				return 0, fmt.Errorf("duration %q is too long", s)
			}
			return time.Duration(v) * unit, nil
		}
		return 0, fmt.Errorf("duration %q: use e.g. 7d, 2w, 36h or 90m", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: use e.g. 7d, 2w, 36h or 90m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	return d, nil
}
