package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// azureAPIVersion is the Key Vault REST API version of wrapkey/unwrapkey.
const azureAPIVersion = "7.4"

// azureAlg is the wrap algorithm: RSA-OAEP with SHA-256 (the vault key is
// RSA or RSA-HSM, with the wrapKey and unwrapKey operations allowed).
const azureAlg = "RSA-OAEP-256"

// azureWrapper speaks the Key Vault keys REST API (wrapkey, unwrapkey)
// through azcore's pipeline, which brings the retry policy and bearer
// token handling of the SDK without the keys client module.
type azureWrapper struct {
	uri        string
	host, name string
	version    string // "" until known: the key's current version
	query      string // the URI's query, kept in the URI of each copy
	base       string // https://<host> or the endpoint given
	pl         runtime.Pipeline
}

// azureVaultHost is a Key Vault or Managed HSM host in one of Azure's
// clouds: the bearer token goes to it (unless an endpoint is given), so
// no other host is taken.
var azureVaultHost = regexp.MustCompile(`^[a-zA-Z0-9-]{1,63}\.(vault\.azure\.net|vault\.azure\.cn|vault\.usgovcloudapi\.net|vault\.microsoftazure\.de|managedhsm\.azure\.net|managedhsm\.azure\.cn|managedhsm\.usgovcloudapi\.net)$`)

func openAzure(uri, rest string, q url.Values, opts Options) (Wrapper, error) {
	host, path, _ := strings.Cut(rest, "/")
	parts := strings.Split(path, "/")
	if !azureVaultHost.MatchString(host) || len(parts) < 2 || len(parts) > 3 || parts[0] != "keys" || parts[1] == "" || len(parts) == 3 && parts[2] == "" {
		return nil, fmt.Errorf("%w %q: want azurekv://<vault>.vault.azure.net/keys/<name>[/<version>]", ErrBadURI, uri)
	}
	w := &azureWrapper{uri: uri, host: host, name: parts[1], base: "https://" + host}
	if len(parts) == 3 {
		w.version = parts[2]
	}
	if _, query, ok := strings.Cut(uri, "?"); ok {
		w.query = "?" + query
	}
	if e := q.Get("endpoint"); e != "" {
		var err error
		if w.base, err = checkEndpoint(uri, e); err != nil {
			return nil, err
		}
	}
	cred := opts.AzureCredential
	if cred == nil {
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azure default credential for %s: %w", uri, err)
		}
		cred = c
	}
	// The token's audience is the vault's cloud: vault.azure.net, or a
	// sovereign cloud's suffix (vault.azure.cn, vault.usgovcloudapi.net).
	_, suffix, _ := strings.Cut(host, ".")
	scope := "https://" + suffix + "/.default"
	clientOpts := &policy.ClientOptions{}
	if opts.HTTPClient != nil {
		clientOpts.Transport = opts.HTTPClient
	}
	w.pl = runtime.NewPipeline("pgstow-kms", "v1", runtime.PipelineOptions{
		PerRetry: []policy.Policy{runtime.NewBearerTokenPolicy(cred, []string{scope}, nil)},
	}, clientOpts)
	return w, nil
}

func (w *azureWrapper) URI() string { return w.uri }

type azureKeyOp struct {
	Alg   string `json:"alg,omitempty"`
	Value string `json:"value"` // base64url without padding
	Kid   string `json:"kid,omitempty"`
}

func (w *azureWrapper) Wrap(ctx context.Context, dataKey []byte) (string, []byte, error) {
	out, err := w.call(ctx, "wrapkey", dataKey)
	if err != nil {
		return "", nil, err
	}
	ct, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(out.Value, "="))
	if err != nil || len(ct) == 0 {
		return "", nil, fmt.Errorf("azure key vault wrapkey with %s: bad value in the answer", w.name)
	}
	// The copy must name the version that wrapped it: unwrapping with a
	// later version of the key would fail.
	version := w.version
	if i := strings.LastIndex(out.Kid, "/keys/"+w.name+"/"); i >= 0 {
		version = out.Kid[i+len("/keys/"+w.name+"/"):]
	}
	if version == "" || strings.Contains(version, "/") {
		return "", nil, fmt.Errorf("azure key vault wrapkey with %s: the answer names no key version (kid %q)", w.name, out.Kid)
	}
	return "azurekv://" + w.host + "/keys/" + w.name + "/" + version + w.query, ct, nil
}

func (w *azureWrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	out, err := w.call(ctx, "unwrapkey", wrapped)
	if err != nil {
		return nil, err
	}
	dk, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(out.Value, "="))
	if err != nil {
		return nil, fmt.Errorf("azure key vault unwrapkey with %s: bad value in the answer", w.name)
	}
	return dk, nil
}

// call POSTs {base}/keys/{name}[/{version}]/{op}?api-version=….
func (w *azureWrapper) call(ctx context.Context, op string, value []byte) (*azureKeyOp, error) {
	path := "/keys/" + url.PathEscape(w.name)
	if w.version != "" {
		path += "/" + url.PathEscape(w.version)
	}
	req, err := runtime.NewRequest(ctx, http.MethodPost, w.base+path+"/"+op+"?api-version="+azureAPIVersion)
	if err != nil {
		return nil, err
	}
	if err := runtime.MarshalAsJSON(req, azureKeyOp{Alg: azureAlg, Value: base64.RawURLEncoding.EncodeToString(value)}); err != nil {
		return nil, err
	}
	resp, err := w.pl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("azure key vault %s with %s: %w", op, w.name, err)
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp, "keyvault")
	if err != nil {
		return nil, fmt.Errorf("azure key vault %s with %s: %w", op, w.name, err)
	}
	var out azureKeyOp
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("azure key vault %s with %s: answer: %w", op, w.name, err)
	}
	return &out, nil
}
