//! DANE against real peers: the DNSSEC-signed zones of `scripts/lib/dane.sh` served by nsd,
//! validated by unbound on `$QREMOTE_DNS` (loopback, so its AD bit is trusted), and the
//! Postfix listeners in 127.0.8.0/24 the TLSA records point at. No smtproutes: every test
//! resolves a `*.dane.test` mail domain. Every delivering case compares the stored body;
//! every blocking case checks that nothing arrived.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::peer::Scripted;
use crate::postfix::{SENDER, assert_nothing_delivered, assert_stored, delivered, unique};
use crate::util::{Outcome, QmailHome, peer_env};

/// A qmail home whose resolver is the trusted (loopback) validating unbound.
fn home() -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home
}

/// Sends a fresh message to `domain` through `home`: (recipient local part, message, outcome).
fn send(home: &QmailHome, domain: &str) -> (String, String, Outcome) {
    let local = unique("dane");
    let rcpt = format!("{local}@{domain}");
    let msg = format!("Subject: DANE to {domain}\n\nbody for {local}\n");
    let out = home.run(domain, SENDER, &[&rcpt], msg.as_bytes());
    (local, msg, out)
}

/// Delivers to `domain`; the verdict must contain every needle, and the body must arrive.
fn delivers_with(home: &QmailHome, domain: &str, needles: &[&str]) -> Outcome {
    let (local, msg, out) = send(home, domain);
    out.expect("rK", needles[0]);
    for n in needles {
        assert!(out.last().text.contains(n), "no {n:?}\n{}", out.dump());
    }
    assert_stored(&delivered(domain, &local), msg.as_bytes());
    out
}

fn delivers(domain: &str, needles: &[&str]) -> Outcome {
    delivers_with(&home(), domain, needles)
}

/// Must not deliver: a lone `Z` containing every needle, and nothing in the mailbox.
fn blocked_with(home: &QmailHome, domain: &str, needles: &[&str]) -> Outcome {
    let (local, _, out) = send(home, domain);
    out.expect("Z", needles[0]);
    for n in needles {
        assert!(out.last().text.contains(n), "no {n:?}\n{}", out.dump());
    }
    assert_nothing_delivered(domain, &local);
    out
}

