package catalog

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRetentionValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       Retention
		wantErr string // "" for a valid policy
	}{
		{"retain last", Retention{RetainLast: 1}, ""},
		{"retain within", Retention{RetainWithin: time.Hour}, ""},
		{"both, widened", Retention{RetainLast: 3, RetainWithin: time.Hour, KeepWALWithin: 7 * 24 * time.Hour}, ""},
		{"ids", Retention{IDs: []string{"20260102T030405Z", "20261123T204651Z"}}, ""},
		{"empty", Retention{}, "nothing to delete"},
		{"ids and a policy", Retention{IDs: []string{"20260102T030405Z"}, RetainWithin: time.Hour}, "not both"},
		{"ids and keep-wal-within", Retention{IDs: []string{"20260102T030405Z"}, KeepWALWithin: time.Hour}, "not both"},
		{"negative retain-last", Retention{RetainLast: -2}, "--retain-last -2"},
		{"negative retain-within", Retention{RetainLast: 1, RetainWithin: -time.Second}, "positive"},
		{"negative keep-wal-within", Retention{RetainWithin: time.Hour, KeepWALWithin: -time.Hour}, "positive"},
		{"keep-wal-within alone", Retention{KeepWALWithin: time.Hour}, "--keep-wal-within"},
		{"not an id", Retention{IDs: []string{"20260102T030405Z", "2026-01-02"}}, `"2026-01-02" is not a backup id`},
		{"not a canonical id", Retention{IDs: []string{"20260230T030405Z"}}, "is not a backup id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("valid policy refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	// Five backups a day apart; now is an hour after the newest.
	day := 24 * time.Hour
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var backups []summary
	for i := range 5 {
		backups = append(backups, summary{id: backupID(i), finished: t0.Add(time.Duration(i) * day)})
	}
	now := t0.Add(4*day + time.Hour)
	for _, tc := range []struct {
		name string
		r    Retention
		now  time.Time // now when zero
		keep []bool
		// reasons, when set, are the decisions' reasons.
		reasons []string
		wantErr string
	}{
		{name: "retain last 2", r: Retention{RetainLast: 2},
			keep:    []bool{false, false, false, true, true},
			reasons: []string{"outside the retention policy", "outside the retention policy", "outside the retention policy", "one of the newest 2", "newest backup"}},
		{name: "retain last 1", r: Retention{RetainLast: 1}, keep: []bool{false, false, false, false, true}},
		{name: "retain last more than there are", r: Retention{RetainLast: 9}, keep: []bool{true, true, true, true, true}},
		{name: "retain within 2 days", r: Retention{RetainWithin: 2 * day}, keep: []bool{false, false, false, true, true}},
		{name: "retain within, boundary included", r: Retention{RetainWithin: 2*day + time.Hour}, keep: []bool{false, false, true, true, true}},
		{name: "retain within, just short", r: Retention{RetainWithin: 2*day + time.Hour - time.Nanosecond}, keep: []bool{false, false, false, true, true}},
		{name: "retain within keeps the newest however old", r: Retention{RetainWithin: time.Hour}, now: now.Add(30 * day),
			keep: []bool{false, false, false, false, true}},
		{name: "retain last or within", r: Retention{RetainLast: 1, RetainWithin: 3*day + time.Hour}, keep: []bool{false, true, true, true, true}},
		// The window opens 2.5 days ago, between backups 1 and 2:
		// backup 1 is its base.
		{name: "keep WAL within", r: Retention{RetainLast: 1, KeepWALWithin: 2*day + 12*time.Hour},
			keep:    []bool{false, true, false, false, true},
			reasons: []string{"outside the retention policy", "base of the point-in-time window of 60h0m0s", "outside the retention policy", "outside the retention policy", "newest backup"}},
		// A backup that finished as the window opens did not finish
		// before it: the one before is the base.
		{name: "keep WAL within, window opens as a backup finishes", r: Retention{RetainLast: 1, KeepWALWithin: 2*day + time.Hour},
			keep: []bool{false, true, false, false, true}},
		{name: "keep WAL within, base already kept", r: Retention{RetainLast: 4, KeepWALWithin: 2*day + 12*time.Hour},
			keep: []bool{false, true, true, true, true}},
		{name: "keep WAL within, window before every backup", r: Retention{RetainLast: 1, KeepWALWithin: 30 * day},
			keep: []bool{false, false, false, false, true}},
		{name: "keep WAL within, window after every backup", r: Retention{RetainLast: 1, KeepWALWithin: time.Minute},
			keep: []bool{false, false, false, false, true}},
		{name: "named", r: Retention{IDs: []string{backupID(1), backupID(4)}},
			keep:    []bool{true, false, true, true, false},
			reasons: []string{"not named", "named", "not named", "not named", "named"}},
		{name: "named unknown", r: Retention{IDs: []string{backupID(1), backupID(7)}}, wantErr: backupID(7) + " does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.now
			if at.IsZero() {
				at = now
			}
			ds, err := decide(backups, tc.r, at)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ds != nil {
					t.Fatalf("%v, %v; want an error containing %q", ds, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keep []bool
			var reasons []string
			for i, d := range ds {
				keep = append(keep, d.Keep)
				reasons = append(reasons, d.Reason)
				if d.ID != backups[i].id || !d.Finished.Equal(backups[i].finished) || d.Reason == "" {
					t.Errorf("decision %d is %+v, for backup %+v", i, d, backups[i])
				}
			}
			if !slices.Equal(keep, tc.keep) {
				t.Errorf("keeps %v, want %v (%q)", keep, tc.keep, reasons)
			}
			if tc.reasons != nil && !slices.Equal(reasons, tc.reasons) {
				t.Errorf("reasons %q, want %q", reasons, tc.reasons)
			}
		})
	}
	if ds, err := decide(nil, Retention{RetainLast: 1}, now); err != nil || len(ds) != 0 {
		t.Errorf("no backups: %v, %v", ds, err)
	}
}

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"7d", 7 * day, true},
		{"0d", 0, true},
		{"2w", 14 * day, true},
		{"36h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"106751d", 106751 * day, true},
		{"106752d", 0, false}, // past what a Duration holds
		{"-1d", 0, false},
		{"+1d", 0, false},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"w", 0, false},
		{"1dd", 0, false},
		{"-1h", 0, false},
		{"", 0, false},
		{"7", 0, false},
		{"seven days", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if tc.ok && (err != nil || got != tc.want) || !tc.ok && err == nil {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
		if !tc.ok && err != nil && !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseDuration(%q): error %q does not quote the input", tc.in, err)
		}
	}
}
