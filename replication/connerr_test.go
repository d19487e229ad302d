package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

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

// TestClassifyConnectError: a server's refusal is one line with its own
// words and a hint, without the account of every attempt, and stays
// reachable with errors.As.
func TestClassifyConnectError(t *testing.T) {
	refusal := func(code, msg string) error {
		return fmt.Errorf("failed to connect to `user=u database=`: 127.0.0.1:5432 (127.0.0.1): tls error: server refused TLS connection\n127.0.0.1:5432 (127.0.0.1): server error: %w",
			&pgconn.PgError{Severity: "FATAL", Code: code, Message: msg})
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"no role", refusal("28000", `role "u" does not exist`), `connect to db:5432 as "u": FATAL: role "u" does not exist (SQLSTATE 28000); name a role`},
		{"password", refusal("28P01", `password authentication failed for user "u"`), `FATAL: password authentication failed for user "u" (SQLSTATE 28P01); check the password`},
		{"wal senders", refusal("53300", "number of requested standby connections exceeds max_wal_senders (currently 1)"), "; raise max_wal_senders"},
		{"pg_hba", refusal("28000", `no pg_hba.conf entry for replication connection from host "10.1.2.3", user "u", no encryption`), "'host replication u 10.1.2.3/32 scram-sha-256'"},
		{"pg_hba socket", refusal("28000", `no pg_hba.conf entry for replication connection from host "[local]", user "u", no encryption`), "'local replication u peer'"},
		{"replication role", refusal("42501", "must be superuser or replication role to start walsender"), `ALTER ROLE "u" REPLICATION`},
		{"tls required", errors.New("failed to connect to `user=u database=`: 127.0.0.1:5432 (db): tls error: server refused TLS connection"), "does not accept TLS connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classifyConnectError("db:5432", "u", tt.err)
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one line containing %q", msg, tt.want)
			}
			if strings.Contains(tt.name, "role") || tt.name == "password" || tt.name == "wal senders" {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) {
					t.Errorf("the server's error is no longer reachable with errors.As")
				}
				if strings.Contains(msg, "tls error") && tt.name != "pg_hba" {
					t.Errorf("the refusal still recounts the TLS attempt: %q", msg)
				}
			}
		})
	}
}
