package file

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/pgstow/pgstow/providers"
)

// Scheme opens file:///absolute/path repository URLs for a
// providers.Registry.
func Scheme() providers.Scheme {
	return providers.Scheme{Name: "file", Example: "file:///path", Parse: parseScheme}
}

// MissingDirError says that a repository's directory does not exist and
// the caller did not ask to create it (providers.OpenOptions.Create). It
// is providers.ErrNotExist.
type MissingDirError struct {
	URL string // the repository URL, redacted
	Dir string
}

func (e *MissingDirError) Error() string {
	return fmt.Sprintf("repository %s: the directory %s does not exist; check the path", e.URL, e.Dir)
}

func (e *MissingDirError) Unwrap() error { return providers.ErrNotExist }

// parseScheme checks a file:// URL, and that its directory exists unless
// o.Create allows creating it: a mistyped path must not read as an empty
// repository.
func parseScheme(u *url.URL, o providers.OpenOptions) (providers.Opener, error) {
	if (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
		return nil, providers.BadURL(fmt.Errorf("repository %s: a file:// URL needs an absolute path, e.g. %s", providers.RedactURL(u), urlExample))
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, providers.BadURL(fmt.Errorf("repository %s: a file:// URL takes no user, query parameters or fragment, e.g. %s", providers.RedactURL(u), urlExample))
	}
	if !o.Create {
		if _, err := os.Stat(u.Path); errors.Is(err, os.ErrNotExist) {
			return nil, &MissingDirError{URL: providers.RedactURL(u), Dir: u.Path}
		}
	}
	return func(ctx context.Context) (providers.Store, error) {
		s, err := OpenURL(ctx, u)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, nil
}
