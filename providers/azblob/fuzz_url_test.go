package azblob

import (
	"net/url"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// FuzzAzblobURL checks how an azblob:// repository URL becomes a Config,
// which happens before any network access: providers.ParseURL, then
// configFromURL (which applies Config.withDefaults). It checks that
//
//   - parsing the same URL always gives the same Config or the same error;
//   - an accepted URL has scheme azblob, no user information, port or
//     fragment, and only known parameters, and its Config keeps the
//     promises of validateContainer and withDefaults (a container name
//     Azure's rules allow, a prefix that is a valid key, a block size of
//     at most 4000 MiB, 1 to 50,000 blocks, a threshold no larger than a
//     block, no connection string) both before and after the defaults
//     are filled in;
//   - no error and no store name shows a credential the URL carries: the
//     password of its user information, a SAS token's signature (sig=,
//     as in a SAS URL pasted by mistake), or an account key or SAS of a
//     connection string given where the URL belongs.
//
// Run it longer by hand with
//
//	go test -run '^$' -fuzz '^FuzzAzblobURL$' -fuzztime 10m ./providers/azblob
func FuzzAzblobURL(f *testing.F) {
	providertest.FuzzConfigURL(f, []string{
		"azblob://backups",
		"azblob://backups/",
		"azblob://my-backups-01/db1/main/",
		"azblob://abc?block_size=4MiB&multipart_threshold=1048576&max_blocks=10000",
		"azblob://abc?block_size=512KiB",
		"azblob://abc?block_size=4000MiB&max_blocks=50000",
		"azblob://abc/odd%20name",
		"azblob://$root/p",
		"azblob://backups?block_size=5000MiB",
		"azblob://backups?block_size=99999999999999999999",
		"azblob://backups?max_blocks=0",
		"azblob://backups?max_blocks=many",
		"azblob://backups?block_size=1MiB&multipart_threshold=2MiB",
		"azblob://backups?block_size=1MiB&block_size=2MiB",
		"azblob://backups?region=eu",
		"azblob://backups?%zz",
		"azblob://backups//p",
		"azblob://backups/a/../b",
		"azblob://backups/a%2F..%2Fb",
		"azblob://backups/a%00b",
		"azblob://Backups",
		"azblob://ab",
		"azblob://a--b",
		"azblob://-ab",
		"azblob://" + strings.Repeat("a", 64),
		"azblob://backups:443/p",
		"azblob://backups:/p",
		"azblob://[::1]/p",
		"azblob://account:c3VwZXJzZWNyZXRrZXk=@backups/p",
		"azblob://backups#frag",
		"azblob:backups",
		"azblob:///prefix",
		"AZBLOB://backups",
		"s3://backups",
		"https://account.blob.core.windows.net/backups",
		"",
	}, providertest.ConfigURL[Config]{
		Scheme:   "azblob",
		Params:   queryParams,
		Parse:    configFromURL,
		Defaults: Config.withDefaults,
		Name: func(full Config) string {
			return (&Store{container: full.Container, keyPrefix: providers.KeyPrefix(full.Prefix)}).String()
		},
		Location:  func(c Config) (string, string) { return c.Container, c.Prefix },
		ExactName: true,
		Secrets:   azblobSecrets,
		Accepted:  checkAzblobAccepted,
	})
}

// checkAzblobAccepted checks what configFromURL and withDefaults promise
// about an accepted URL beyond what every provider promises.
func checkAzblobAccepted(t *testing.T, u *url.URL, cfg, full Config) {
	t.Helper()
	switch {
	case cfg.Container != u.Hostname() || validateContainer(cfg.Container) != nil:
		t.Fatalf("%s: container %q (%v)", u, cfg.Container, validateContainer(cfg.Container))
	case strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/"):
		t.Fatalf("%s: prefix %q starts or ends with a slash", u, cfg.Prefix)
	case cfg.Prefix != "" && "/"+cfg.Prefix != strings.TrimSuffix(u.Path, "/"):
		t.Fatalf("%s: prefix %q is not the path %q", u, cfg.Prefix, u.Path)
	case cfg.BlockSize < 0 || cfg.BlockSize > maxBlockBytes:
		t.Fatalf("%s: block size %d", u, cfg.BlockSize)
	case cfg.MaxBlocks < 0 || cfg.MaxBlocks > MaxBlockCount:
		t.Fatalf("%s: max blocks %d", u, cfg.MaxBlocks)
	case cfg.MultipartThreshold < 0:
		t.Fatalf("%s: multipart threshold %d", u, cfg.MultipartThreshold)
	case cfg.ConnectionString != "":
		t.Fatalf("%s: a connection string, which no URL parameter sets", u.Redacted())
	case full.BlockSize <= 0 || full.BlockSize%mib != 0 || full.BlockSize > maxBlockBytes:
		t.Fatalf("%s: block size %d after defaults", u, full.BlockSize)
	case full.BlockSize < cfg.BlockSize:
		t.Fatalf("%s: withDefaults shrinks the block size %d to %d", u, cfg.BlockSize, full.BlockSize)
	case full.MaxBlocks < 1 || full.MaxBlocks > MaxBlockCount:
		t.Fatalf("%s: max blocks %d after defaults", u, full.MaxBlocks)
	case full.MultipartThreshold <= 0 || full.MultipartThreshold > full.BlockSize:
		t.Fatalf("%s: multipart threshold %d after defaults, block size %d", u, full.MultipartThreshold, full.BlockSize)
	}
}

// azblobSecrets returns the credentials raw may carry: the password of
// its user information, the signature of a SAS token in its query, and
// the account key or SAS of a connection string.
func azblobSecrets(raw string) []string {
	secrets := append([]string{providertest.URLPassword(raw)}, providertest.QueryValues(raw, "sig")...)
	for _, field := range strings.Split(raw, ";") {
		for _, name := range []string{"AccountKey=", "SharedAccessSignature="} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(field), name); ok {
				secrets = append(secrets, v)
			}
		}
	}
	return secrets
}
