# shellcheck shell=bash
# DNSSEC and DANE test zones, served by the nsd and validated by the unbound of dns.sh.
# Sourced by dns.sh (after common.sh and gen-certs.sh: TLSA records hash $CERTS).
#
#   dane.test            signed; unbound's trust anchor is its DS, so answers get AD=1
#   insecure.dane.test   unsigned child, no DS: provably insecure
#   dsbad.dane.test      signed, but the DS in dane.test is another key's: bogus
#   sigexpired.dane.test signed with RRSIGs that expired in 2020: bogus
#   unsigned-dane.test   unsigned, outside any trust anchor
#   _tcp.mx-timeout.dane.test  delegated to a server that never answers (dns-blackhole)
#
# Hosts point at the Postfix listeners of postfix.sh in 127.0.8.0/24:
#   127.0.8.25 and .24 selfsigned cert   127.0.8.26 expired cert (expired.qremote.test)
#   127.0.8.27 dane-ta cert (mx-ta.dane.test, by the test intermediate)   127.0.8.21 no STARTTLS
#   127.0.8.64 a scripted rustls peer of tests/dane.rs, with the "scripted" certificate
#   127.0.7.1  the X.509 version 1 certificate of the TLS tests (v1.i7tls.test)
#   127.0.8.200 nothing listens (the dead MX of the MTA-STS domains under both.dane.test)
# unbound also answers on [fd77::8:54], an address that is local but not loopback, so
# qmail-remote must not trust its AD bit.

QREMOTE_DANE_BLACKHOLE=127.0.8.53
# shellcheck disable=SC2034 # read by dns.sh and peers-up
QREMOTE_DANE_UNTRUSTED_DNS=fd77::8:54

# _dane_hash FILE SELECTOR(0 cert, 1 key) DIGEST(sha256|sha512): TLSA association data.
_dane_hash() {
	if [ "$2" = 1 ]; then
		openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER
	else
		openssl x509 -in "$1" -outform DER
	fi | openssl dgst "-$3" -r | cut -d' ' -f1
}

