package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
)

// writeCert writes a certificate (signed by parent, or self-signed when
// parent is nil) and its key as PEM files, and returns them.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func newCA(t *testing.T, dir, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	return writeCert(t, dir, name, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
}

// TestTLSVerifyFull: with a server certificate from a CA made here,
// sslmode=verify-full backs up; a wrong CA and a host name the
// certificate does not name are refused with messages saying so.
func TestTLSVerifyFull(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	certs := t.TempDir()
	ca, caKey := newCA(t, certs, "ca")
	newCA(t, certs, "other-ca")
	writeCert(t, c.DataDir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	chownServerUser(t, c.DataDir)
	c.Exec(t, "postgres", "ALTER SYSTEM SET ssl = on")
	c.Exec(t, "postgres", "ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
	c.Exec(t, "postgres", "ALTER SYSTEM SET ssl_key_file = 'server.key'")
	c.Exec(t, "postgres", "SELECT pg_reload_conf()")
	pgtest.Eventually(t, 30*time.Second, "ssl to be on", func() bool { return c.Query(t, "postgres", "SHOW ssl")[0][0] == "on" })

	dir := t.TempDir()
	dsn := func(host, ca string) string {
		return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s", host, c.Port, filepath.Join(certs, ca+".crt"))
	}
	r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", "file://"+dir, "--pg", dsn("localhost", "ca"), "--checkpoint", "fast")
	if r.code != 0 {
		t.Fatalf("backup with verify-full: exit %d\n%s", r.code, r.stderr)
	}
	for _, tc := range []struct{ name, dsn, says string }{
		{"unknown CA", dsn("localhost", "other-ca"), "certificate signed by unknown authority"},
		{"host not in the certificate", dsn("127.0.0.1", "ca"), "doesn't contain any IP SANs"},
	} {
		r := runCLI(t, time.Minute, nil, "backup", "--repo", "file://"+dir, "--pg", tc.dsn, "--checkpoint", "fast")
		if r.code != 1 || !strings.Contains(r.stderr, tc.says) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%s: exit %d, want 1 and one line containing %q:\n%s", tc.name, r.code, tc.says, r.stderr)
		}
	}
	if r := runCLI(t, time.Minute, nil, "list", "--repo", "file://"+dir, "--json"); strings.Count(r.stdout, `"id"`) != 1 {
		t.Fatalf("want exactly the one backup taken with verify-full:\n%s", r.stdout)
	}
}

// TestSecretsStayHidden runs commands that see a database password and
// cloud credentials, including failing ones, at debug log level, and
// checks that no output and no stored object contains a secret.
func TestSecretsStayHidden(t *testing.T) {
	t.Parallel()
	const (
		dbPassword = "Db-Pw-7c1e9a5b3d"
		s3Secret   = "S3-Secret-4f2a8e6c0b"
	)
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Exec(t, "postgres", "CREATE ROLE stowuser LOGIN REPLICATION PASSWORD '"+dbPassword+"'")
	hba := filepath.Join(c.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	// First match wins: this role must give its password.
	lines := "host replication stowuser 127.0.0.1/32 scram-sha-256\nhost all stowuser 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, append([]byte(lines), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	chownServerUser(t, c.DataDir)
	c.Exec(t, "postgres", "SELECT pg_reload_conf()")

	minio := testserver.StartMinIO(t)
	bucket := minio.NewBucket(t)
	dir := t.TempDir()
	good := fmt.Sprintf("postgres://stowuser:%s@127.0.0.1:%d/postgres?sslmode=disable", dbPassword, c.Port)
	wrongDB := fmt.Sprintf("postgres://stowuser:%s@127.0.0.1:%d/postgres?sslmode=disable", dbPassword+"x", c.Port)
	s3URL := fmt.Sprintf("s3://%s/secret-test?endpoint=%s&path_style=true", bucket, minio.Endpoint)
	s3Env := []string{"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + minio.SecretKey, "AWS_REGION=us-east-1"}
	badS3Env := []string{"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3Secret, "AWS_REGION=us-east-1"}

	var all strings.Builder
	for _, run := range []struct {
		env  []string
		args []string
		ok   bool
	}{
		{nil, []string{"backup", "--repo", "file://" + dir, "--pg", good, "--checkpoint", "fast"}, true},
		{[]string{"PGPASSWORD=" + dbPassword}, []string{"backup", "--repo", "file://" + dir, "--pg", fmt.Sprintf("host=127.0.0.1 port=%d user=stowuser dbname=postgres sslmode=disable", c.Port), "--checkpoint", "fast"}, true},
		{nil, []string{"backup", "--repo", "file://" + dir, "--pg", wrongDB}, false},
		{nil, []string{"backup", "--repo", "file://" + dir, "--pg", strings.Replace(good, fmt.Sprint(c.Port), fmt.Sprint(freePort(t)), 1)}, false},
		{s3Env, []string{"backup", "--repo", s3URL, "--pg", good, "--checkpoint", "fast"}, true},
		{badS3Env, []string{"list", "--repo", s3URL}, false},
		{badS3Env, []string{"backup", "--repo", s3URL, "--pg", good}, false},
		{nil, []string{"list", "--repo", "file://" + dir, "--json"}, true},
		{nil, []string{"verify", "--all", "--repo", "file://" + dir}, true},
	} {
		args := append([]string{"--log-level", "debug"}, run.args...)
		r := runCLI(t, 3*time.Minute, run.env, args...)
		if (r.code == 0) != run.ok {
			t.Fatalf("pgstow %v: exit %d, want success %v:\n%s\n%s", run.args, r.code, run.ok, r.stdout, r.stderr)
		}
		all.WriteString(r.stdout)
		all.WriteString(r.stderr)
	}
	for _, secret := range []string{dbPassword, s3Secret, minio.SecretKey} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("a secret appears in pgstow's output:\n%s", all.String())
		}
	}
	// Nor in anything stored.
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, secret := range []string{dbPassword, s3Secret, minio.SecretKey} {
			if strings.Contains(string(data), secret) {
				t.Errorf("%s contains a secret", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
