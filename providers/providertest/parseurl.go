package providertest

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// URLCase is one repository URL and what a provider's parser should make
// of it.
type URLCase[C any] struct {
	URL  string
	Want C      // the configuration, when the URL is accepted
	Err  string // a substring of the error; "" when the URL is accepted
}

// CheckParseURL runs parse over each case in a subtest: an accepted URL
// must give its configuration, a refused one an error with the case's
// words, which must not show a "secret" the URL carries.
func CheckParseURL[C any](t *testing.T, parse func(*url.URL) (C, error), cases []URLCase[C]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.URL, func(t *testing.T) {
			u, err := url.Parse(tc.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parse(u)
			if tc.Err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.Err) {
					t.Fatalf("parse(%q) = %+v, %v; want an error containing %q", tc.URL, got, err, tc.Err)
				}
				if strings.Contains(err.Error(), "secret") && strings.Contains(tc.URL, "secret") {
					t.Errorf("parse(%q): the error shows the password: %v", tc.URL, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tc.URL, err)
			}
			if diff := cmp.Diff(tc.Want, got); diff != "" {
				t.Errorf("parse(%q) (-want +got):\n%s", tc.URL, diff)
			}
		})
	}
}