_dane_zone_parent() {
	local keys=$1 ee ee512 exp ta ca sni v1 cafull
	v1=$(_dane_hash "$CERTS/v1.pem" 1 sha256)
	ee=$(_dane_hash "$CERTS/selfsigned.pem" 1 sha256)
	sni=$(_dane_hash "$CERTS/scripted.pem" 1 sha256)
	ee512=$(_dane_hash "$CERTS/selfsigned.pem" 0 sha512)
	exp=$(_dane_hash "$CERTS/expired.pem" 1 sha256)
	ta=$(_dane_hash "$CERTS/int.pem" 1 sha256)
	ca=$(_dane_hash "$CERTS/ca.pem" 0 sha256)
	cafull=$(openssl x509 -in "$CERTS/ca.pem" -outform DER | od -An -v -tx1 | tr -d ' \n')
	cat <<Z
\$ORIGIN dane.test.
\$TTL 5
@               SOA   ns.dane.test. hostmaster.dane.test. 1 60 60 600 5
@               NS    ns.dane.test.
ns              A     $QREMOTE_NSD_ADDR

; MX hosts and their TLSA records.
mx-ee           A     127.0.8.25
_25._tcp.mx-ee  TLSA  3 1 1 $ee
mx-ee512        A     127.0.8.25
_25._tcp.mx-ee512 TLSA 3 0 2 $ee512
mx-expired      A     127.0.8.26
_25._tcp.mx-expired TLSA 3 1 1 $exp
mx-ta           A     127.0.8.27
_25._tcp.mx-ta  TLSA  2 1 1 $ta
mx-tawrong      A     127.0.8.27
_25._tcp.mx-tawrong TLSA 2 1 1 $ta
mx-notls        A     127.0.8.21
_25._tcp.mx-notls TLSA 3 1 1 $ee
mx-unusable     A     127.0.8.25
_25._tcp.mx-unusable TLSA 1 1 1 $ee
_25._tcp.mx-unusable TLSA 0 0 1 $ca
mx-unusable-notls A   127.0.8.21
_25._tcp.mx-unusable-notls TLSA 1 1 1 $ee
mx-eebad        A     127.0.8.25
_25._tcp.mx-eebad TLSA 3 1 1 $exp
mx-cname        A     127.0.8.25
_25._tcp.mx-cname CNAME tlsa-ee.dane.test.
tlsa-ee         TLSA  3 1 1 $ee
mx-tlsabad      A     127.0.8.25
_25._tcp.mx-tlsabad CNAME _25._tcp.dsbad.dane.test.
mx-tlsaexpired  A     127.0.8.25
_25._tcp.mx-tlsaexpired CNAME _25._tcp.sigexpired.dane.test.
mx-timeout      A     127.0.8.25
_tcp.mx-timeout NS    ns-blackhole.dane.test.
ns-blackhole    A     $QREMOTE_DANE_BLACKHOLE
mx-notlsa       A     127.0.8.25
; A second address (main drops repeated addresses from the MX list) for the next-MX cases.
mx-backup       A     127.0.8.24
_25._tcp.mx-backup TLSA 3 1 1 $ee
mx-v1           A     127.0.7.1
_25._tcp.mx-v1  TLSA  3 1 1 $v1
mx-alias        CNAME mx-ee.dane.test.
mx-sni          A     127.0.8.64
_25._tcp.mx-sni TLSA  3 1 1 $sni
mx-sni-alias    CNAME mx-sni.dane.test.
; DANE-TA with the trust anchor only in the TLSA record: the test root, which the Postfix
; on 127.0.8.27 does not send (it sends its leaf and the intermediate). Its certificate
; names mx-ta.dane.test, so only a secure next-hop domain of that name matches.
mx-ta200        A     127.0.8.27
_25._tcp.mx-ta200 TLSA 2 0 0 $cafull
mx-ta201        A     127.0.8.27
_25._tcp.mx-ta201 TLSA 2 0 1 $ca
; One usable record that matches among unusable and non-matching ones.
mx-mixed        A     127.0.8.25
_25._tcp.mx-mixed TLSA 1 1 1 $ee
_25._tcp.mx-mixed TLSA 3 1 1 $exp
_25._tcp.mx-mixed TLSA 3 2 1 $ee
_25._tcp.mx-mixed TLSA 3 1 1 $ee

; Mail domains (tests/dane.rs).
ee              MX    10 mx-ee
ee512           MX    10 mx-ee512
expiredcert     MX    10 mx-expired
ta              MX    10 mx-ta
tawrong         MX    10 mx-tawrong
notls           MX    10 mx-notls
unusable        MX    10 mx-unusable
unusable-notls  MX    10 mx-unusable-notls
eebad           MX    10 mx-eebad
cname           MX    10 mx-cname
tlsabad         MX    10 mx-tlsabad
tlsaexpired     MX    10 mx-tlsaexpired
timeout         MX    10 mx-timeout
notlsa          MX    10 mx-notlsa
alias           MX    10 mx-alias
v1              MX    10 mx-v1
sni             MX    10 mx-sni-alias
nextmx          MX    10 mx-tlsabad
nextmx          MX    20 mx-backup
nomatch-next    MX    10 mx-eebad
nomatch-next    MX    20 mx-backup
mx-ta           MX    10 mx-ta200
ta200-name      MX    10 mx-ta200
ta201           MX    10 mx-ta201
mixed           MX    10 mx-mixed

; MTA-STS next to DANE (tests/dane_sts.rs; the policies in nginx.sh list only some MX hosts).
; mx-dead: nothing listens. mx-webpki: the dane-ta certificate names it, its TLSA does not match.
mx-dead.both    A     127.0.8.200
mx-dane.both    A     127.0.8.25
_25._tcp.mx-dane.both TLSA 3 1 1 $ee
mx-nomatch.both A     127.0.8.25
_25._tcp.mx-nomatch.both TLSA 3 1 1 $exp
mx-webpki.both  A     127.0.8.27
_25._tcp.mx-webpki.both TLSA 3 1 1 $exp
both            MX    10 mx-dead.both
both            MX    20 mx-dane.both
bad.both        MX    10 mx-dead.both
bad.both        MX    20 mx-nomatch.both
nodane.both     MX    10 mx-dead.both
nodane.both     MX    20 mx-notlsa
listed.both     MX    10 mx-dane.both
listedbad.both  MX    10 mx-webpki.both
testing.both    MX    10 mx-dane.both

; Child zones.
insecure        NS    ns.dane.test.
dsbad           NS    ns.dane.test.
sigexpired      NS    ns.dane.test.
Z
	local d
	for d in "${QREMOTE_DANE_STS_DOMAINS[@]}"; do
		d=${d%.dane.test}
		printf '_mta-sts.%s TXT "v=STSv1; id=1"\nmta-sts.%s A %s\n' "$d" "$d" "$QREMOTE_NGINX_ADDR"
	done
	cat "$keys/dsbad-other.ds" "$keys/sigexpired.dane.test.ds"
}

# _dane_zone_child ORIGIN: a mail domain with an MX in 127.0.8.0/24 and a TLSA record that
# does NOT match that MX (it must never be used, since the zone is not secure), plus a TLSA
# record at the apex for the CNAME tests of dane.test.
_dane_zone_child() {
	local ee exp
	ee=$(_dane_hash "$CERTS/selfsigned.pem" 1 sha256)
	exp=$(_dane_hash "$CERTS/expired.pem" 1 sha256)
	cat <<Z
\$ORIGIN $1.
\$TTL 5
@               SOA   ns.dane.test. hostmaster.dane.test. 1 60 60 600 5
@               NS    ns.dane.test.
@               MX    10 mx
mx              A     127.0.8.25
_25._tcp.mx     TLSA  3 1 1 $exp
_25._tcp        TLSA  3 1 1 $ee
ta              MX    10 mx-ta.dane.test.
; An insecure MX answer: its domain, named by the dane-ta certificate, is no DANE-TA name.
ta200           MX    10 mx-ta200.dane.test.
Z
}

