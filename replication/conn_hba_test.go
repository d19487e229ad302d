package replication

import "testing"

func TestHBAAddress(t *testing.T) {
	tests := map[string]string{
		`no pg_hba.conf entry for replication connection from host "10.0.0.9", user "b", no encryption`: "10.0.0.9/32",
		`no pg_hba.conf entry for replication connection from host "::1", user "b", no encryption`:      "::1/128",
		`no pg_hba.conf entry for replication connection from host "[local]", user "b"`:                 "<this host's address>/32",
		``: "<this host's address>/32",
	}
	for msg, want := range tests {
		if got := hbaAddress(msg); got != want {
			t.Errorf("hbaAddress(%q) = %q, want %q", msg, got, want)
		}
	}
}
