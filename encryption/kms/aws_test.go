package kms

import (
	"bytes"
	"crypto/rand"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/integration/testserver"
)

// AWS KMS against local-kms, which encrypts for real and knows disabled
// keys.
func TestAWSWrapper(t *testing.T) {
	srv := testserver.StartLocalKMS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "pgstowtest")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "pgstowtest")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	a, b := srv.CreateKey(t), srv.CreateKey(t)
	srv.CreateAlias(t, "pgstow-b", b)
	uri := func(key string) string {
		return "awskms://" + key + "?region=" + srv.Region + "&endpoint=" + srv.Endpoint
	}
	runWrapperSuite(t, harness{
		open: func(t *testing.T, u string) Wrapper {
			w, err := Open(t.Context(), u, Options{})
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		keyA:    uri(a),
		keyB:    uri("alias/pgstow-b"),
		disable: func(t *testing.T, _ string) { srv.DisableKey(t, a) },
	})
}

// A copy made through an alias records the key that wrapped it and still
// opens after `aws kms update-alias` moves the alias; the recorded key is
// refused when it cannot be one the alias ever named (another account or
// region), since a planted copy chooses it.
func TestAWSAliasMoved(t *testing.T) {
	srv := testserver.StartLocalKMS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "pgstowtest")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "pgstowtest")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	ctx := t.Context()
	old, next := srv.CreateKey(t), srv.CreateKey(t)
	srv.CreateAlias(t, "pgstow-rot", old)
	alias := "awskms://alias/pgstow-rot?region=" + srv.Region + "&endpoint=" + srv.Endpoint
	w, err := Open(ctx, alias, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dk := make([]byte, 32)
	rand.Read(dk)
	uri, ct, err := w.Wrap(ctx, dk)
	if err != nil {
		t.Fatal(err)
	}
	arn := regexp.MustCompile(`^arn:aws:kms:` + srv.Region + `:[0-9]{12}:key/` + old + `$`)
	path, rawQuery, _ := strings.Cut(uri, "?")
	q, _ := url.ParseQuery(rawQuery)
	if path != "awskms://alias/pgstow-rot" || !arn.MatchString(q.Get("key")) {
		t.Fatalf("Wrap returned %s, want the alias with key=<ARN of %s>", uri, old)
	}
	srv.UpdateAlias(t, "pgstow-rot", next)
	otherRegion := strings.Replace(q.Get("key"), ":"+srv.Region+":", ":us-east-1:", 1)
	for _, tc := range []struct {
		name, uri string
		ok        bool
	}{
		{"recorded key", uri, true},
		{"no key recorded", alias, false},
		{"key of another region recorded", alias + "&key=" + url.QueryEscape(otherRegion), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Open(ctx, tc.uri, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.Unwrap(ctx, ct)
			switch {
			case tc.ok && (err != nil || !bytes.Equal(got, dk)):
				t.Fatalf("unwrap after the alias moved: %x, %v", got, err)
			case !tc.ok && err == nil:
				t.Fatal("unwrap succeeded")
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("message spans lines: %q", err)
			}
			t.Logf("unwrap: %v", err)
		})
	}
}
