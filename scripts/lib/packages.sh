# shellcheck shell=bash
# Installs the Debian packages the real-peer tests need, only those that are missing.
# Sourced after common.sh.

# Debian package -> a file it installs that we need. (Exim is not here: exim4-daemon-light
# conflicts with postfix, so scripts/lib/exim.sh downloads and unpacks it instead.)
QREMOTE_PACKAGES=(
	"postfix:/usr/sbin/postfix"
	"nsd:/usr/sbin/nsd"
	"unbound:/usr/sbin/unbound"
	"dnsutils:/usr/bin/dig"
	"openssl:/usr/bin/openssl"
	"ca-certificates:/usr/sbin/update-ca-certificates"
	"iproute2:/usr/sbin/ip"
	# strip and readelf for scripts/package and tests/package.rs
	"binutils:/usr/bin/strip"
	"nginx:/usr/sbin/nginx"
	"curl:/usr/bin/curl"
	"ldnsutils:/usr/bin/ldns-signzone"
	"perl-base:/usr/bin/perl"
	# SMTP AUTH relays: saslpasswd2, and the PLAIN/LOGIN/CRAM-MD5 plugins (no executable to
	# test for, hence the copyright file, which Debian keeps even in slim images).
	"sasl2-bin:/usr/sbin/saslpasswd2"
	"libsasl2-modules:/usr/share/doc/libsasl2-modules/copyright"
	# The fuzz targets (libfuzzer-sys builds libFuzzer with the C++ compiler) and the fault
	# soak (scripted servers in Python 3, peak RSS per delivery from GNU time).
	"g++:/usr/bin/g++"
	"python3:/usr/bin/python3"
	"time:/usr/bin/time"
)

ensure_packages() {
	local entry missing=()
	for entry in "${QREMOTE_PACKAGES[@]}"; do
		[ -e "${entry#*:}" ] || missing+=("${entry%%:*}")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "packages present: ${QREMOTE_PACKAGES[*]%%:*}"
		return 0
	fi
	[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}): run as root so they can be installed"
	say "installing: ${missing[*]}"

	# Postfix must not configure or start a system instance (nothing may listen on
	# 127.0.0.1:25), and nsd/unbound/nginx must not start with their stock configs (they would
	# take port 53 or 80 on every address). policy-rc.d is Debian's switch for "do not start
	# services from maintainer scripts"; install one for the duration if there is none.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	local policy=/usr/sbin/policy-rc.d made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local rc=0
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get update -qq -o DPkg::Lock::Timeout=600; then
		rc=1
	elif ! apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"; then
		rc=1
	fi
	[ -z "$made_policy" ] || rm -f "$policy"
	[ $rc -eq 0 ] || die "apt-get failed to install: ${missing[*]}"

	for entry in "${QREMOTE_PACKAGES[@]}"; do
		[ -e "${entry#*:}" ] || die "package ${entry%%:*} installed but ${entry#*:} is missing"
	done
}
