#!/usr/bin/env bash
# services.sh — make sure the local PostgreSQL and Redis needed by the duplex
# test suite are installed, running and configured for logical replication.
#
# Idempotent: when everything is already in place it only checks and exits
# (well under two seconds). It prints every change it makes.
#
# If both DUPLEX_TEST_POSTGRES_URL and DUPLEX_TEST_REDIS_URL are set, local
# services are not managed at all; the script only checks that both answer.
set -euo pipefail

log() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# Minimum settings the tests need (many packages run in parallel, each with
# its own databases and replication slots).
MIN_REPLICATION_SLOTS=64
MIN_WAL_SENDERS=64
MIN_CONNECTIONS=300

if [[ $(id -u) -eq 0 ]]; then
	SUDO=()
	AS_POSTGRES=(runuser -u postgres --)
else
	command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed"
	SUDO=(sudo)
	AS_POSTGRES=(sudo -u postgres)
fi

# ---------------------------------------------------------------------------
# External services given by URL: only check them.
# ---------------------------------------------------------------------------
if [[ -n ${DUPLEX_TEST_POSTGRES_URL:-} && -n ${DUPLEX_TEST_REDIS_URL:-} ]]; then
	log "DUPLEX_TEST_POSTGRES_URL and DUPLEX_TEST_REDIS_URL are set; not managing local services"
	if command -v psql >/dev/null 2>&1; then
		wal=$(psql -X -At -v ON_ERROR_STOP=1 -d "$DUPLEX_TEST_POSTGRES_URL" -c 'SHOW wal_level') ||
			die "PostgreSQL at DUPLEX_TEST_POSTGRES_URL does not answer"
		log "PostgreSQL answers (wal_level=$wal)"
		[[ $wal == logical ]] || log "WARNING: wal_level is '$wal', tests need 'logical'"
	elif command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -d "$DUPLEX_TEST_POSTGRES_URL" || die "PostgreSQL at DUPLEX_TEST_POSTGRES_URL does not answer"
		log "PostgreSQL answers"
	else
		log "WARNING: neither psql nor pg_isready installed; cannot check DUPLEX_TEST_POSTGRES_URL"
	fi
	if command -v redis-cli >/dev/null 2>&1; then
		[[ $(redis-cli -u "$DUPLEX_TEST_REDIS_URL" ping 2>/dev/null) == PONG ]] ||
			die "Redis at DUPLEX_TEST_REDIS_URL does not answer PING"
		log "Redis answers"
	else
		log "WARNING: redis-cli not installed; cannot check DUPLEX_TEST_REDIS_URL"
	fi
	exit 0
fi

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
apt_install() {
	log "installing $* with apt-get"
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; then
		log "apt-get install failed; running apt-get update and retrying"
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
	fi
}

if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
	apt_install postgresql
fi
if ! command -v redis-server >/dev/null 2>&1; then
	apt_install redis-server
fi

# ---------------------------------------------------------------------------
# PostgreSQL cluster
# ---------------------------------------------------------------------------
[[ -d /etc/postgresql ]] || die "/etc/postgresql does not exist (is the postgresql package installed?)"
# shellcheck disable=SC2012 # version directories are plain numbers
V=$(ls /etc/postgresql | sort -V | tail -n 1)
[[ -n $V ]] || die "no cluster found in /etc/postgresql"
[[ -d /etc/postgresql/$V/main ]] || die "cluster $V/main not found in /etc/postgresql/$V"
HBA=/etc/postgresql/$V/main/pg_hba.conf

cluster_field() { pg_lsclusters -h | awk -v v="$V" -v f="$1" '$1 == v && $2 == "main" { print $f }'; }
PORT=$(cluster_field 3)
[[ -n $PORT ]] || die "pg_lsclusters does not list cluster $V/main"

wait_ready() {
	local i
	for ((i = 0; i < 60; i++)); do
		if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
			return 0
		fi
		sleep 0.5
	done
	die "PostgreSQL $V/main not ready on 127.0.0.1:$PORT after 30 s (see /var/log/postgresql/postgresql-$V-main.log)"
}

if [[ $(cluster_field 4) != online* ]]; then
	log "starting PostgreSQL cluster $V/main"
	"${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$V" main start
fi
wait_ready

