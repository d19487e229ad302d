package s3

import (
	"context"
	"net"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// unsignedOnLoopback leaves a body that carries our CRC32C out of the SigV4
// signature when the request goes over TLS (as the SDK does by itself) or
// to a loopback address, and signs it otherwise.
//
// Signing a body means a SHA-256 of every byte on each side, about 0.8
// CPU-s per GB here for pgstow and as much again for a MinIO on the same
// host; over TLS or loopback it protects against nothing, since no one
// in between can change the bytes. Corruption is still caught, because
// the store checks the CRC32C header, which is signed. Plain HTTP to
// another host keeps the signed body: there, the signature is what stops a
// body altered on the way.
func unsignedOnLoopback(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		_, err := stack.Finalize.Swap(payloadHashStep, payloadSigning{})
		return err
	})
}

// payloadHashStep is the ID of the SDK's finalize step that sets the
// payload hash, which payloadSigning takes the place of.
const payloadHashStep = "ComputePayloadHash"

// payloadSigning chooses the SDK's unsigned or signed payload per request.
type payloadSigning struct{}

func (payloadSigning) ID() string { return payloadHashStep }

func (payloadSigning) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	if req, ok := in.Request.(*smithyhttp.Request); ok && (req.IsHTTPS() || isLoopback(req.URL.Hostname())) {
		return (&v4.UnsignedPayload{}).HandleFinalize(ctx, in, next)
	}
	return (&v4.ComputePayloadSHA256{}).HandleFinalize(ctx, in, next)
}

// isLoopback reports whether host names this machine: "localhost" or a
// loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
