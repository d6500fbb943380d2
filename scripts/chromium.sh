#!/usr/bin/env bash
# chromium.sh — make sure Debian's headless-capable Chromium is installed at
# /usr/bin/chromium for the dlq admin browser tests (dlq/browser_test.go).
#
# Idempotent and quiet: when /usr/bin/chromium exists it only checks and
# exits. Otherwise it installs the "chromium" package with apt-get (as root,
# or through sudo when not root).
set -euo pipefail

log() { printf 'chromium: %s\n' "$*"; }
die() { printf 'chromium: ERROR: %s\n' "$*" >&2; exit 1; }

CHROMIUM=/usr/bin/chromium

if [[ -x $CHROMIUM ]]; then
	exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
	SUDO=()
else
	command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed; install the chromium package by hand"
	SUDO=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install Chromium so that $CHROMIUM exists"

export DEBIAN_FRONTEND=noninteractive
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Quiet unless something fails: apt's output is shown only then.
run() {
	"$@" >"$out" 2>&1 || { cat "$out" >&2; die "failed: $*"; }
}
log "installing chromium (apt-get)"
run "${SUDO[@]}" apt-get update -qq
run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

[[ -x $CHROMIUM ]] || die "chromium package installed but $CHROMIUM is missing"
log "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
