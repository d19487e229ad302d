package providers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// ErrBadURL marks (see BadURL) an error in how a repository URL is
// written: an unknown scheme, a relative path, an unknown parameter. The
// command line reports it as a usage error, since nothing was opened.
var ErrBadURL = errors.New("bad repository URL")

// BadURL wraps err so that errors.Is(err, ErrBadURL) holds while its
// message stays err's own.
func BadURL(err error) error { return markError(err, ErrBadURL) }

// OpenOptions are what opening a store may need beyond its URL.
type OpenOptions struct {
	// Create lets a store kept in a local directory create the
	// directory. Without it a missing directory is an error: only what
	// writes new data creates a repository, so that a mistyped path never
	// reads as an empty one.
	Create bool
	// Log receives a store's own diagnostics (an SDK's lines, at debug).
	Log *slog.Logger
}

// Opener opens the store a checked URL names.
type Opener func(ctx context.Context) (Store, error)

// Scheme is how one provider opens the repository URLs of its scheme.
// Each provider package offers its own; the command line lists the ones
// it is built with in a Registry.
type Scheme struct {
	// Name is the URL scheme, e.g. "s3".
	Name string
	// Example is the shape of its URLs for messages, e.g.
	// "s3://bucket/prefix".
	Example string
	// Parse checks u, without contacting the store, and returns what
	// opens it, so that a mistyped URL costs nothing: no directory
	// created, no request sent. Errors in the URL itself are marked with
	// BadURL; others (a missing directory) are failures.
	Parse func(u *url.URL, o OpenOptions) (Opener, error)
}

// Registry maps URL schemes to the providers that open them.
type Registry struct {
	schemes map[string]Scheme
	names   []string // in the order given, for messages
}

// NewRegistry makes a registry of schemes, listed in this order in
// messages. Two schemes of one name, or one without a name or a Parse, are
// a mistake in the program, and panic.
func NewRegistry(schemes ...Scheme) *Registry {
	r := &Registry{schemes: make(map[string]Scheme, len(schemes))}
	for _, s := range schemes {
		if s.Name == "" || s.Parse == nil {
			panic(fmt.Sprintf("providers: scheme %q without a name or a Parse", s.Name))
		}
		if _, dup := r.schemes[s.Name]; dup {
			panic(fmt.Sprintf("providers: scheme %q registered twice", s.Name))
		}
		r.schemes[s.Name] = s
		r.names = append(r.names, s.Name)
	}
	return r
}

// Open checks the repository URL raw in full, then opens the store it
// names. Errors in the URL are marked ErrBadURL and come before anything
// is opened; a failure to open names the URL, without its secrets.
func (r *Registry) Open(ctx context.Context, raw string, o OpenOptions) (Store, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, BadURL(err)
	}
	s, ok := r.schemes[u.Scheme]
	if !ok {
		return nil, BadURL(fmt.Errorf("repository %s: unknown scheme %q; use %s", RedactURL(u), u.Scheme, r.examples()))
	}
	open, err := s.Parse(u, o)
	if err != nil {
		return nil, err
	}
	store, err := open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", RedactURL(u), err)
	}
	return store, nil
}

// examples lists the schemes' example URLs: "a, b or c".
func (r *Registry) examples() string {
	ex := make([]string, len(r.names))
	for i, n := range r.names {
		ex[i] = r.schemes[n].Example
	}
	if len(ex) < 2 {
		return strings.Join(ex, "")
	}
	return strings.Join(ex[:len(ex)-1], ", ") + " or " + ex[len(ex)-1]
}

// URLScheme makes the Scheme of a provider whose URLs parse, without
// contacting anything, into a configuration that open then uses: parse's
// errors are marked BadURL, and configure (nil: none) copies what the
// options add, such as the logger.
func URLScheme[C any, S Store](name, example string, parse func(*url.URL) (C, error), configure func(*C, OpenOptions), open func(context.Context, C) (S, error)) Scheme {
	return Scheme{Name: name, Example: example, Parse: func(u *url.URL, o OpenOptions) (Opener, error) {
		cfg, err := parse(u)
		if err != nil {
			return nil, BadURL(err)
		}
		if configure != nil {
			configure(&cfg, o)
		}
		return func(ctx context.Context) (Store, error) {
			s, err := open(ctx, cfg)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return s, nil
		}, nil
	}}
}
