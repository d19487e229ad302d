package kms

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// awsWrapper wraps with AWS KMS Encrypt/Decrypt under a symmetric key.
// A 32-byte key is far below Encrypt's 4 KiB limit, so no data key of
// KMS's own (GenerateDataKey) is needed: the repository's key is made by
// pgstow and only wrapped here, the same for every provider.
type awsWrapper struct {
	uri, keyID string
	// made is the key ARN an alias named when the copy was made (the
	// URI's key parameter, which Wrap records): Decrypt through the
	// alias fails once `aws kms update-alias` has moved it.
	made   string
	client *awskms.Client
}

// awsKeyARN is a KMS key's ARN, as Encrypt reports it.
var awsKeyARN = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):([0-9]{12}):key/[A-Za-z0-9-]+$`)

// isAlias reports whether a key id names an alias (alias/<name> or an
// alias ARN), which may move to another key.
func isAlias(keyID string) bool {
	return strings.HasPrefix(keyID, "alias/") || strings.Contains(keyID, ":alias/")
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
	made := q.Get("key")
	if made != "" && (!isAlias(keyID) || !awsKeyARN.MatchString(made)) {
		return nil, fmt.Errorf("%w %q: key %q is not the key ARN an alias named (pgstow records it)", ErrBadURI, uri, made)
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
	return &awsWrapper{uri: uri, keyID: keyID, made: made, client: client}, nil
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
	if !isAlias(w.keyID) {
		return w.uri, out.CiphertextBlob, nil
	}
	// Through an alias, the copy records the key that wrapped it (its
	// ARN, as Encrypt reports it), so that it still opens after the
	// alias moves. The URI's path stays the alias: its object name and
	// a pin by the alias still match it.
	arn := aws.ToString(out.KeyId)
	if !awsKeyARN.MatchString(arn) {
		return "", nil, fmt.Errorf("AWS KMS encrypt with %s: the answer names no key ARN (%q)", w.keyID, arn)
	}
	path, rawQuery, _ := strings.Cut(w.uri, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, fmt.Errorf("%w %q: %v", ErrBadURI, w.uri, err)
	}
	q.Set("key", arn)
	return path + "?" + q.Encode(), out.CiphertextBlob, nil
}

func (w *awsWrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	// KeyId makes KMS refuse a ciphertext of another key instead of
	// decrypting it with whichever key made it.
	pt, err := w.decrypt(ctx, w.keyID, wrapped)
	if err == nil || w.made == "" || !otherKey(err) {
		return pt, err
	}
	// The alias has moved since the copy was made: decrypt with the key
	// the copy records. That key is taken from the copy, which whoever
	// can write to the bucket can plant, so it must be in the account
	// and region of the key the alias names now (an alias can only ever
	// name keys there): a key of someone else's, whose policy lets this
	// host decrypt, would otherwise pass a pin by the alias.
	desc, derr := w.client.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String(w.keyID)})
	if derr != nil {
		return nil, fmt.Errorf("%w; find the key %s names now, to check the key %s the copy was made with: %w", err, w.keyID, w.made, derr)
	}
	now := awsKeyARN.FindStringSubmatch(aws.ToString(desc.KeyMetadata.Arn))
	then := awsKeyARN.FindStringSubmatch(w.made)
	if now == nil || then == nil || now[1] != then[1] || now[2] != then[2] {
		return nil, fmt.Errorf("%w; the copy says it was made with %s, which is not in the account and region of %s (%s): refused", err, w.made, w.keyID, aws.ToString(desc.KeyMetadata.Arn))
	}
	return w.decrypt(ctx, w.made, wrapped)
}

func (w *awsWrapper) decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	out, err := w.client.Decrypt(ctx, &awskms.DecryptInput{
		KeyId:             aws.String(keyID),
		CiphertextBlob:    wrapped,
		EncryptionContext: w.encryptionContext(),
	})
	if err != nil {
		return nil, fmt.Errorf("AWS KMS decrypt with %s: %w", keyID, err)
	}
	return out.Plaintext, nil
}

// otherKey reports whether Decrypt failed because the ciphertext is not
// the key's: IncorrectKeyException from AWS, InvalidCiphertextException
// from local-kms (and from AWS for some forms).
func otherKey(err error) bool {
	var incorrect *types.IncorrectKeyException
	var invalid *types.InvalidCiphertextException
	return errors.As(err, &incorrect) || errors.As(err, &invalid)
}
