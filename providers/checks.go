package providers

// Checks every store makes of a call before its first request, here once
// so that all stores refuse alike and in the same words.

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// KeyPrefix returns a configured prefix as a store prepends it to keys:
// with a trailing slash, or "" for none.
func KeyPrefix(prefix string) string {
	if prefix == "" {
		return ""
	}
	return prefix + "/"
}

// PrefixedKey returns the store's name for key under prefix (which ends
// in "/" or is ""), after checking that key is valid.
func PrefixedKey(prefix, key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return prefix + key, nil
}

// CheckGet checks a Get of key from offset on store before any request:
// the key, by locate (which returns where the object lies, say its
// PrefixedKey, or refuses the key), then the offset and ctx. It returns
// what locate returns.
func CheckGet(ctx context.Context, store fmt.Stringer, key string, offset int64, locate func(key string) (string, error)) (string, error) {
	return checkCall(ctx, store, "get", "from", key, "offset", offset, locate)
}

// CheckPut is CheckGet for a Put of size bytes.
func CheckPut(ctx context.Context, store fmt.Stringer, key string, size int64, locate func(key string) (string, error)) (string, error) {
	return checkCall(ctx, store, "put", "into", key, "size", size, locate)
}

// CheckStat is CheckGet for a Stat.
func CheckStat(ctx context.Context, store fmt.Stringer, key string, locate func(key string) (string, error)) (string, error) {
	return checkCall(ctx, store, "stat", "in", key, "", 0, locate)
}

// CheckDelete is CheckGet for a Delete.
func CheckDelete(ctx context.Context, store fmt.Stringer, key string, locate func(key string) (string, error)) (string, error) {
	return checkCall(ctx, store, "delete", "from", key, "", 0, locate)
}

// checkCall makes the checks of CheckGet and the others. op and
// preposition spell the call in messages ("get %q from %s"); quantity
// names n, which must not be negative, or is "" when the call has none.
func checkCall(ctx context.Context, store fmt.Stringer, op, preposition, key, quantity string, n int64, locate func(string) (string, error)) (string, error) {
	where, err := locate(key)
	if err != nil {
		return "", fmt.Errorf("%s %s %s: %w", op, preposition, store, err)
	}
	if quantity != "" && n < 0 {
		return "", fmt.Errorf("%s %q %s %s: negative %s %d", op, key, preposition, store, quantity, n)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s %q %s %s: %w", op, key, preposition, store, err)
	}
	return where, nil
}

// EachURLParam calls set with the single value of each parameter in
// query, in the order of their names (so that a URL with two bad
// parameters always names the same one), after checking that it is one
// of known and given once, and returns the first error. noun is what the
// messages call a parameter ("query parameter").
func EachURLParam(query url.Values, known []string, noun string, set func(name, value string) error) error {
	for _, name := range slices.Sorted(maps.Keys(query)) {
		values := query[name]
		if !slices.Contains(known, name) {
			return fmt.Errorf("unknown %s %q (known: %s)", noun, name, strings.Join(known, ", "))
		}
		if len(values) != 1 {
			return fmt.Errorf("%s %q given %d times", noun, name, len(values))
		}
		if err := set(name, values[0]); err != nil {
			return err
		}
	}
	return nil
}