# Keys live outside the zone directory so they survive a restart: same keys, same anchor.
_dane_keys() {
	local keys=$1 name base
	mkdir -p "$keys"
	for name in dane.test dsbad.dane.test:dsbad-other dsbad.dane.test sigexpired.dane.test; do
		base=${name#*:}
		name=${name%%:*}
		[ -f "$keys/$base.private" ] && continue
		base=$keys/$base
		local made
		made=$(cd "$keys" && ldns-keygen -k -a ECDSAP256SHA256 "$name") ||
			die "ldns-keygen failed for $name"
		mv "$keys/$made.key" "$base.key"
		mv "$keys/$made.private" "$base.private"
		mv "$keys/$made.ds" "$base.ds"
	done
}

# dane_zones DIR: writes the unsigned zone sources into DIR (signed later by dane_sign).
dane_zones() {
	local d=$1 keys=$QREMOTE_PEERS_DIR/dnskeys
	_dane_keys "$keys"
	cp "$keys/dane.test.ds" "$d/dane.test.anchor"
	_dane_zone_parent "$keys" >"$d/dane.test.src"
	local z
	for z in insecure.dane.test dsbad.dane.test sigexpired.dane.test unsigned-dane.test; do
		_dane_zone_child "$z" >"$d/$z.src"
	done
}

# dane_sign DIR: the zone files nsd serves, from the sources (DIR is the final directory's
# staging copy; keys from $QREMOTE_PEERS_DIR/dnskeys).
dane_sign() {
	local d=$1 keys=$QREMOTE_PEERS_DIR/dnskeys
	quiet "signing dane.test failed" \
		ldns-signzone -o dane.test -f "$d/dane.test.zone" "$d/dane.test.src" "$keys/dane.test"
	quiet "signing dsbad.dane.test failed" \
		ldns-signzone -o dsbad.dane.test -f "$d/dsbad.dane.test.zone" "$d/dsbad.dane.test.src" "$keys/dsbad.dane.test"
	quiet "signing sigexpired.dane.test failed" \
		ldns-signzone -o sigexpired.dane.test -i 20190101000000 -e 20200101000000 \
		-f "$d/sigexpired.dane.test.zone" "$d/sigexpired.dane.test.src" "$keys/sigexpired.dane.test"
	cp "$d/insecure.dane.test.src" "$d/insecure.dane.test.zone"
	cp "$d/unsigned-dane.test.src" "$d/unsigned-dane.test.zone"
}

DANE_ZONES="dane.test insecure.dane.test dsbad.dane.test sigexpired.dane.test unsigned-dane.test"

# nsd.conf zone entries.
dane_nsd_conf() {
	local z
	for z in $DANE_ZONES; do
		printf 'zone:\n\tname: "%s"\n\tzonefile: "%s/%s.zone"\n' "$z" "$1" "$z"
	done
}

# unbound.conf lines for the server: clause (validation, the trust anchor, the untrusted
# address), and the stub zones.
dane_unbound_server() {
	cat <<C
	trust-anchor-file: "$1/dane.test.anchor"
	interface: $QREMOTE_DANE_UNTRUSTED_DNS
	ip-freebind: yes
	# Any client: a query to fd77::8:54 leaves from whichever global address the machine has
	# (source address selection), not from fd77::/64 or ::1. The address is on lo only.
	access-control: ::/0 allow
C
}

dane_unbound_stubs() {
	local z
	for z in dane.test unsigned-dane.test; do
		printf 'stub-zone:\n\tname: "%s."\n\tstub-addr: %s\n' "$z" "$QREMOTE_NSD_ADDR"
	done
}

# The untrusted resolver's address is local (fd77::/64 is routed to lo, as in postfix.sh).
dane_local_route() {
	ip -6 route replace local fd77::/64 dev lo ||
		die "cannot add the local route fd77::/64 (needs root and iproute2)"
}

# True if the resolver validates dane.test: the MX answer for ee.dane.test has the AD flag.
dane_validates() {
	dig +dnssec +time=1 +tries=1 "@$1" ee.dane.test MX 2>/dev/null | grep -q '^;; flags:.* ad[ ;]'
}

# The silent server that the _tcp.mx-timeout.dane.test delegation points to.
dane_blackhole_up() {
	local d=$1
	pid_alive "$d/blackhole.pid" && return 0
	setsid "$(dirname "${BASH_SOURCE[0]}")/dns-blackhole" "$QREMOTE_DANE_BLACKHOLE" "$d/blackhole.pid" \
		</dev/null >"$d/blackhole.log" 2>&1 &
	wait_until 10 test -s "$d/blackhole.pid" || die "dns-blackhole did not start (see $d/blackhole.log)"
}

dane_blackhole_down() {
	stop_pidfile "$1/blackhole.pid"
}
