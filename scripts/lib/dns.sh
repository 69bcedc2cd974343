# shellcheck shell=bash
# DNS for the tests: nsd (authoritative for qremote.test, other.test, i7tls.test, i7.test,
# sts.test and the DNSSEC zones of dane.sh) on 127.0.0.53, and unbound (the validating
# recursive resolver the program is pointed at) on 127.0.0.54, which reaches nsd through stub
# zones and nothing else. Sourced after common.sh and gen-certs.sh.
. "$(dirname "${BASH_SOURCE[0]}")/dane.sh"

# The opening of every test zone: origin, TTL, SOA and NS (nsd on ns.qremote.test).
_dns_zone_head() {
	# shellcheck disable=SC2016 # a literal $ORIGIN
	printf '$ORIGIN %s.\n' "$1"
	cat <<'Z'
$TTL 5
@               SOA   ns.qremote.test. hostmaster.qremote.test. 1 60 60 600 5
@               NS    ns.qremote.test.
Z
}

_dns_zone_qremote() {
	local i name letters=abcdefghijklmnopqrstuvwxyzabcdefghijklmn # 40 letters
	_dns_zone_head qremote.test
	cat <<'Z'
ns              A     127.0.0.53

; Hosts: one Postfix listener each (scripts/lib/postfix.sh).
mx1             A     127.0.0.20
mx6             AAAA  ::1
anyip6          AAAA  fd77::25
scripted421     A     127.0.0.61
scriptedtls     A     127.0.0.63
scripted        A     127.0.0.64
notls           A     127.0.0.21
expired         A     127.0.0.22
future          A     127.0.0.23
wrongname       A     127.0.0.24
mx.wild         A     127.0.0.25
selfsigned      A     127.0.0.26
unknownca       A     127.0.0.27
nointermediate  A     127.0.0.28
tls12           A     127.0.0.29
dead            A     127.0.0.99
me              A     127.0.0.1

; Mail domains.
simple          MX    10 mx1
cname           CNAME simple.qremote.test.
chain           CNAME c1.qremote.test.
c1              CNAME c2.other.test.
mxcname         MX    10 alias.qremote.test.
alias           CNAME mx1.qremote.test.
implicit        A     127.0.0.20
implicitcname   CNAME mx1.qremote.test.
nullmx          MX    0 .
noaddr          MX    10 nohost.qremote.test.
partial         MX    10 nohost.qremote.test.
partial         MX    20 mx1
fallback        MX    10 dead
fallback        MX    20 mx1
softmx          MX    10 x.servfail.test.
mixsoft         MX    10 x.servfail.test.
mixsoft         MX    20 mx1
pointsme        MX    10 me
mefirst         MX    10 me
mefirst         MX    20 mx1
mebackup        MX    10 mx1
mebackup        MX    20 me
ipv6only        MX    10 mx6
v6mx            MX    10 anyip6
greet421        MX    10 scripted421
greet421        MX    20 mx1
tlsfallback     MX    10 notls
equal           MX    10 mx1
equal           MX    10 notls
tlsfallback     MX    20 mx1
bigaddr         MX    10 many
many            A     127.0.0.20
Z
	for i in $(seq 1 39); do
		printf 'many            A     127.0.1.%d\n' "$i"
	done
	# 30 MX records with long targets: the answer is far over 512 bytes.
	for i in $(seq -w 1 30); do
		name="mx-$i-$letters"
		printf 'bigmx           MX    10 %s\n' "$name"
		printf '%-15s A     127.0.0.20\n' "$name"
	done
}

# Issue 7's TLS cases: Postfix listeners with unusual certificates, and MX targets that are IP
# addresses written as names (a scripted peer listens on 127.0.0.201, tests/tls_names.rs).
_dns_zone_i7tls() {
	_dns_zone_head i7tls.test
	cat <<'Z'
v1              A     127.0.7.1
selfca          A     127.0.7.2
ipmx            MX    10 127.0.0.201.
ipmx6           MX    10 fd77::25.
ipnext          MX    10 127.0.0.201.
ipnext          MX    20 mx1.qremote.test.
ipcname         MX    10 ipalias
ipalias         CNAME 127.0.0.201.
Z
}

