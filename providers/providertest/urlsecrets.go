package providertest

// Helpers for the repository-URL fuzz targets of every provider: finding
// the secrets a URL carries even when it does not parse, and checking
// that no message about the URL shows them.

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// QueryValues returns the values of parameter name in raw's query, each
// both as written and decoded, found the way url.ParseQuery finds them,
// so that they are found also when raw does not parse.
func QueryValues(raw, name string) []string {
	rest, _, _ := strings.Cut(raw, "#")
	_, query, ok := strings.Cut(rest, "?")
	if !ok {
		return nil
	}
	var values []string
	for _, field := range strings.Split(query, "&") {
		key, value, _ := strings.Cut(field, "=")
		if k, err := url.QueryUnescape(key); err != nil || k != name {
			continue
		}
		values = append(values, value)
		if v, err := url.QueryUnescape(value); err == nil && v != value {
			values = append(values, v)
		}
	}
	return values
}

// URLPassword returns the password in raw's user information as written,
// splitting raw the way url.Parse does, so that it is found also when raw
// does not parse.
func URLPassword(raw string) string {
	rest, _, _ := strings.Cut(raw, "#")
	rest, _, _ = strings.Cut(rest, "?")
	if i := strings.IndexByte(rest, ':'); i > 0 && validScheme(rest[:i]) {
		rest = rest[i+1:]
	}
	authority, ok := strings.CutPrefix(rest, "//")
	if !ok {
		return ""
	}
	authority, _, _ = strings.Cut(authority, "/")
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return ""
	}
	_, password, _ := strings.Cut(authority[:at], ":")
	return password
}

// validScheme reports whether url.Parse takes s, followed by ':', for a
// scheme.
func validScheme(s string) bool {
	for i, c := range []byte(s) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// CheckNoLeak fails if one of the messages about raw shows one of the
// secrets. Only secrets of at least 8 bytes that occur in raw exactly once
// are checked, and a message shows a secret only if it contains it, as is
// or %q-quoted, while the same message about raw with the secret
// overwritten does not: that rules out a secret that happens to read like
// a message's own words.
func CheckNoLeak(t *testing.T, raw string, secrets []string, messages func(raw string) []string) {
	t.Helper()
	for _, secret := range secrets {
		if len(secret) < 8 || strings.Count(raw, secret) != 1 {
			continue
		}
		msg, ok := showing(messages(raw), secret)
		if !ok {
			continue
		}
		other := strings.Repeat("x", len(secret))
		if other == secret {
			other = strings.Repeat("y", len(secret))
		}
		if _, ok := showing(messages(strings.Replace(raw, secret, other, 1)), secret); ok {
			continue
		}
		t.Fatalf("the message about %q shows the secret %q: %s", raw, secret, msg)
	}
}

// showing returns the first message that contains secret, as is or
// %q-quoted.
func showing(messages []string, secret string) (string, bool) {
	quoted := strconv.Quote(secret)
	quoted = quoted[1 : len(quoted)-1]
	for _, m := range messages {
		if strings.Contains(m, secret) || strings.Contains(m, quoted) {
			return m, true
		}
	}
	return "", false
}
