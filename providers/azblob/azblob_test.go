package azblob

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// testBlockSize is the smallest block size Config allows (sizes are
// rounded up to whole MiB), and the multipart threshold of the tests.
const testBlockSize = 1 << 20

// openTest opens a store on a new container of srv with the test block
// size, closed when the test ends.
func openTest(t *testing.T, srv *testserver.AzureServer, prefix string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{
		Container:          srv.NewContainer(t),
		Prefix:             prefix,
		BlockSize:          testBlockSize,
		MultipartThreshold: testBlockSize,
		ConnectionString:   srv.ConnectionString,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// Small pages, so that the suite's listings cross many page
	// boundaries.
	s.pageSize = 100
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := testserver.StartAzurite(t)
	open := func(t *testing.T) providers.Store { return openTest(t, srv, "") }
	t.Run("Run", func(t *testing.T) { providertest.Run(t, open) })
	t.Run("Multipart", func(t *testing.T) { providertest.RunMultipart(t, open, testBlockSize) })
	t.Run("Prefixed", func(t *testing.T) {
		providertest.Run(t, func(t *testing.T) providers.Store { return openTest(t, srv, "repo/sub") })
	})
}

// TestPrefix checks that the prefix is where the objects land and that a
// store on a parent prefix sees them with it.
func TestPrefix(t *testing.T) {
	srv := testserver.StartAzurite(t)
	name := srv.NewContainer(t)
	open := func(prefix string) *Store {
		s, err := Open(t.Context(), Config{Container: name, Prefix: prefix, ConnectionString: srv.ConnectionString})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	inner, outer, root := open("a/b"), open("a"), open("")
	if got, want := inner.String(), "azblob://"+name+"/a/b"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := root.String(), "azblob://"+name; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, key := range []string{"x", "y/z"} {
		if err := inner.Put(t.Context(), key, strings.NewReader(key), int64(len(key)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := outer.Put(t.Context(), "b-sibling", strings.NewReader("s"), 1, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := func(s *Store, prefix string) []string {
		var out []string
		for info, err := range s.List(t.Context(), prefix) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, info.Key)
		}
		return out
	}
	for _, tc := range []struct {
		s      *Store
		prefix string
		want   []string
	}{
		{inner, "", []string{"x", "y/z"}},
		{outer, "", []string{"b-sibling", "b/x", "b/y/z"}},
		{outer, "b/", []string{"b/x", "b/y/z"}},
		{root, "", []string{"a/b-sibling", "a/b/x", "a/b/y/z"}},
	} {
		if diff := cmp.Diff(tc.want, keys(tc.s, tc.prefix)); diff != "" {
			t.Errorf("%s: List(%q) (-want +got):\n%s", tc.s, tc.prefix, diff)
		}
	}
	if b, err := providers.ReadAll(t.Context(), root, "a/b/y/z"); err != nil || string(b) != "y/z" {
		t.Errorf("ReadAll(a/b/y/z) = %q, %v", b, err)
	}
}

// TestServiceChecks sends requests the provider never sends itself, to
// see that the service's own refusals are classified: a body that does
// not match its MD5, a conditional commit of an existing blob, and a
// commit of blocks that were never staged.
func TestServiceChecks(t *testing.T) {
	srv := testserver.StartAzurite(t)
	s := openTest(t, srv, "")
	ctx := t.Context()
	data := []byte("some bytes")
	wrongMD5 := md5.Sum([]byte("other bytes"))
	newPart := func(sum []byte) *part {
		return &part{body: &partBody{r: bytes.NewReader(data)}, md5: sum}
	}
	bb := s.client.NewBlockBlobClient("key")

	err := s.upload(ctx, "key", bb, newPart(wrongMD5[:]), false, lockPolicy{})
	if !errors.Is(err, providers.ErrChecksum) {
		t.Fatalf("Put Blob with a wrong MD5 = %v, want ErrChecksum", err)
	}
	err = s.stageBlock(ctx, "key", bb, blockID([blockNonceBytes]byte{}, 0), 0, 1, newPart(wrongMD5[:]))
	if !errors.Is(err, providers.ErrChecksum) {
		t.Fatalf("Put Block with a wrong MD5 = %v, want ErrChecksum", err)
	}
	if _, err := s.Stat(ctx, "key"); !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("Stat after refused uploads = %v, want ErrNotExist", err)
	}

	rightMD5 := md5.Sum(data)
	if err := s.upload(ctx, "key", bb, newPart(rightMD5[:]), true, lockPolicy{}); err != nil {
		t.Fatal(err)
	}
	id := blockID([blockNonceBytes]byte{1}, 0)
	if err := s.stageBlock(ctx, "key", bb, id, 0, 1, newPart(rightMD5[:])); err != nil {
		t.Fatal(err)
	}
	err = s.commitBlocks(ctx, "key", bb, []string{id}, true, lockPolicy{})
	if !errors.Is(err, providers.ErrExist) {
		t.Fatalf("conditional Put Block List of an existing blob = %v, want ErrExist", err)
	}
	err = s.commitBlocks(ctx, "other", s.client.NewBlockBlobClient("other"), []string{blockID([blockNonceBytes]byte{2}, 0)}, false, lockPolicy{})
	if !errors.Is(err, providers.ErrTransient) {
		t.Fatalf("Put Block List of unknown blocks = %v, want ErrTransient", err)
	}
	if b, err := providers.ReadAll(ctx, s, "key"); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("ReadAll(key) = %q, %v; want %q", b, err, data)
	}
}

func TestOpenErrors(t *testing.T) {
	srv := testserver.StartAzurite(t)
	existing := srv.NewContainer(t)

	t.Run("wrong key", func(t *testing.T) {
		wrongKey := strings.Replace(srv.ConnectionString, testserver.AzuriteKey,
			"d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=", 1)
		_, err := Open(t.Context(), Config{Container: existing, ConnectionString: wrongKey})
		if !errors.Is(err, providers.ErrAccessDenied) {
			t.Fatalf("Open with a wrong key = %v, want ErrAccessDenied", err)
		}
		for _, want := range []string{existing, "access denied", srv.Endpoint} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "d3Jvbmcg") {
			t.Errorf("error %q shows the key", err)
		}
	})
	t.Run("missing container", func(t *testing.T) {
		_, err := Open(t.Context(), Config{Container: "no-such-container", ConnectionString: srv.ConnectionString})
		if !errors.Is(err, providers.ErrNoBucket) {
			t.Fatalf("Open of a missing container = %v, want ErrNoBucket", err)
		}
		if !strings.Contains(err.Error(), `container "no-such-container" does not exist`) {
			t.Errorf("error %q does not say what is missing", err)
		}
	})
	t.Run("unreachable endpoint", func(t *testing.T) {
		endpoint := fmt.Sprintf("http://%s/%s", testserver.Addr(testserver.FreePort(t)), testserver.AzuriteAccount)
		cs := strings.Replace(srv.ConnectionString, srv.Endpoint, endpoint, 1)
		start := time.Now()
		_, err := Open(t.Context(), Config{Container: existing, ConnectionString: cs})
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Errorf("Open took %s", elapsed)
		}
		if err == nil {
			t.Fatal("Open of an unreachable endpoint succeeded")
		}
		if !strings.Contains(err.Error(), "cannot reach endpoint "+endpoint) {
			t.Errorf("error %q does not name the endpoint", err)
		}
		if !errors.Is(err, providers.ErrTransient) {
			t.Errorf("error %q is not transient", err)
		}
	})
	t.Run("malformed connection string", func(t *testing.T) {
		_, err := Open(t.Context(), Config{Container: existing, ConnectionString: "AccountKey=c2VjcmV0"})
		if err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
			t.Fatalf("Open with a malformed connection string = %v", err)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		for _, cfg := range []Config{
			{},
			{Container: "Upper"},
			{Container: existing, Prefix: "a//b"},
			{Container: existing, BlockSize: -1},
			{Container: existing, BlockSize: 5000 << 20},
			{Container: existing, MaxBlocks: MaxBlockCount + 1},
			{Container: existing, BlockSize: 1 << 20, MultipartThreshold: 2 << 20},
		} {
			cfg.ConnectionString = srv.ConnectionString
			if _, err := Open(t.Context(), cfg); err == nil {
				t.Errorf("Open(%+v) succeeded", cfg)
			}
		}
	})
}