_dns_zone_other() {
	_dns_zone_head other.test
	cat <<'Z'
c2              MX    10 mx1.qremote.test.
Z
}

# Issue 7: the bounds on the addresses of one delivery, and the Exim peer (scripts/lib/exim.sh).
# Addresses 127.0.17.x; nothing listens on .11-.16 (refused at once).
_dns_zone_i7() {
	_dns_zone_head i7.test
	cat <<'Z'
exim            A     127.0.17.25
; mxaddresslimit: six refusing addresses for the best MX, a tripwire behind them.
refusing        A     127.0.17.11
refusing        A     127.0.17.12
refusing        A     127.0.17.13
refusing        A     127.0.17.14
refusing        A     127.0.17.15
refusing        A     127.0.17.16
tripa           A     127.0.17.20
addrlimit       MX    10 refusing
addrlimit       MX    20 tripa
; Two MX names for one address: one connection.
dupa            A     127.0.17.21
dupb            A     127.0.17.21
dup             MX    10 dupa
dup             MX    20 dupb
; mxsessionlimit: two servers that greet and then defer, a tripwire third.
s1              A     127.0.17.22
s2              A     127.0.17.23
tripb           A     127.0.17.24
sessions        MX    10 s1
sessions        MX    20 s2
sessions        MX    30 tripb
Z
}

# MTA-STS test domains (tests/sts.rs). Each domain in QREMOTE_STS_DOMAINS publishes
# _mta-sts TXT "v=STSv1; id=1" (idchange: id=2; twotxt: two STSv1 records and an SPF one;
# cnametxt: a CNAME to _mta-sts.enforce) and has its policy host mta-sts.<d> on nginx
# (down: on an address where nothing listens; trickle: a scripted server of tests/sts.rs);
# nginx.sh writes the policies.
_dns_zone_sts() {
	local d
	_dns_zone_head sts.test
	cat <<Z
; MX hosts: Postfix on 127.0.18.20 (certificate for mx1 and a.mx), and the qremote.test
; listener with the mx1.qremote.test certificate for the names a policy must not allow.
mx1             A     127.0.18.20
a.mx            A     127.0.18.20
b.c.mx          A     127.0.0.20
mx2             A     127.0.0.20

enforce         MX    10 mx1
expired         MX    10 expired.qremote.test.
notls           MX    10 notls.qremote.test.
unlisted        MX    10 mx1
fallback        MX    10 mx2
fallback        MX    20 mx1
wild            MX    5 b.c.mx
wild            MX    10 a.mx
testing         MX    10 expired.qremote.test.
none            MX    10 expired.qremote.test.
missing         MX    10 expired.qremote.test.
badhost         MX    10 expired.qremote.test.
redirect        MX    10 expired.qremote.test.
big             MX    10 expired.qremote.test.
malformed       MX    10 expired.qremote.test.
html            MX    10 expired.qremote.test.
chunked         MX    10 mx1
down            MX    10 mx1
idchange        MX    10 mx1
warm            MX    10 mx1
trickle         MX    10 mx1
twotxt          MX    10 expired.qremote.test.
cnametxt        MX    10 mx1
; No MTA-STS at all.
plain           MX    10 mx1
Z
	for d in "${QREMOTE_STS_DOMAINS[@]}"; do
		if [ "$d" = idchange ]; then
			printf '_mta-sts.%-10s TXT   "v=STSv1; id=2"\n' "$d"
		elif [ "$d" = twotxt ]; then
			printf '_mta-sts.%-10s TXT   "v=STSv1; id=1"\n' "$d"
			printf '_mta-sts.%-10s TXT   "v=STSv1; id=2"\n' "$d"
			printf '_mta-sts.%-10s TXT   "v=spf1 -all"\n' "$d"
		elif [ "$d" = cnametxt ]; then
			printf '_mta-sts.%-10s CNAME _mta-sts.enforce\n' "$d"
		else
			printf '_mta-sts.%-10s TXT   "v=STSv1; " "id=1"\n' "$d"
		fi
		if [ "$d" = down ]; then
			printf 'mta-sts.%-11s A     127.0.18.99\n' "$d"
		elif [ "$d" = trickle ]; then
			printf 'mta-sts.%-11s A     127.0.18.3\n' "$d"
		else
			printf 'mta-sts.%-11s A     %s\n' "$d" "$QREMOTE_NGINX_ADDR"
		fi
	done
}

