package kms

import (
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