fn blocked(domain: &str, needles: &[&str]) -> Outcome {
    blocked_with(&home(), domain, needles)
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ee_match() {
    // A self-signed certificate: only DANE can authenticate it.
    delivers(
        "ee.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-ee.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ee_full_certificate_sha512() {
    delivers(
        "ee512.dane.test",
        &["verified by DANE-EE (3 0 2) for mx-ee512.dane.test."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ee_ignores_expiry_and_name() {
    // The certificate is for expired.qremote.test and expired in 2021.
    delivers(
        "expiredcert.dane.test",
        &[
            "127.0.8.26 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-expired.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ee_on_an_x509_version_1_certificate() {
    // webpki cannot parse it; DANE-EE needs only its public key and the handshake signature.
    delivers(
        "v1.dane.test",
        &[
            "127.0.7.1 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-v1.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ta_match_with_the_ca_in_the_chain() {
    // No control/tlsca: the test CA is trusted only because the TLSA record names it.
    delivers(
        "ta.dane.test",
        &["verified by DANE-TA (2 1 1) for mx-ta.dane.test."],
    );
    // The certificate of mx-ta200 names ta200.insecure.dane.test, not mx-ta200: with an
    // insecure MX answer the next-hop domain is no reference identifier, so it fails, where
    // the same host passes for mx-ta.dane.test, whose MX answer is secure.
    blocked(
        "ta200.insecure.dane.test",
        &[
            "TLS with 127.0.8.27 failed: DANE-TA (2 0 0): certificate is not valid for \
             mx-ta200.dane.test. (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ta_with_a_wrong_name() {
    blocked(
        "tawrong.dane.test",
        &[
            "TLS with 127.0.8.27 failed: DANE-TA (2 1 1): certificate is not valid for \
             mx-tawrong.dane.test or tawrong.dane.test. (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ta_with_the_anchor_only_in_the_tlsa_record() {
    // `2 0 0`: the whole test root, which the server does not send (it sends its leaf and the
    // intermediate). Its certificate names mx-ta.dane.test, the recipient domain here, whose
    // MX answer is secure: the next-hop domain is a reference identifier (RFC 7672 3.2.2).
    delivers(
        "mx-ta.dane.test",
        &[
            "127.0.8.27 accepted message.",
            "verified by DANE-TA (2 0 0) for mx-ta200.dane.test.",
        ],
    );
    // The same MX for a domain the certificate does not name: only the MX host and the
    // next-hop domain count, not any name the certificate happens to have.
    blocked(
        "ta200-name.dane.test",
        &[
            "TLS with 127.0.8.27 failed: DANE-TA (2 0 0): certificate is not valid for \
             mx-ta200.dane.test or ta200-name.dane.test. (#4.7.5)",
        ],
    );
    // A digest of a trust anchor the server does not send cannot match anything.
    blocked(
        "ta201.dane.test",
        &[
            "TLS with 127.0.8.27 failed: no TLSA record at _25._tcp.mx-ta201.dane.test matched \
             the certificate chain (DANE). (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn one_matching_record_among_unusable_and_wrong_ones() {
    // The RRset: usage 1 (unusable), a DANE-EE record for another key, selector 2
    // (unusable), and the DANE-EE record that matches.
    delivers(
        "mixed.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-mixed.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_smtproutes_relay_is_authenticated_by_its_own_tlsa_records() {
    // The relay's name is the TLSA base domain; the recipient domain has no DNS at all.
    let home = home();
    home.route("relayed.dane.test", "mx-alias.dane.test");
    delivers_with(
        &home,
        "relayed.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-ee.dane.test.",
        ],
    );
    let home = self::home();
    home.route("relayed.dane.test", "mx-eebad.dane.test");
    blocked_with(
        &home,
        "relayed.dane.test",
        &[
            "TLS with 127.0.8.25 failed: no TLSA record at _25._tcp.mx-eebad.dane.test matched \
             the certificate chain (DANE). (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_ee_mismatch_never_delivers() {
    blocked(
        "eebad.dane.test",
        &[
            "TLS with 127.0.8.25 failed: no TLSA record at _25._tcp.mx-eebad.dane.test matched \
             the certificate chain (DANE). (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mismatch_moves_to_the_next_mx() {
    delivers(
        "nomatch-next.dane.test",
        &[
            "127.0.8.24 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-backup.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn no_starttls_with_usable_tlsa() {
    blocked(
        "notls.dane.test",
        &[
            "TLS is required, but 127.0.8.21 did not offer STARTTLS (level dane from DANE: TLSA \
             records at _25._tcp.mx-notls.dane.test). (#4.7.5)",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn unusable_usages_only_encrypt_without_authentication() {
    let out = delivers(
        "unusable.dane.test",
        &[
            "unverified: ",
            "TLS required by DANE: 2 TLSA records at _25._tcp.mx-unusable.dane.test, none usable.",
        ],
    );
    assert!(!out.last().text.contains("verified by"), "{}", out.dump());
    blocked(
        "unusable-notls.dane.test",
        &[
            "TLS is required, but 127.0.8.21 did not offer STARTTLS (level encrypt from DANE: 1 TLSA record at",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn tlsa_owner_is_a_cname() {
    delivers(
        "cname.dane.test",
        &["verified by DANE-EE (3 1 1) for mx-cname.dane.test."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_host_alias_uses_the_expanded_name_first() {
    // mx-alias.dane.test is a CNAME for mx-ee.dane.test, which has the TLSA records (RFC 7672
    // 2.2.3); the base domain, and so SNI and the report, is the expanded name.
    delivers(
        "alias.dane.test",
        &["verified by DANE-EE (3 1 1) for mx-ee.dane.test."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn secure_denial_of_tlsa_is_no_dane() {
    let out = delivers("notlsa.dane.test", &["TLS: ", "unverified: "]);
    assert!(!out.last().text.contains("DANE"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn insecure_child_zone_tlsa_is_ignored() {
    // The zone publishes a TLSA record that does NOT match: it must not be used.
    let out = delivers(
        "insecure.dane.test",
        &["127.0.8.25 accepted message.", "unverified: "],
    );
    assert!(!out.last().text.contains("DANE"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn unsigned_zone_tlsa_is_ignored() {
    let out = delivers(
        "unsigned-dane.test",
        &["127.0.8.25 accepted message.", "unverified: "],
    );
    assert!(!out.last().text.contains("DANE"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn insecure_mx_to_a_secure_host_still_uses_dane() {
    // DANE-TA then accepts the MX host name only (RFC 7672 3.2.2): the certificate has it.
    delivers(
        "ta.insecure.dane.test",
        &["verified by DANE-TA (2 1 1) for mx-ta.dane.test."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn bogus_mx_is_a_temporary_dns_failure() {
    for domain in ["dsbad.dane.test", "sigexpired.dane.test"] {
        blocked(
            domain,
            &["Sorry, I couldn't find any host by that name. (#4.1.2)"],
        );
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn bogus_tlsa_makes_the_mx_unusable() {
    for (domain, owner) in [
        ("tlsabad.dane.test", "_25._tcp.mx-tlsabad.dane.test"),
        ("tlsaexpired.dane.test", "_25._tcp.mx-tlsaexpired.dane.test"),
    ] {
        blocked(
            domain,
            &[&format!(
                "TLSA lookup for {owner} failed (SERVFAIL from {}); DANE may apply there, so \
                 that MX was not used. (#4.7.5)",
                peer_env("QREMOTE_DNS")
            )],
        );
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn bogus_tlsa_moves_to_the_next_mx() {
    delivers(
        "nextmx.dane.test",
        &[
            "127.0.8.24 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-backup.dane.test.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn tlsa_lookup_timeout_makes_the_mx_unusable() {
    // _tcp.mx-timeout.dane.test is delegated to a server that never answers.
    blocked(
        "timeout.dane.test",
        &["TLSA lookup for _25._tcp.mx-timeout.dane.test failed ("],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn untrusted_resolver_means_no_dane() {
    // The same validating unbound, reached on an address that is not loopback.
    let untrusted = peer_env("QREMOTE_DANE_UNTRUSTED_DNS");
    let home = QmailHome::new();
    home.nameserver(&untrusted);
    let out = delivers_with(
        &home,
        "ee.dane.test",
        &[
            "unverified: ",
            &format!(
                "DANE not used: the DNSSEC status from resolver {untrusted} is not trusted \
                 (not loopback, not in control/dnssecresolvers)."
            ),
        ],
    );
    assert!(
        !out.last().text.contains("verified by DANE"),
        "{}",
        out.dump()
    );
    // A mismatching TLSA record is not enforced either: there is no DANE at all.
    delivers_with(&home, "eebad.dane.test", &["DANE not used"]);
    // Listed in control/dnssecresolvers, the same resolver is believed.
    home.control("dnssecresolvers", &format!("{untrusted}\n"));
    delivers_with(
        &home,
        "ee.dane.test",
        &["verified by DANE-EE (3 1 1) for mx-ee.dane.test."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn override_lowers_a_published_requirement() {
    let home = home();
    home.control("tlspolicy", "eebad.dane.test:encrypt!\n");
    delivers_with(
        &home,
        "eebad.dane.test",
        &[
            "unverified: ",
            "DANE and MTA-STS not consulted: override in control/tlspolicy.",
        ],
    );
    // Without "!" the line cannot lower DANE: strongest wins.
    home.control("tlspolicy", "eebad.dane.test:may\n");
    blocked_with(&home, "eebad.dane.test", &["no TLSA record at"]);
}

/// A rustls server with the scripts' "scripted" certificate, which the TLSA record of
/// mx-sni.dane.test names.
fn scripted_server() -> Arc<ServerConfig> {
    let dir = std::path::PathBuf::from(peer_env("QREMOTE_CERTS"));
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("scripted-chain.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("scripted.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(cfg)
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn sni_is_the_tlsa_base_domain() {
    // sni.dane.test's MX is mx-sni-alias.dane.test, a CNAME for mx-sni.dane.test, which has
    // the TLSA record: SNI must be the expanded name, not the MX name nor the certificate's.
    let cfg = scripted_server();
    let server = Scripted::start_with_on("127.0.8.64:25", 1, move |_, mut c| {
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("220 go ahead\r\n");
        let mut t = c.starttls(cfg.clone());
        t.expect("EHLO");
        let sni = t.reader.get_ref().conn.server_name().map(str::to_string);
        assert_eq!(sni.as_deref(), Some("mx-sni.dane.test"));
        t.send("250 scripted\r\n");
        t.accept_mail();
        t.transcript
    });
    let out = home().run(
        "sni.dane.test",
        SENDER,
        &["x@sni.dane.test"],
        b"Subject: x\n\nx\n",
    );
    out.expect("rK", "verified by DANE-EE (3 1 1) for mx-sni.dane.test.");
    server.finish();
}
