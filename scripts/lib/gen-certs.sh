# shellcheck shell=bash
# Test PKI for the STARTTLS peers, made with openssl. Sourced after common.sh.
#
#   certs/ca.pem            "qremote test root"  (trust this one: QREMOTE_CA)
#   certs/int.pem           "qremote test intermediate", signed by the root
#   certs/unknown-ca.pem    "qremote unknown root" (never trusted: QREMOTE_UNKNOWN_CA)
#   certs/NAME.key/.pem     leaf key and certificate
#   certs/NAME-chain.pem    leaf + intermediate
#   certs/NAME-postfix.pem  key + the chain that NAME's listener sends (smtpd_tls_chain_files)
#
# Leaves (the listener address is in scripts/lib/postfix.sh):
#   mx1             RSA   mx1.qremote.test, mx6.qremote.test   by intermediate, chain sent
#   expired         ECDSA expired.qremote.test, 2020-2021       by intermediate, chain sent
#   future          ECDSA future.qremote.test, 2090-2091        by intermediate, chain sent
#   wrongname       ECDSA other.example                         by intermediate, chain sent
#   wild            ECDSA *.wild.qremote.test                   by intermediate, chain sent
#   selfsigned      ECDSA selfsigned.qremote.test               self-signed
#   unknownca       ECDSA unknownca.qremote.test                by the unknown root
#   nointermediate  ECDSA nointermediate.qremote.test           by intermediate, leaf only sent
#   tls12           RSA   tls12.qremote.test                    by intermediate, chain sent
#   scripted        RSA   scripted.qremote.test                 by intermediate, chain sent (scripted peers)
#   v1              RSA   CN=v1.i7tls.test only                 self-signed, X.509 version 1 (no
#                                                               extensions: Debian's exim-gencert)
#   selfca          ECDSA selfca.i7tls.test                     self-signed with CA:TRUE (OpenSSL 3's
#                                                               `req -x509` default), SAN set
#   sts             ECDSA mx1.sts.test, a.mx.sts.test            by intermediate, chain sent (MTA-STS MX)
#   policy          ECDSA mta-sts.<d>.sts.test for every MTA-STS test domain (nginx, chain sent)
#   dane-ta         ECDSA mx-ta.dane.test, mx-webpki.both.dane.test, ta200.insecure.dane.test
#                   by intermediate, chain sent
#   auth            ECDSA plain/login/cram.auth.test            by intermediate, chain sent (SMTP AUTH relays)
#
# Regenerated only when missing or when this file changes.

# Bump when the layout changes in a way the fingerprint of this file would not show.
QREMOTE_CERTS_VERSION=1

