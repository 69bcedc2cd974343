//! MTA-STS and DANE for the same domain (RFC 8461 §2: where DANE applies to an MX, DANE
//! wins), against real peers: mail domains under both.dane.test in the signed dane.test zone
//! (scripts/lib/dane.sh) that publish an MTA-STS policy served by nginx (scripts/lib/nginx.sh)
//! listing only some of their MX hosts. mx-dead.both.dane.test (127.0.8.200) has nothing
//! listening; the others are the Postfix listeners of tests/dane.rs. The test CA is in
//! control/tlsca (the policy fetch needs it), so webpki would accept the dane-ta certificate
//! for mx-webpki.both.dane.test: only DANE refuses it.

use crate::postfix::{SENDER, assert_nothing_delivered, assert_stored, delivered, unique};
use crate::util::{Outcome, QmailHome};

/// A home with the trusted (loopback) validating unbound and the test CA.
fn home() -> QmailHome {
    QmailHome::with_test_peers()
}

/// Sends a fresh message to `domain`: (recipient local part, message, outcome). The verdict
/// has the letters `letters` and every needle.
fn send(
    home: &QmailHome,
    domain: &str,
    letters: &str,
    needles: &[&str],
) -> (String, String, Outcome) {
    let local = unique("both");
    let rcpt = format!("{local}@{domain}");
    let msg = format!("Subject: MTA-STS and DANE to {domain}\n\nbody for {local}\n");
    let out = home.run(domain, SENDER, &[&rcpt], msg.as_bytes());
    out.expect(letters, needles[0]);
    has_all(&out, needles);
    (local, msg, out)
}

fn has_all(out: &Outcome, needles: &[&str]) {
    for n in needles {
        assert!(out.last().text.contains(n), "no {n:?}\n{}", out.dump());
    }
}

fn delivers(home: &QmailHome, domain: &str, needles: &[&str]) -> Outcome {
    let (local, msg, out) = send(home, domain, "rK", needles);
    assert_stored(&delivered(domain, &local), msg.as_bytes());
    out
}

fn blocked(home: &QmailHome, domain: &str, needles: &[&str]) {
    let (local, _, _) = send(home, domain, "Z", needles);
    assert_nothing_delivered(domain, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_keeps_an_unlisted_mx_that_dane_protects() {
    // The policy lists only mx-dead; mx-dane has usable TLSA records and a self-signed
    // certificate, so only DANE can have authenticated it.
    delivers(
        &home(),
        "both.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-dane.both.dane.test.",
            "MTA-STS: enforce policy of both.dane.test (id 1, fetched).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_unlisted_mx_kept_for_dane_must_still_match_its_tlsa() {
    blocked(
        &home(),
        "bad.both.dane.test",
        &[
            "TLS with 127.0.8.25 failed: no TLSA record at _25._tcp.mx-nomatch.both.dane.test \
             matched the certificate chain (DANE). (#4.7.5)",
            "MTA-STS: enforce policy of bad.both.dane.test",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_still_drops_an_unlisted_secure_mx_without_tlsa() {
    // mx-notlsa.dane.test is DNSSEC-secure with no TLSA records: DANE does not apply, so the
    // policy decides and it is never contacted (mx-dead is the only MX left).
    let home = home();
    let domain = "nodane.both.dane.test";
    let local = unique("both");
    let rcpt = format!("{local}@{domain}");
    let out = home.run(domain, SENDER, &[&rcpt], b"Subject: x\n\nbody\n");
    out.expect("Z", "MTA-STS: enforce policy of nodane.both.dane.test");
    assert!(!out.last().text.contains("127.0.8.25"), "{}", out.dump());
    assert_nothing_delivered(domain, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_listed_mx_with_usable_tlsa_is_authenticated_by_dane() {
    // webpki cannot verify the self-signed certificate: the delivery proves DANE decided.
    delivers(
        &home(),
        "listed.both.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-dane.both.dane.test.",
            "MTA-STS: enforce policy of listed.both.dane.test",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_dane_failure_is_not_rescued_by_the_mta_sts_policy() {
    // The certificate is valid for mx-webpki.both.dane.test under control/tlsca (what the
    // policy asks for), but its TLSA record does not match: DANE wins, nothing is sent.
    let home = home();
    blocked(
        &home,
        "listedbad.both.dane.test",
        &[
            "TLS with 127.0.8.27 failed: no TLSA record at _25._tcp.mx-webpki.both.dane.test \
             matched the certificate chain (DANE). (#4.7.5)",
        ],
    );
    // The control: with DANE and MTA-STS overridden, webpki accepts the same peer.
    home.control("tlspolicy", "listedbad.both.dane.test:verify!\n");
    delivers(
        &home,
        "listedbad.both.dane.test",
        &[
            "127.0.8.27 accepted message.",
            "verified as mx-webpki.both.dane.test by",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn testing_mode_does_not_say_enforce_would_drop_a_dane_mx() {
    // The testing policy lists only mx-dead: without DANE the TLS line would say enforce
    // would not have used mx-dane.
    let out = delivers(
        &home(),
        "testing.both.dane.test",
        &[
            "127.0.8.25 accepted message.",
            "verified by DANE-EE (3 1 1) for mx-dane.both.dane.test.",
            "MTA-STS: testing policy of testing.both.dane.test",
        ],
    );
    assert!(!out.last().text.contains("enforce would"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_probe_keeps_the_unlisted_dane_mx_as_a_delivery_does() {
    // qremote-probe asks the library the same questions as a delivery: the MX host DANE
    // protects is one of the addresses to try, at level dane, and it would be used.
    let r = crate::probe::probe(&home(), &["--json", "both.dane.test"]);
    let j = r.json();
    let peers = j["peers"].as_array().expect("peers");
    let dane = peers
        .iter()
        .find(|p| p["name"] == "mx-dane.both.dane.test")
        .unwrap_or_else(|| panic!("mx-dane dropped\n{}", r.dump()));
    assert_eq!(dane["ip"], "127.0.8.25", "{}", r.dump());
    assert_eq!(dane["policy"]["level"], "dane", "{}", r.dump());
    assert_eq!(dane["plan"], "connect", "{}", r.dump());
}