# The SMTP AUTH relays (scripts/lib/postfix.sh), one per mechanism.
_dns_zone_auth() {
	_dns_zone_head auth.test
	cat <<'Z'
plain           A     127.0.9.1
login           A     127.0.9.2
cram            A     127.0.9.3
; Two scripted relays behind one name (tests/auth.rs).
two             A     127.0.9.4
two             A     127.0.9.5
Z
}

_dns_nsd_conf() {
	local d=$1
	cat <<C
# Generated by scripts/lib/dns.sh.
server:
	ip-address: $QREMOTE_NSD_ADDR
	port: 53
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: "$d"
	database: ""
	zonelistfile: "$d/zone.list"
	xfrdfile: "$d/xfrd.state"
	xfrdir: "$d"
	pidfile: "$d/nsd.pid"
	logfile: "$d/nsd.log"
	verbosity: 1
	server-count: 1
	refuse-any: yes
	hide-version: yes
	reuseport: no
remote-control:
	control-enable: no
zone:
	name: "qremote.test"
	zonefile: "$d/qremote.test.zone"
zone:
	name: "other.test"
	zonefile: "$d/other.test.zone"
zone:
	name: "i7tls.test"
	zonefile: "$d/i7tls.test.zone"
zone:
	name: "i7.test"
	zonefile: "$d/i7.test.zone"
zone:
	name: "sts.test"
	zonefile: "$d/sts.test.zone"
zone:
	name: "auth.test"
	zonefile: "$d/auth.test.zone"
C
	dane_nsd_conf "$d"
}

_dns_unbound_conf() {
	local d=$1
	cat <<C
# Generated by scripts/lib/dns.sh.
server:
	interface: $QREMOTE_DNS_ADDR
	port: 53
	interface-automatic: no
	do-ip6: yes
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	# Validating: dane.test has a trust anchor; zones without one are insecure (AD=0).
	module-config: "validator iterator"
	chroot: ""
	username: ""
	directory: "$d"
	pidfile: "$d/unbound.pid"
	logfile: "$d/unbound.log"
	use-syslog: no
	verbosity: 1
	deny-any: yes
	cache-max-ttl: 5
	cache-max-negative-ttl: 5
	num-threads: 1
	# Nothing outside the stub zones is ever asked of the Internet: the root hints name
	# only our nsd, which refuses everything it does not serve.
	root-hints: "$d/root.hints"
	# "test." is one of unbound's built-in empty zones; let the stubs below answer.
	local-zone: "test." nodefault
$(dane_unbound_server "$d")
remote-control:
	control-enable: no
stub-zone:
	name: "qremote.test."
	stub-addr: $QREMOTE_NSD_ADDR
stub-zone:
	name: "other.test."
	stub-addr: $QREMOTE_NSD_ADDR
stub-zone:
	name: "i7tls.test."
	stub-addr: $QREMOTE_NSD_ADDR
stub-zone:
	name: "i7.test."
	stub-addr: $QREMOTE_NSD_ADDR
stub-zone:
	name: "sts.test."
	stub-addr: $QREMOTE_NSD_ADDR
stub-zone:
	name: "auth.test."
	stub-addr: $QREMOTE_NSD_ADDR
# nsd does not serve servfail.test: it answers REFUSED, so unbound answers SERVFAIL.
stub-zone:
	name: "servfail.test."
	stub-addr: $QREMOTE_NSD_ADDR
$(dane_unbound_stubs)
C
}

_dns_root_hints() {
	printf '.                        3600000      NS    ns.root.invalid.\n'
	printf 'ns.root.invalid.         3600000      A     %s\n' "$QREMOTE_NSD_ADDR"
}

# True if the resolver answers for a name with status NOERROR and an A record.
_dns_answers() {
	[ "$(dig +short +time=1 +tries=1 "@$1" mx1.qremote.test A 2>/dev/null)" = 127.0.0.20 ]
}

