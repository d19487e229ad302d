package kms

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
)

// awsWrapper wraps with AWS KMS Encrypt/Decrypt under a symmetric key.
// A 32-byte key is far below Encrypt's 4 KiB limit, so no data key of
// KMS's own (GenerateDataKey) is needed: the repository's key is made by
// pgstow and only wrapped here, the same for every provider.
type awsWrapper struct {
	uri, keyID string
	client     *awskms.Client
}

// awsRegion is a region name: it becomes part of the KMS host name
// (kms.<region>.amazonaws.com), so nothing else is taken.
var awsRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$`)

func openAWS(ctx context.Context, uri, keyID string, q url.Values) (Wrapper, error) {
	if keyID == "" {
		return nil, fmt.Errorf("%w %q: want awskms://<key id, ARN or alias/name>", ErrBadURI, uri)
	}
	var loadOpts []func(*config.LoadOptions) error
	region := q.Get("region")
	if region == "" {
		// An ARN names its region: arn:aws:kms:<region>:<account>:…
		if parts := strings.Split(keyID, ":"); len(parts) >= 6 && parts[0] == "arn" {
			region = parts[3]
		}
	}
	if region != "" && !awsRegion.MatchString(region) {
		return nil, fmt.Errorf("%w %q: region %q is not an AWS region name", ErrBadURI, uri, region)
	}
	if region != "" {
		loadOpts = append(loadOpts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration for %s: %w", uri, err)
	}
	var endpoint string
	if e := q.Get("endpoint"); e != "" {
		if endpoint, err = checkEndpoint(uri, e); err != nil {
			return nil, err
		}
	}
	client := awskms.NewFromConfig(cfg, func(o *awskms.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return &awsWrapper{uri: uri, keyID: keyID, client: client}, nil
}

func (w *awsWrapper) URI() string { return w.uri }

func (w *awsWrapper) encryptionContext() map[string]string {
	return map[string]string{"purpose": dataKeyContext}
}

func (w *awsWrapper) Wrap(ctx context.Context, dataKey []byte) (string, []byte, error) {
	out, err := w.client.Encrypt(ctx, &awskms.EncryptInput{
		KeyId:             aws.String(w.keyID),
		Plaintext:         dataKey,
		EncryptionContext: w.encryptionContext(),
	})
	if err != nil {
		return "", nil, fmt.Errorf("AWS KMS encrypt with %s: %w", w.keyID, err)
	}
	return w.uri, out.CiphertextBlob, nil
}

func (w *awsWrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	// KeyId makes KMS refuse a ciphertext of another key instead of
	// decrypting it with whichever key made it.
	out, err := w.client.Decrypt(ctx, &awskms.DecryptInput{
		KeyId:             aws.String(w.keyID),
		CiphertextBlob:    wrapped,
		EncryptionContext: w.encryptionContext(),
	})
	if err != nil {
		return nil, fmt.Errorf("AWS KMS decrypt with %s: %w", w.keyID, err)
	}
	return out.Plaintext, nil
}
