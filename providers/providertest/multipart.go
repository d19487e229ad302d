package providertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pgstow/pgstow/providers"
)

// RunMultipart checks the sizes around a provider's multipart threshold
// and part size: partSize is the part size the store returned by open
// uses, and its threshold for switching to multipart must be at most
// partSize. Objects of 0, 1, part−1, part, part+1 and several parts plus
// one byte must round trip, carry the checksum, honour IfAbsent, and a
// multipart write cancelled half-way must leave no object.
func RunMultipart(t *testing.T, open func(t *testing.T) providers.Store, partSize int) {
	sizes := []int{0, 1, partSize - 1, partSize, partSize + 1, 3*partSize + 1}
	for i, n := range sizes {
		t.Run(fmt.Sprintf("size %d", n), func(t *testing.T) {
			t.Parallel()
			s := open(t)
			data := content(uint64(100+i), n)
			key := fmt.Sprintf("mp/obj-%d", n)
			put(t, s, key, data, providers.PutOptions{IfAbsent: true, CRC32C: crc32c(data), HasCRC32C: true})
			checkObject(t, s, key, data)
			if n > 2 {
				checkBytes(t, "middle range", get(t, s, key, int64(n/2)-1, 3), data[n/2-1:n/2+2])
			}
			err := s.Put(t.Context(), key, bytes.NewReader(data), int64(n), providers.PutOptions{IfAbsent: true})
			if !errors.Is(err, providers.ErrExist) {
				t.Fatalf("second IfAbsent put of %d bytes: %v, want ErrExist", n, err)
			}
		})
	}
	t.Run("wrong checksum", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		data := content(7, 2*partSize+5)
		err := s.Put(t.Context(), "mp/bad", bytes.NewReader(data), int64(len(data)),
			providers.PutOptions{CRC32C: crc32c(data) ^ 1, HasCRC32C: true})
		if !errors.Is(err, providers.ErrChecksum) {
			t.Fatalf("multipart put with a wrong CRC32C: %v, want ErrChecksum", err)
		}
		checkNotExist(t, s, "mp/bad")
	})
	t.Run("cancelled half-way", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		data := content(8, 4*partSize)
		ctx, cancel := context.WithCancel(t.Context())
		body := &cancellingReader{r: bytes.NewReader(data), cancelAfter: int64(2*partSize + partSize/2), cancel: cancel}
		err := s.Put(ctx, "mp/cancelled", body, int64(len(data)), providers.PutOptions{})
		if err == nil {
			t.Fatal("a multipart put cancelled half-way succeeded")
		}
		checkNotExist(t, s, "mp/cancelled")
	})
	t.Run("short body", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		data := content(9, 2*partSize)
		err := s.Put(t.Context(), "mp/short", bytes.NewReader(data[:len(data)-10]), int64(len(data)), providers.PutOptions{})
		if err == nil {
			t.Fatal("a multipart put with a short body succeeded")
		}
		checkNotExist(t, s, "mp/short")
	})
}
