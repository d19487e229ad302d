package kms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// gcpScope is the OAuth scope of Cloud KMS.
const gcpScope = "https://www.googleapis.com/auth/cloudkms"

// gcpKeyName is a crypto key's resource name; a version is not given:
// encrypt uses the primary version and decrypt finds the one that
// encrypted (the ciphertext names it), so rotating versions in Cloud KMS
// needs nothing from pgstow.
var gcpKeyName = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$`)

// gcpWrapper speaks the Cloud KMS REST API (v1 cryptoKeys.encrypt and
// decrypt) over net/http: the Go client library would bring gRPC into the
// binary for two calls.
type gcpWrapper struct {
	uri, name, endpoint string
	client              *http.Client
	tokens              oauth2.TokenSource
}

func openGCP(ctx context.Context, uri, name string, q url.Values, opts Options) (Wrapper, error) {
	if !gcpKeyName.MatchString(name) {
		return nil, fmt.Errorf("%w %q: want gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K", ErrBadURI, uri)
	}
	endpoint := "https://cloudkms.googleapis.com"
	if e := q.Get("endpoint"); e != "" {
		var err error
		if endpoint, err = checkEndpoint(uri, e); err != nil {
			return nil, err
		}
	}
	tokens := opts.GCPTokenSource
	if tokens == nil {
		ts, err := google.DefaultTokenSource(ctx, gcpScope)
		if err != nil {
			return nil, fmt.Errorf("google application default credentials for %s: %w", uri, err)
		}
		tokens = ts
	}
	client := opts.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	return &gcpWrapper{uri: uri, name: name, endpoint: endpoint, client: client, tokens: oauth2.ReuseTokenSource(nil, tokens)}, nil
}

func (w *gcpWrapper) URI() string { return w.uri }

func (w *gcpWrapper) Wrap(ctx context.Context, dataKey []byte) (string, []byte, error) {
	var out struct {
		Ciphertext []byte `json:"ciphertext"`
	}
	in := map[string]any{"plaintext": dataKey, "additionalAuthenticatedData": []byte(dataKeyContext)}
	if err := w.call(ctx, "encrypt", in, &out); err != nil {
		return "", nil, err
	}
	if len(out.Ciphertext) == 0 {
		return "", nil, fmt.Errorf("google cloud KMS encrypt with %s: no ciphertext in the answer", w.name)
	}
	return w.uri, out.Ciphertext, nil
}

func (w *gcpWrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	var out struct {
		Plaintext []byte `json:"plaintext"`
	}
	in := map[string]any{"ciphertext": wrapped, "additionalAuthenticatedData": []byte(dataKeyContext)}
	if err := w.call(ctx, "decrypt", in, &out); err != nil {
		return nil, err
	}
	return out.Plaintext, nil
}

// call POSTs to {endpoint}/v1/{name}:{method}; []byte fields travel as
// standard base64, as the API's "bytes" type does.
func (w *gcpWrapper) call(ctx context.Context, method string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	tok, err := w.tokens.Token()
	if err != nil {
		return fmt.Errorf("google cloud KMS %s with %s: credentials: %w", method, w.name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.endpoint+"/v1/"+w.name+":"+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("google cloud KMS %s with %s: %w", method, w.name, err)
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp, "cloudkms")
	if err != nil {
		return fmt.Errorf("google cloud KMS %s with %s: %w", method, w.name, err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("google cloud KMS %s with %s: answer: %w", method, w.name, err)
	}
	return nil
}
