package kms

import (
	"errors"
	"testing"
)

func TestOpenURIs(t *testing.T) {
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	opts := Options{GCPTokenSource: nil, AzureCredential: staticCredential{"x"}}
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"awskms://1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"awskms://alias/pgstow?region=eu-west-1", true},
		{"awskms://arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"awskms://alias/x?endpoint=http://127.0.0.1:4599", true},
		{"awskms://", false},
		{"awskms://alias/x?endpoint=ftp://h", false},
		{"awskms://alias/x?profile=p", false},
		{"awskms://alias/x?endpoint=http://kms.example", false},
		{"awskms://alias/x?endpoint=http://[::1]:4599", true},
		{"awskms://alias/x?endpoint=https://kms.example", true},
		{"awskms://alias/x?region=evil.example%23", false},
		{"awskms://alias/x?region=us-gov-west-1", true},
		{"awskms://arn:aws:kms:evil.example/:111122223333:key/1", false},
		{"gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k?endpoint=http://127.0.0.1:1", true},
		{"gcpkms://projects/p/locations/l/keyRings/r", false},
		{"gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", false},
		{"azurekv://v.vault.azure.net/keys/k", true},
		{"azurekv://v.vault.azure.net/keys/k/0123abcd", true},
		{"azurekv://v.vault.azure.net/secrets/k", false},
		{"azurekv://v.vault.azure.net/keys/", false},
		{"azurekv://v/keys/k", false},
		{"azurekv://evil.example/keys/k", false},
		{"azurekv://v.vault.azure.net.evil.example/keys/k", false},
		{"azurekv://v.vault.azure.cn/keys/k", true},
		{"azurekv://h.managedhsm.azure.net/keys/k", true},
		{"gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k?endpoint=http://10.0.0.1", false},
		{"azurekv://v.vault.azure.net/keys/k?region=x", false},
		{"vault://k", false},
		{"alias/k", false},
	} {
		_, err := Open(t.Context(), tc.uri, opts)
		if tc.ok && err != nil {
			// GCP without a token source needs ADC, which a test machine
			// has not: only the URI matters here.
			if !errors.Is(err, ErrBadURI) {
				continue
			}
			t.Errorf("Open(%q): %v", tc.uri, err)
		}
		if !tc.ok && !errors.Is(err, ErrBadURI) {
			t.Errorf("Open(%q) = %v, want ErrBadURI", tc.uri, err)
		}
	}
}
