package restore

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ShellQuote quotes s for the shell PostgreSQL runs restore_command with
// (/bin/sh -c): one single-quoted word, whatever s holds.
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// FetchCommand is how a restored server reads WAL from the repository again:
// the pgstow binary it runs and the repository options it passes. The
// server runs it without the restoring process's flags, environment or
// working directory, so everything it needs is spelled out on the command
// line, with absolute paths.
type FetchCommand struct {
	self string // the quoted binary
	args string // the quoted repository options, each led by a space
}

// NewFetchCommand builds the commands that reach repoURL with the pgstow at
// self. keyFile, if not empty, is the repository's encryption key file; a
// relative path is made absolute here, from the current directory.
// allowSharedKey passes --allow-shared-key-file along with it, so that a
// key file accepted now is accepted when the server fetches WAL.
func NewFetchCommand(self, repoURL, keyFile string, allowSharedKey bool) (FetchCommand, error) {
	args := " --repo " + ShellQuote(repoURL)
	if keyFile != "" {
		abs, err := filepath.Abs(keyFile)
		if err != nil {
			return FetchCommand{}, fmt.Errorf("encryption key file: %w", err)
		}
		args += " --encryption-key-file " + ShellQuote(abs)
		if allowSharedKey {
			args += " --allow-shared-key-file"
		}
	}
	return FetchCommand{self: ShellQuote(self), args: args}, nil
}

// RestoreCommand is the restore_command that fetches one WAL file (%f)
// into place (%p).
func (w FetchCommand) RestoreCommand() string { return w.self + " wal-fetch" + w.args + " %f %p" }

// Probe is a shell command that reads the repository as RestoreCommand
// will, so that a server about to be started can be shown to reach it
// (as its OS user, with its permissions) before recovery depends on it.
func (w FetchCommand) Probe() string { return w.self + " show --quiet" + w.args + " latest" }
