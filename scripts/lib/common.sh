# shellcheck shell=bash
# Shared helpers for the peer scripts: state directory, messages, readiness polling.
# Sourced, never run.

# Daemons and their tools live in sbin; a non-login root shell may not have it on PATH.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

QREMOTE_PEERS_DIR=${QREMOTE_PEERS_DIR:-/tmp/qremote-peers}
export QREMOTE_PEERS_DIR

# The addresses every script agrees on.
# shellcheck disable=SC2034 # used by the scripts that source this file
QREMOTE_NSD_ADDR=127.0.0.53
# shellcheck disable=SC2034
QREMOTE_DNS_ADDR=127.0.0.54
# MTA-STS: nginx serves every policy host on this address (scripts/lib/nginx.sh); the test
# domains under sts.test that publish a policy (scripts/lib/dns.sh) have mta-sts.<d> there,
# except down (127.0.18.99: nothing listens) and trickle (127.0.18.3: a scripted server in
# tests/sts.rs that answers too slowly).
# shellcheck disable=SC2034
QREMOTE_NGINX_ADDR=127.0.18.1
# shellcheck disable=SC2034
QREMOTE_STS_DOMAINS=(enforce expired notls unlisted fallback wild testing none missing badhost
	redirect big malformed chunked html down idchange warm trickle twotxt cnametxt)
# MTA-STS next to DANE (tests/dane_sts.rs): mail domains in the signed dane.test zone
# (scripts/lib/dane.sh publishes their TXT, MX and mta-sts.<d> records; nginx.sh their
# policies, each listing only some of the MX hosts).
# shellcheck disable=SC2034
QREMOTE_DANE_STS_DOMAINS=(both.dane.test bad.both.dane.test nodane.both.dane.test
	listed.both.dane.test listedbad.both.dane.test testing.both.dane.test)

say() { printf 'peers: %s\n' "$*" >&2; }
die() {
	printf 'peers: ERROR: %s\n' "$*" >&2
	exit 1
}

# Runs a command quietly; on failure prints what it said and dies with MESSAGE.
#   quiet MESSAGE cmd args...
quiet() {
	local msg=$1 out
	shift
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" >&2
		die "$msg"
	fi
}

# True if the pid file names a live process.
pid_alive() {
	local pid
	[ -s "$1" ] || return 1
	pid=$(tr -dc 0-9 <"$1")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Polls a condition every 0.1 s until it holds or SECONDS seconds have passed.
#   wait_until SECONDS cmd args...
wait_until() {
	local limit=$1 start=$SECONDS
	shift
	until "$@"; do
		((SECONDS - start < limit)) || return 1
		sleep 0.1
	done
}

proc_gone() { ! kill -0 "$1" 2>/dev/null; }

# Stops the process in a pid file (TERM, then KILL after 10 s) and removes the file.
#   stop_pidfile FILE [already-signalled]
stop_pidfile() {
	local file=$1 pid
	pid_alive "$file" || {
		rm -f "$file"
		return 0
	}
	pid=$(tr -dc 0-9 <"$file")
	[ -n "${2:-}" ] || kill "$pid" 2>/dev/null || true
	if ! wait_until 10 proc_gone "$pid"; then
		say "pid $pid ignores SIGTERM: killing it"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}

# sha256 of files (missing files count as empty), for "did the config change?".
fingerprint() {
	cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# True if a TCP connect to HOST PORT succeeds within 2 s.
tcp_open() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# True if HOST:25 greets with 220 within 3 s (then says QUIT politely).
smtp_greets() {
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/25" || exit 1
		IFS= read -r line <&3 || exit 1
		printf "QUIT\r\n" >&3
		[[ $line == 220[\ -]* ]]' _ "$1" 2>/dev/null
}