// clearAzureEnv unsets the variables resolveCredentials reads for the
// rest of the test.
func clearAzureEnv(t *testing.T) {
	for _, name := range []string{envConnectionString, envAccount, envKey, envSASToken, envEndpoint} {
		t.Setenv(name, "")
	}
}

// TestEnvironment opens stores through OpenURL with each way of giving
// the account in the environment that Azurite can check.
func TestEnvironment(t *testing.T) {
	srv := testserver.StartAzurite(t)

	// A container created with the SDK, and a SAS token for it.
	name := "env-" + strings.TrimPrefix(srv.NewContainer(t), "pgstow-")
	admin, err := container.NewClientFromConnectionString(srv.ConnectionString, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	sasURL, err := admin.GetSASURL(sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true},
		time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(sasURL)
	if err != nil {
		t.Fatal(err)
	}
	token := u.RawQuery

	roundTrip := func(t *testing.T, want string) {
		t.Helper()
		u, err := providers.ParseURL("azblob://" + name + "/" + want + "?block_size=1MiB")
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenURL(t.Context(), u)
		if err != nil {
			t.Fatalf("OpenURL: %v", err)
		}
		defer s.Close()
		data := bytes.Repeat([]byte(want), 300_000) // several blocks
		if err := s.Put(t.Context(), "obj", bytes.NewReader(data), int64(len(data)), providers.PutOptions{IfAbsent: true}); err != nil {
			t.Fatal(err)
		}
		got, err := providers.ReadAll(t.Context(), s, "obj")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ReadAll = %d bytes, %v; want %d bytes", len(got), err, len(data))
		}
		n := 0
		for _, err := range s.List(t.Context(), "") {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != 1 {
			t.Errorf("List found %d objects, want 1", n)
		}
		if err := s.Delete(t.Context(), "obj"); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("connection string", func(t *testing.T) {
		clearAzureEnv(t)
		t.Setenv(envConnectionString, srv.ConnectionString)
		roundTrip(t, "cs")
	})
	t.Run("shared key", func(t *testing.T) {
		clearAzureEnv(t)
		t.Setenv(envAccount, testserver.AzuriteAccount)
		t.Setenv(envKey, testserver.AzuriteKey)
		t.Setenv(envEndpoint, srv.Endpoint)
		roundTrip(t, "key")
	})
	t.Run("SAS token", func(t *testing.T) {
		clearAzureEnv(t)
		t.Setenv(envAccount, testserver.AzuriteAccount)
		t.Setenv(envSASToken, "?"+token)
		t.Setenv(envEndpoint, srv.Endpoint+"/")
		roundTrip(t, "sas")
	})
	t.Run("wrong SAS token", func(t *testing.T) {
		clearAzureEnv(t)
		t.Setenv(envAccount, testserver.AzuriteAccount)
		q, _ := url.ParseQuery(token)
		q.Set("sig", "c2lnbmF0dXJlIG9mIG5vdGhpbmcgYXQgYWxsIDEyMzQ1Njc=")
		t.Setenv(envSASToken, q.Encode())
		t.Setenv(envEndpoint, srv.Endpoint)
		_, err := OpenURL(t.Context(), &url.URL{Scheme: "azblob", Host: name})
		if !errors.Is(err, providers.ErrAccessDenied) {
			t.Fatalf("OpenURL with a wrong SAS = %v, want ErrAccessDenied", err)
		}
		if strings.Contains(err.Error(), "c2lnbmF0dXJl") {
			t.Errorf("error %q shows the signature", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		clearAzureEnv(t)
		_, err := OpenURL(t.Context(), &url.URL{Scheme: "azblob", Host: name})
		if !errors.Is(err, providers.ErrAccessDenied) || !strings.Contains(err.Error(), envConnectionString) {
			t.Fatalf("OpenURL without credentials = %v, want ErrAccessDenied naming %s", err, envConnectionString)
		}
	})
}

func TestResolveCredentials(t *testing.T) {
	const cs = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5"
	for _, tc := range []struct {
		name    string
		config  string
		env     map[string]string
		want    credentials
		wantErr bool
	}{
		{"config wins", cs, map[string]string{envConnectionString: "other", envAccount: "acct", envKey: "k"},
			credentials{source: "the configured connection string", connectionString: cs}, false},
		{"connection string first", "", map[string]string{envConnectionString: cs, envAccount: "acct", envKey: "k"},
			credentials{source: envConnectionString, connectionString: cs}, false},
		{"shared key before SAS", "", map[string]string{envAccount: "acct", envKey: "k", envSASToken: "sv=x"},
			credentials{source: envAccount + " and " + envKey, account: "acct", key: "k", serviceURL: "https://acct.blob.core.windows.net/"}, false},
		{"SAS", "", map[string]string{envAccount: "acct", envSASToken: "?sv=x&sig=y"},
			credentials{source: envAccount + " and " + envSASToken, account: "acct", sasToken: "sv=x&sig=y", serviceURL: "https://acct.blob.core.windows.net/"}, false},
		{"identity", "", map[string]string{envAccount: "acct"},
			credentials{source: envAccount + " with an Azure identity (DefaultAzureCredential)", account: "acct", identity: true, serviceURL: "https://acct.blob.core.windows.net/"}, false},
		{"endpoint", "", map[string]string{envAccount: "acct", envKey: "k", envEndpoint: "http://127.0.0.1:10000/acct"},
			credentials{source: envAccount + " and " + envKey, account: "acct", key: "k", serviceURL: "http://127.0.0.1:10000/acct/"}, false},
		{"nothing", "", nil, credentials{}, true},
		{"key without account", "", map[string]string{envKey: "k"}, credentials{}, true},
		{"bad account", "", map[string]string{envAccount: "Acct/evil"}, credentials{}, true},
		{"bad endpoint", "", map[string]string{envAccount: "acct", envEndpoint: "127.0.0.1:10000"}, credentials{}, true},
		{"endpoint with query", "", map[string]string{envAccount: "acct", envEndpoint: "https://x/?sig=1"}, credentials{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveCredentials(tc.config, func(name string) string { return tc.env[name] })
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(credentials{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigFromURL(t *testing.T) {
	providertest.CheckParseURL(t, configFromURL, []providertest.URLCase[Config]{
		{URL: "azblob://backups", Want: Config{Container: "backups"}},
		{URL: "azblob://backups/", Want: Config{Container: "backups"}},
		{URL: "azblob://backups/db1", Want: Config{Container: "backups", Prefix: "db1"}},
		{URL: "azblob://backups/db1/main/", Want: Config{Container: "backups", Prefix: "db1/main"}},
		{URL: "azblob://my-backups-01/p?block_size=16MB", Want: Config{Container: "my-backups-01", Prefix: "p", BlockSize: 16 << 20}},
		{URL: "azblob://abc?block_size=4MiB&multipart_threshold=1048576&max_blocks=10000", Want: Config{Container: "abc", BlockSize: 4 << 20, MultipartThreshold: 1 << 20, MaxBlocks: 10000}},
		{URL: "azblob://abc?block_size=1g", Want: Config{Container: "abc", BlockSize: 1 << 30}},
		{URL: "azblob://abc?block_size=512KiB", Want: Config{Container: "abc", BlockSize: 512 << 10}},
		{URL: "azblob://abc/odd%20name", Want: Config{Container: "abc", Prefix: "odd name"}},

		{URL: "s3://backups", Err: "scheme"},
		{URL: "azblob:backups", Err: "use the form"},
		{URL: "azblob:///prefix", Err: "no container"},
		{URL: "azblob://user:secret@backups", Err: "user information"},
		{URL: "azblob://backups:443/p", Err: "port"},
		{URL: "azblob://backups#frag", Err: "fragment"},
		{URL: "azblob://Backups", Err: "lowercase"},
		{URL: "azblob://ab", Err: "3 to 63"},
		{URL: "azblob://a--b", Err: "single hyphens"},
		{URL: "azblob://-ab", Err: "starting"},
		{URL: "azblob://" + strings.Repeat("a", 64), Err: "3 to 63"},
		{URL: "azblob://backups//p", Err: "prefix"},
		{URL: "azblob://backups/a/../b", Err: "prefix"},
		{URL: "azblob://backups?region=eu", Err: `unknown query parameter "region" (known: block_size, max_blocks, multipart_threshold)`},
		{URL: "azblob://backups?block_size=16XB", Err: "unknown unit"},
		{URL: "azblob://backups?block_size=", Err: "positive size"},
		{URL: "azblob://backups?block_size=0", Err: "positive"},
		{URL: "azblob://backups?block_size=-1", Err: "positive size"},
		{URL: "azblob://backups?block_size=99999999999999999999", Err: "out of range"},
		{URL: "azblob://backups?block_size=5000MiB", Err: "at most"},
		{URL: "azblob://backups?block_size=1MiB&block_size=2MiB", Err: "given 2 times"},
		{URL: "azblob://backups?max_blocks=0", Err: "between 1 and 50000"},
		{URL: "azblob://backups?max_blocks=many", Err: "invalid syntax"},
		{URL: "azblob://backups?block_size=1MiB&multipart_threshold=2MiB", Err: "must not exceed the block size"},
		{URL: "azblob://backups?%zz", Err: "query"},
	})
}

func TestBlockSizeFor(t *testing.T) {
	const tib = 1 << 40
	for _, tc := range []struct {
		size, configured int64
		maxBlocks        int
		want             int64
		wantErr          bool
	}{
		{0, 16 * mib, MaxBlockCount, 16 * mib, false},
		{100 * mib, 16 * mib, MaxBlockCount, 16 * mib, false},
		{16 * mib * MaxBlockCount, 16 * mib, MaxBlockCount, 16 * mib, false},
		{16*mib*MaxBlockCount + 1, 16 * mib, MaxBlockCount, 17 * mib, false},
		// 1 TiB in 10,000 blocks needs 104.86 MiB each, in 1,000 blocks
		// 1048.58 MiB: rounded up to whole MiB.
		{tib, 16 * mib, 10_000, 105 * mib, false},
		{tib, 16 * mib, 1_000, 1049 * mib, false},
		{tib, 200 * mib, 10_000, 200 * mib, false},
		{tib, 16 * mib, MaxBlockCount, 21 * mib, false},
		{4000 * mib * MaxBlockCount, 16 * mib, MaxBlockCount, 4000 * mib, false},
		{4000*mib*MaxBlockCount + 1, 16 * mib, MaxBlockCount, 0, true},
		{10 * tib, 16 * mib, 1_000, 0, true},
	} {
		t.Run(fmt.Sprintf("%d in %d", tc.size, tc.maxBlocks), func(t *testing.T) {
			got, err := blockSizeFor(tc.size, tc.configured, tc.maxBlocks)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("blockSizeFor(%d, %d, %d) = %d (%.2f MiB), want %d", tc.size, tc.configured, tc.maxBlocks, got, float64(got)/mib, tc.want)
			}
			if err == nil && (tc.size+got-1)/got > int64(tc.maxBlocks) {
				t.Errorf("%d blocks of %d exceed %d", (tc.size+got-1)/got, got, tc.maxBlocks)
			}
		})
	}
}

func TestBlockID(t *testing.T) {
	a, b := blockID([blockNonceBytes]byte{1}, 0), blockID([blockNonceBytes]byte{1}, 49_999)
	if len(a) != len(b) || a == b {
		t.Errorf("block IDs %q and %q: want distinct and of equal length", a, b)
	}
	if c := blockID([blockNonceBytes]byte{2}, 0); c == a {
		t.Errorf("block IDs of different uploads are both %q", a)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	resp := func(status int, code string) error {
		return fmt.Errorf("sdk: %w", &azcore.ResponseError{StatusCode: status, ErrorCode: code})
	}
	for _, tc := range []struct {
		name  string
		err   error
		class error // nil: none
	}{
		{"blob not found", resp(404, "BlobNotFound"), providers.ErrNotExist},
		{"container not found", resp(404, "ContainerNotFound"), providers.ErrNoBucket},
		{"already exists", resp(409, "BlobAlreadyExists"), providers.ErrExist},
		{"condition not met", resp(412, "ConditionNotMet"), providers.ErrExist},
		{"md5", resp(400, "Md5Mismatch"), providers.ErrChecksum},
		{"azurite md5", &azcore.ResponseError{StatusCode: 400, ErrorCode: "InvalidOperation",
			RawResponse: &http.Response{StatusCode: 400, Status: "400 Provided contentMD5 doesn't match."}}, providers.ErrChecksum},
		{"auth failed", resp(403, "AuthenticationFailed"), providers.ErrAccessDenied},
		{"authorization failure", resp(403, "AuthorizationFailure"), providers.ErrAccessDenied},
		{"403 without code", resp(403, ""), providers.ErrAccessDenied},
		{"throttled", resp(503, "ServerBusy"), providers.ErrTransient},
		{"internal", resp(500, "InternalError"), providers.ErrTransient},
		{"too many requests", resp(429, ""), providers.ErrTransient},
		{"bad request", resp(400, "InvalidHeaderValue"), nil},
		{"reset", &url.Error{Op: "Put", URL: "https://a.blob.core.windows.net/c/k?sig=SECRET", Err: syscall.ECONNRESET}, providers.ErrTransient},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, providers.ErrTransient},
		{"unexpected EOF", io.ErrUnexpectedEOF, providers.ErrTransient},
		{"no such host", &url.Error{Op: "Get", URL: "https://typo.blob.core.windows.net/", Err: &net.DNSError{Err: "no such host", Name: "typo.blob.core.windows.net", IsNotFound: true}}, nil},
		{"identity", fmt.Errorf("wrapped: %w", tokenFailure{}), providers.ErrAccessDenied},
		{"other", errors.New("something"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(ctx, tc.err)
			for _, class := range []error{providers.ErrNotExist, providers.ErrNoBucket, providers.ErrExist, providers.ErrChecksum, providers.ErrAccessDenied, providers.ErrTransient} {
				if is := errors.Is(got, class); is != (class == tc.class) {
					t.Errorf("classify(%v) = %v: errors.Is(%v) = %v", tc.err, got, class, is)
				}
			}
			if strings.Contains(got.Error(), "SECRET") || strings.Contains(got.Error(), "\n") {
				t.Errorf("classify(%v) = %q: want one line without the query", tc.err, got)
			}
		})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := classify(cancelled, &url.Error{Op: "Put", URL: "x", Err: context.Canceled}); errors.Is(err, providers.ErrTransient) {
		t.Errorf("a cancelled request is transient: %v", err)
	}
}

// tokenFailure is marked like the SDK's failures to get a token for an
// Azure identity.
type tokenFailure struct{}

func (tokenFailure) Error() string { return "DefaultAzureCredential: failed to acquire a token" }
func (tokenFailure) NonRetriable() {}

// TestTransientAnswers runs against a fake service that fails every
// request, to see that each failure is classified as transient and that
// the SDK did not retry on its own.
func TestTransientAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"server busy", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-ms-error-code", "ServerBusy")
			w.WriteHeader(http.StatusServiceUnavailable)
		}},
		{"connection closed", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
		{"truncated answer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("<?xml"))
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				tc.handler(w, r)
			}))
			defer ts.Close()
			cs := fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s/%s;",
				testserver.AzuriteAccount, testserver.AzuriteKey, ts.URL, testserver.AzuriteAccount)
			_, err := Open(t.Context(), Config{Container: "fake", ConnectionString: cs})
			if !errors.Is(err, providers.ErrTransient) {
				t.Errorf("Open = %v, want ErrTransient", err)
			}
			if n := requests.Load(); n != 1 {
				t.Errorf("Open made %d requests, want 1 (no retries in the SDK)", n)
			}
		})
	}
}