_certs_cnf() {
	cat <<'CNF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused

[ policy_any ]
commonName = supplied
CNF
	local ca file
	for ca in root:ca int:int unknown:unknown-ca; do
		file=${ca#*:}
		ca=${ca%%:*}
		cat <<CNF

[ ca_$ca ]
dir = \$ENV::CERTS/db-$ca
certificate = \$ENV::CERTS/$file.pem
private_key = \$ENV::CERTS/$file.key
database = \$dir/index.txt
new_certs_dir = \$dir
rand_serial = yes
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
CNF
	done
	cat <<'CNF'

[ v3_root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_int ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $ENV::KU
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $ENV::SAN

[ v3_self ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $ENV::KU
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = $ENV::SAN
CNF
}

# _certs_key FILE rsa|ec
_certs_key() {
	case $2 in
	rsa) quiet "openssl genpkey (rsa) failed" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" ;;
	ec) quiet "openssl genpkey (ec) failed" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" ;;
	esac
	chmod 600 "$1"
}

# _certs_sign CA_SECTION NAME CN EXTENSIONS VALIDITY... : CSR for NAME.key, signed into NAME.pem
_certs_sign() {
	local ca=$1 name=$2 cn=$3 ext=$4
	shift 4
	quiet "openssl req for $name failed" \
		openssl req -new -config "$CERTS/openssl.cnf" -key "$CERTS/$name.key" -subj "/CN=$cn" -out "$CERTS/$name.csr"
	quiet "openssl ca ($ca) signing $name failed" \
		openssl ca -batch -notext -config "$CERTS/openssl.cnf" -name "$ca" -extensions "$ext" \
		-in "$CERTS/$name.csr" -out "$CERTS/$name.pem" "$@"
	rm -f "$CERTS/$name.csr"
}

# _certs_leaf NAME rsa|ec CA_SECTION "SAN" VALIDITY...
_certs_leaf() {
	local name=$1 alg=$2 ca=$3
	SAN=$4
	shift 4
	_certs_key "$CERTS/$name.key" "$alg"
	if [ "$alg" = rsa ]; then KU="digitalSignature, keyEncipherment"; else KU="digitalSignature"; fi
	export SAN KU
	local cn=${SAN%%,*}
	_certs_sign "$ca" "$name" "${cn#DNS:}" v3_leaf "$@"
	cat "$CERTS/$name.pem" "$CERTS/int.pem" >"$CERTS/$name-chain.pem"
}

gen_certs() {
	CERTS=$QREMOTE_PEERS_DIR/certs
	export CERTS
	local stamp
	# The policy certificate names every MTA-STS test domain (common.sh).
	stamp="v$QREMOTE_CERTS_VERSION $(fingerprint "${BASH_SOURCE[0]}") ${QREMOTE_STS_DOMAINS[*]} ${QREMOTE_DANE_STS_DOMAINS[*]}"
	if [ -f "$CERTS/stamp" ] && [ "$(cat "$CERTS/stamp")" = "$stamp" ]; then
		say "certificates up to date in $CERTS"
		return 0
	fi
	say "generating certificates in $CERTS"
	rm -rf "$CERTS"
	mkdir -p "$CERTS"
	_certs_cnf >"$CERTS/openssl.cnf"
	local db
	for db in db-root db-int db-unknown; do
		mkdir -p "$CERTS/$db"
		: >"$CERTS/$db/index.txt"
	done
	export SAN=DNS:unused KU=digitalSignature

	# Roots (self-signed) and the intermediate.
	_certs_key "$CERTS/ca.key" rsa
	quiet "root CA failed" openssl req -x509 -new -config "$CERTS/openssl.cnf" -extensions v3_root \
		-key "$CERTS/ca.key" -subj "/CN=qremote test root" -days 7300 -sha256 -out "$CERTS/ca.pem"
	_certs_key "$CERTS/unknown-ca.key" rsa
	quiet "unknown root failed" openssl req -x509 -new -config "$CERTS/openssl.cnf" -extensions v3_root \
		-key "$CERTS/unknown-ca.key" -subj "/CN=qremote unknown root" -days 7300 -sha256 -out "$CERTS/unknown-ca.pem"
	_certs_key "$CERTS/int.key" ec
	_certs_sign ca_root int "qremote test intermediate" v3_int -days 5000

	# Leaves.
	_certs_leaf mx1 rsa ca_int "DNS:mx1.qremote.test, DNS:mx6.qremote.test" -days 3650
	_certs_leaf expired ec ca_int "DNS:expired.qremote.test" -startdate 20200101000000Z -enddate 20210101000000Z
	_certs_leaf future ec ca_int "DNS:future.qremote.test" -startdate 20900101000000Z -enddate 20910101000000Z
	_certs_leaf wrongname ec ca_int "DNS:other.example" -days 3650
	_certs_leaf wild ec ca_int "DNS:*.wild.qremote.test" -days 3650
	_certs_leaf unknownca ec ca_unknown "DNS:unknownca.qremote.test" -days 3650
	cp "$CERTS/unknownca.pem" "$CERTS/unknownca-chain.pem" # the untrusted root is not sent
	_certs_leaf nointermediate ec ca_int "DNS:nointermediate.qremote.test" -days 3650
	_certs_leaf tls12 rsa ca_int "DNS:tls12.qremote.test" -days 3650
	# For the scripted (rustls) peers of tests/tls_matrix.rs on 127.0.0.64.
	_certs_leaf scripted rsa ca_int "DNS:scripted.qremote.test" -days 3650
	# MTA-STS: the MX listener on 127.0.18.20 and the policy hosts nginx serves.
	_certs_leaf sts ec ca_int "DNS:mx1.sts.test, DNS:a.mx.sts.test" -days 3650
	local d san=
	for d in "${QREMOTE_STS_DOMAINS[@]}"; do san+="${san:+, }DNS:mta-sts.$d.sts.test"; done
	for d in "${QREMOTE_DANE_STS_DOMAINS[@]}"; do san+=", DNS:mta-sts.$d"; done
	_certs_leaf policy ec ca_int "$san" -days 3650
	# DANE-TA: the TLSA record names the intermediate (scripts/lib/dane.sh). The second name
	# is an MX that webpki would accept and whose TLSA record does not match (DANE wins).
	_certs_leaf dane-ta ec ca_int "DNS:mx-ta.dane.test, DNS:mx-webpki.both.dane.test, DNS:ta200.insecure.dane.test" -days 3650
	# The SMTP AUTH relays on 127.0.9.1-3 (scripts/lib/postfix.sh).
	_certs_leaf auth ec ca_int "DNS:plain.auth.test, DNS:login.auth.test, DNS:cram.auth.test" -days 3650

	_certs_key "$CERTS/selfsigned.key" ec
	SAN="DNS:selfsigned.qremote.test" KU=digitalSignature \
		quiet "self-signed leaf failed" openssl req -x509 -new -config "$CERTS/openssl.cnf" -extensions v3_self \
		-key "$CERTS/selfsigned.key" -subj "/CN=selfsigned.qremote.test" -days 3650 -sha256 -out "$CERTS/selfsigned.pem"
	cp "$CERTS/selfsigned.pem" "$CERTS/selfsigned-chain.pem"

	# X.509 version 1, as `openssl x509 -req` without extensions (and exim-gencert) make.
	_certs_key "$CERTS/v1.key" rsa
	quiet "openssl req for v1 failed" \
		openssl req -new -config "$CERTS/openssl.cnf" -key "$CERTS/v1.key" -subj "/CN=v1.i7tls.test" -out "$CERTS/v1.csr"
	quiet "v1 certificate failed" \
		openssl x509 -req -in "$CERTS/v1.csr" -key "$CERTS/v1.key" -days 3650 -sha256 -out "$CERTS/v1.pem"
	rm -f "$CERTS/v1.csr"
	openssl x509 -in "$CERTS/v1.pem" -noout -text | grep -q 'Version: 1 ' || die "v1.pem is not X.509 version 1"
	cp "$CERTS/v1.pem" "$CERTS/v1-chain.pem"

	# Self-signed with CA:TRUE, as qmail-tls admins pin them (OpenSSL 3 `req -x509` default).
	_certs_key "$CERTS/selfca.key" ec
	quiet "CA:TRUE self-signed leaf failed" openssl req -x509 -new -config "$CERTS/openssl.cnf" \
		-key "$CERTS/selfca.key" -subj "/CN=selfca.i7tls.test" -days 3650 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "subjectAltName=DNS:selfca.i7tls.test" \
		-out "$CERTS/selfca.pem"
	cp "$CERTS/selfca.pem" "$CERTS/selfca-chain.pem"

	# What each listener sends: key, leaf, and the chain unless the case is "no intermediate".
	local name
	for name in mx1 expired future wrongname wild selfsigned unknownca tls12 scripted v1 selfca sts policy dane-ta auth; do
		cat "$CERTS/$name.key" "$CERTS/$name-chain.pem" >"$CERTS/$name-postfix.pem"
	done
	cat "$CERTS/nointermediate.key" "$CERTS/nointermediate.pem" >"$CERTS/nointermediate-postfix.pem"
	chmod 600 "$CERTS"/*-postfix.pem

	# Sanity: the good chain verifies, the bad ones fail as designed.
	quiet "mx1 chain does not verify" openssl verify -CAfile "$CERTS/ca.pem" -untrusted "$CERTS/int.pem" "$CERTS/mx1.pem"
	if openssl verify -CAfile "$CERTS/ca.pem" -untrusted "$CERTS/int.pem" "$CERTS/expired.pem" >/dev/null 2>&1; then
		die "expired certificate verifies"
	fi
	echo "$stamp" >"$CERTS/stamp"
}
