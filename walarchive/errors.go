package walarchive

import "strings"

// RepoError is the failure of one repository among several that WAL goes
// to. It names the repository (as its store prints it, without secrets),
// so that the server log line archive_command leaves says which one to
// fix.
type RepoError struct {
	// Repo names the repository.
	Repo string
	Err  error
}

// Error always starts with the repository, even where the cause names
// it again, so that a line is found by its repository.
func (e *RepoError) Error() string { return "repository " + e.Repo + ": " + e.Err.Error() }
func (e *RepoError) Unwrap() error { return e.Err }

// joined is several errors on one line: PostgreSQL logs archive_command's
// stderr line by line, and a supervisor's log is read a line at a time,
// so each failure must not be split from the repository it names.
type joined []error

func (j joined) Error() string {
	msgs := make([]string, len(j))
	for i, err := range j {
		msgs[i] = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return strings.Join(msgs, "; ")
}

func (j joined) Unwrap() []error { return j }

// JoinErrors joins the non-nil errors into one that prints on one line and
// matches each of them with errors.Is and errors.As; nil when there is
// none, the error itself when there is one.
func JoinErrors(errs ...error) error {
	var out joined
	for _, err := range errs {
		if err == nil {
			continue
		}
		if j, ok := err.(joined); ok { // flatten, not wrapped
			out = append(out, j...)
			continue
		}
		out = append(out, err)
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}
