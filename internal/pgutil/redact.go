package pgutil

import (
	"net/url"
	"regexp"
	"strings"
)

// RedactDSN returns a connection string (PostgreSQL or Redis, URL or
// key=value) fit for messages: its password, in the user info, in
// ?password= or in password=, replaced by xxxxx.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") || strings.HasPrefix(dsn, "redis://") || strings.HasPrefix(dsn, "rediss://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable URL)"
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// kvPassword matches the value of password= in a key=value connection
// string, quoted (with \' escapes) or not.
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)

// DSNPasswords returns the passwords a connection string carries, in the
// forms they are written in it (decoded and as typed).
func DSNPasswords(dsn string) []string {
	var out []string
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
		if p := u.Query().Get("password"); p != "" {
			out = append(out, p)
		}
		if i := strings.Index(dsn, "://"); i >= 0 { // the raw form, as typed
			rest := dsn[i+3:]
			end := strings.IndexAny(rest, "/?#")
			if end < 0 {
				end = len(rest)
			}
			if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
				if _, p, ok := strings.Cut(rest[:at], ":"); ok && p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		p := strings.Trim(m[2], "'")
		if p != "" {
			out = append(out, p, m[2])
		}
	}
	return out
}
