package restore

import "testing"

func TestRecoveryEnd(t *testing.T) {
	for _, tc := range []struct {
		name             string
		o                Options
		promotes, pauses bool
	}{
		{name: "embed", o: Options{WAL: WALEmbed}},
		{name: "default mode", o: Options{}},
		{name: "embed, target ignored", o: Options{WAL: WALEmbed, Recovery: &Recovery{Immediate: true, Action: "pause"}}},
		{name: "fetch, no target", o: Options{WAL: WALFetch}, promotes: true},
		{name: "fetch, default action", o: Options{WAL: WALFetch, Recovery: &Recovery{Immediate: true}}, promotes: true},
		{name: "fetch, promote", o: Options{WAL: WALFetch, Recovery: &Recovery{Name: "x", Action: "promote"}}, promotes: true},
		{name: "fetch, pause", o: Options{WAL: WALFetch, Recovery: &Recovery{Name: "x", Action: "pause"}}, pauses: true},
		{name: "fetch, shutdown", o: Options{WAL: WALFetch, Recovery: &Recovery{Name: "x", Action: "shutdown"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, s := tc.o.RecoveryEnd()
			if p != tc.promotes || s != tc.pauses {
				t.Errorf("RecoveryEnd() = promotes %v, pauses %v; want %v, %v", p, s, tc.promotes, tc.pauses)
			}
		})
	}
}