dns_up() {
	local d=$QREMOTE_PEERS_DIR/dns
	mkdir -p "$d.new"
	_dns_zone_qremote >"$d.new/qremote.test.zone"
	_dns_zone_other >"$d.new/other.test.zone"
	_dns_zone_i7tls >"$d.new/i7tls.test.zone"
	_dns_zone_i7 >"$d.new/i7.test.zone"
	_dns_zone_sts >"$d.new/sts.test.zone"
	_dns_zone_auth >"$d.new/auth.test.zone"
	_dns_nsd_conf "$d" >"$d.new/nsd.conf"
	_dns_unbound_conf "$d" >"$d.new/unbound.conf"
	_dns_root_hints >"$d.new/root.hints"
	dane_zones "$d.new"
	dane_local_route
	local want have
	want=$(fingerprint "$d.new"/*)
	have=$(cat "$d/fingerprint" 2>/dev/null || true)
	if [ "$want" = "$have" ] && pid_alive "$d/nsd.pid" && pid_alive "$d/unbound.pid"; then
		rm -rf "$d.new"
		say "nsd and unbound already running with this configuration"
	else
		dns_down
		dane_sign "$d.new"
		rm -rf "$d"
		mv "$d.new" "$d"
		quiet "nsd.conf invalid" nsd-checkconf "$d/nsd.conf"
		quiet "qremote.test zone invalid" nsd-checkzone qremote.test "$d/qremote.test.zone"
		quiet "other.test zone invalid" nsd-checkzone other.test "$d/other.test.zone"
		quiet "i7tls.test zone invalid" nsd-checkzone i7tls.test "$d/i7tls.test.zone"
		quiet "i7.test zone invalid" nsd-checkzone i7.test "$d/i7.test.zone"
		quiet "sts.test zone invalid" nsd-checkzone sts.test "$d/sts.test.zone"
		quiet "auth.test zone invalid" nsd-checkzone auth.test "$d/auth.test.zone"
		local z
		for z in $DANE_ZONES; do
			quiet "$z zone invalid" nsd-checkzone "$z" "$d/$z.zone"
		done
		quiet "unbound.conf invalid" unbound-checkconf "$d/unbound.conf"
		local a
		for a in "$QREMOTE_NSD_ADDR" "$QREMOTE_DNS_ADDR" "$QREMOTE_DANE_BLACKHOLE"; do
			if tcp_open "$a" 53; then die "$a:53 is already taken by another process"; fi
		done
		say "starting nsd on $QREMOTE_NSD_ADDR and unbound on $QREMOTE_DNS_ADDR"
		quiet "nsd failed to start (see $d/nsd.log)" nsd -c "$d/nsd.conf"
		quiet "unbound failed to start (see $d/unbound.log)" unbound -c "$d/unbound.conf"
		echo "$want" >"$d/fingerprint"
	fi
	wait_until 20 _dns_answers "$QREMOTE_NSD_ADDR" ||
		die "nsd on $QREMOTE_NSD_ADDR does not answer within 20 s (see $d/nsd.log)"
	wait_until 20 _dns_answers "$QREMOTE_DNS_ADDR" ||
		die "unbound on $QREMOTE_DNS_ADDR does not answer within 20 s (see $d/unbound.log)"
	wait_until 20 dane_validates "$QREMOTE_DNS_ADDR" ||
		die "unbound on $QREMOTE_DNS_ADDR does not validate dane.test (no AD flag; see $d/unbound.log)"
	# Asked from the machine's own source address, as qremote asks it (tests/dane.rs).
	wait_until 20 _dns_answers "$QREMOTE_DANE_UNTRUSTED_DNS" ||
		die "unbound on [$QREMOTE_DANE_UNTRUSTED_DNS] does not answer within 20 s (see $d/unbound.log)"
	dane_blackhole_up "$d"
	say "dns up: nsd $QREMOTE_NSD_ADDR, unbound $QREMOTE_DNS_ADDR"
}

dns_down() {
	local d=$QREMOTE_PEERS_DIR/dns
	dane_blackhole_down "$d"
	if pid_alive "$d/unbound.pid"; then say "stopping unbound"; fi
	stop_pidfile "$d/unbound.pid"
	if pid_alive "$d/nsd.pid"; then say "stopping nsd"; fi
	stop_pidfile "$d/nsd.pid"
}
