package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
)

// maxUniqueNameLen is the maximum length of a name returned by UniqueName.
const maxUniqueNameLen = 50

// UniqueName returns a lowercase, identifier-safe name (only a-z, 0-9 and
// '_', starting with a letter, at most 50 bytes) that is unique to this call.
// It is built from prefix, the sanitized test name and a random suffix, and
// is meant for replication slots, publications, schemas and similar objects
// that must not collide between tests running in parallel.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	suffix := randomHex(t, 4)
	p := sanitize(prefix)
	if p == "" || p[0] < 'a' || p[0] > 'z' {
		p = "n" + p
	}
	// p + "_" + name + "_" + suffix
	budget := maxUniqueNameLen - len(p) - 1 - len(suffix)
	if budget < 0 {
		p = strings.TrimRight(p[:maxUniqueNameLen-1-len(suffix)], "_")
		return p + "_" + suffix
	}
	name := truncate(sanitize(t.Name()), budget-1)
	if name == "" {
		return p + "_" + suffix
	}
	return p + "_" + name + "_" + suffix
}

// sanitize lowercases s, replaces every character outside [a-z0-9] by '_',
// collapses runs of '_' and trims leading and trailing '_'.
func sanitize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	lastUnderscore := true // suppresses leading '_'
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	return strings.TrimRight(b.String(), "_")
}

// truncate shortens an already sanitized name to at most n bytes, without a
// trailing '_'.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) > n {
		s = s[:n]
	}
	return strings.TrimRight(s, "_")
}

// randomHex returns 2*n random lowercase hex digits.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: reading random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}
