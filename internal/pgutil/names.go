package pgutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/duplexsync/duplex"
)

var (
	unsafeName  = regexp.MustCompile(`[^a-z0-9_]+`)
	underscores = regexp.MustCompile(`_+`)
)

// Sanitize lower-cases s, turns anything but letters and digits into single
// underscores, and trims them: names built from it with "__" separators
// cannot collide.
func Sanitize(s string) string {
	s = unsafeName.ReplaceAllString(strings.ToLower(s), "_")
	return strings.Trim(underscores.ReplaceAllString(s, "_"), "_")
}

// ObjectName returns prefix + Sanitize(sync) + "__" + Sanitize(system),
// shortened past PostgreSQL's 63-byte identifier limit with a hash of the
// full name, so that long names stay distinct.
func ObjectName(prefix, sync, system string) string {
	n := prefix + Sanitize(sync) + "__" + Sanitize(system)
	if len(n) > 63 {
		sum := sha256.Sum256([]byte(n))
		n = n[:63-9] + "_" + hex.EncodeToString(sum[:4])
	}
	return n
}

// CheckSource returns the problems of a change source's common settings,
// each a *duplex.ConfigError naming the field: a connection string, usable
// sync and system names, and at least one schema-qualified table.
func CheckSource(connString, sync, system string, tables []duplex.Table) []error {
	var errs []error
	if connString == "" {
		errs = append(errs, &duplex.ConfigError{Field: "ConnString", Reason: "is required"})
	}
	if Sanitize(sync) == "" {
		errs = append(errs, &duplex.ConfigError{Field: "Sync", Reason: fmt.Sprintf("%q is not a usable name (letters, digits, _)", sync)})
	}
	if Sanitize(system) == "" {
		errs = append(errs, &duplex.ConfigError{Field: "System", Reason: fmt.Sprintf("%q is not a usable name (letters, digits, _)", system)})
	}
	if len(tables) == 0 {
		errs = append(errs, &duplex.ConfigError{Field: "Tables", Reason: "lists no table"})
	}
	for _, t := range tables {
		if t.Schema == "" || t.Name == "" {
			errs = append(errs, &duplex.ConfigError{Field: "Tables", Reason: fmt.Sprintf("%q is not schema-qualified", t.String())})
		}
	}
	return errs
}

var usableNameRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// UsableName reports whether a sync name maps one to one onto slot and
// origin names (which are lower-cased and restricted to [a-z0-9_]).
func UsableName(name string) bool {
	return usableNameRE.MatchString(name) && strings.Trim(name, "_") != ""
}