# psql as the postgres OS user over the Unix socket (peer or trust auth works
# there even on a freshly installed cluster).
pgsql() { (cd / && "${AS_POSTGRES[@]}" psql -X -q -At -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"); }

# --- pg_hba.conf: trust for local, 127.0.0.1 and ::1, normal + replication ---
REQUIRED_HBA=(
	"local replication all trust"
	"host replication all 127.0.0.1/32 trust"
	"host replication all ::1/128 trust"
	"local all all trust"
	"host all all 127.0.0.1/32 trust"
	"host all all ::1/128 trust"
)
# A required rule counts as present only when it sits in the leading block of
# rules (preceded by required rules only), so that it takes precedence.
hba_leading_block() {
	"${SUDO[@]}" cat "$HBA" | awk -v req="$(printf '%s\n' "${REQUIRED_HBA[@]}")" '
		BEGIN { n = split(req, r, "\n"); for (i = 1; i <= n; i++) if (r[i] != "") want[r[i]] = 1 }
		{ sub(/#.*/, ""); $1 = $1; if ($0 == "") next; if (!($0 in want)) exit; print }'
}
leading=$(hba_leading_block)
missing=()
for rule in "${REQUIRED_HBA[@]}"; do
	grep -qxF "$rule" <<<"$leading" || missing+=("$rule")
done
# overwrite SRC DST: replace DST's content in place (keeps owner and mode).
overwrite() {
	# shellcheck disable=SC2016 # expanded by the inner sh
	"${SUDO[@]}" sh -c 'cat "$1" > "$2"' sh "$1" "$2"
}
if ((${#missing[@]} > 0)); then
	log "adding to $HBA (at the top of the rules):"
	printf '    %s\n' "${missing[@]}"
	old_hba=$(mktemp)
	new_hba=$(mktemp)
	trap 'rm -f "$old_hba" "$new_hba"' EXIT
	"${SUDO[@]}" cat "$HBA" >"$old_hba"
	awk -v add="$(printf '%s\n' "${missing[@]}")" '
		!done && $0 !~ /^[[:space:]]*(#|$)/ {
			print "# added by duplex scripts/services.sh (must stay above the other rules)"
			print add
			done = 1
		}
		{ print }
		END { if (!done) { print "# added by duplex scripts/services.sh"; print add } }' "$old_hba" >"$new_hba"
	[[ -e $HBA.duplex-orig ]] || "${SUDO[@]}" cp -p "$HBA" "$HBA.duplex-orig"
	overwrite "$new_hba" "$HBA"
	# pg_hba_file_rules parses the file on disk: never load a broken one.
	hba_errors=$(pgsql -c "SELECT line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL")
	if [[ -n $hba_errors ]]; then
		overwrite "$old_hba" "$HBA"
		die "edited $HBA was invalid ($hba_errors); previous content restored"
	fi
	log "reloading PostgreSQL configuration"
	pgsql -c 'SELECT pg_reload_conf()' >/dev/null
fi

# --- roles ---
roles=$(pgsql -c "SELECT rolname || ':' || (rolsuper AND rolreplication AND rolcanlogin)::text
	FROM pg_roles WHERE rolname IN ('root', 'postgres')")
for role in postgres root; do
	case $'\n'"$roles"$'\n' in
	*$'\n'"$role:true"$'\n'*) ;;
	*$'\n'"$role:false"$'\n'*)
		log "granting SUPERUSER REPLICATION LOGIN to role $role"
		pgsql -c "ALTER ROLE \"$role\" WITH SUPERUSER REPLICATION LOGIN"
		;;
	*)
		log "creating role $role (SUPERUSER REPLICATION LOGIN)"
		pgsql -c "CREATE ROLE \"$role\" WITH SUPERUSER REPLICATION LOGIN"
		;;
	esac
done

# --- server settings ---
read_settings() {
	local out
	out=$(pgsql -F ' ' -c "SELECT current_setting('wal_level'),
		current_setting('max_replication_slots'), current_setting('max_wal_senders'),
		current_setting('max_connections')")
	read -r wal_level slots senders conns <<<"$out"
}
read_settings
need_restart=0
if [[ $wal_level != logical ]]; then
	log "wal_level is '$wal_level'; setting it to logical"
	pgsql -c "ALTER SYSTEM SET wal_level = logical"
	need_restart=1
fi
ensure_min() { # name current minimum
	if (($2 < $3)); then
		log "$1 is $2; setting it to $3"
		pgsql -c "ALTER SYSTEM SET $1 = $3"
		need_restart=1
	fi
}
ensure_min max_replication_slots "$slots" "$MIN_REPLICATION_SLOTS"
ensure_min max_wal_senders "$senders" "$MIN_WAL_SENDERS"
ensure_min max_connections "$conns" "$MIN_CONNECTIONS"

if ((need_restart)); then
	log "restarting PostgreSQL cluster $V/main to apply settings"
	"${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$V" main restart
	wait_ready
	read_settings
	[[ $wal_level == logical ]] || die "wal_level is still '$wal_level' after restart"
	((slots >= MIN_REPLICATION_SLOTS && senders >= MIN_WAL_SENDERS && conns >= MIN_CONNECTIONS)) ||
		die "settings not applied after restart: max_replication_slots=$slots max_wal_senders=$senders max_connections=$conns"
fi

# Check the TCP path the tests use (postgres@127.0.0.1, trust).
psql -X -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c 'SELECT 1' >/dev/null ||
	die "cannot connect as postgres to 127.0.0.1:$PORT without a password"
log "PostgreSQL $V/main ready on 127.0.0.1:$PORT (wal_level=$wal_level max_replication_slots=$slots max_wal_senders=$senders max_connections=$conns)"

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
redis_ok() { [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }
if ! redis_ok; then
	log "starting redis-server on 127.0.0.1:6379"
	"${SUDO[@]}" mkdir -p /var/lib/redis /var/log/redis
	"${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
		--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	for ((i = 0; i < 60; i++)); do
		redis_ok && break
		sleep 0.5
	done
	redis_ok || die "Redis does not answer PING after 30 s (see /var/log/redis/ci.log)"
fi
log "Redis ready on 127.0.0.1:6379"

# ---------------------------------------------------------------------------
# Chromium, for the DLQ admin's browser tests (dlq/browser_test.go)
# ---------------------------------------------------------------------------
if [[ ${DUPLEX_SKIP_BROWSER:-} != 1 ]]; then
	bash "$(dirname "$0")/chromium.sh"
	log "Chromium ready at /usr/bin/chromium"
fi
