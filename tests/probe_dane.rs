//! `qremote-probe` and DANE, against the DNSSEC-signed zones of scripts/lib/dane.sh (nsd,
//! validated by the loopback unbound) and the Postfix listeners their TLSA records name: per
//! peer the DNSSEC status the decision used, the TLSA RRset with each record's usability and
//! the certificate it matches, the DANE outcome of the handshake, and overrides, in text and
//! in JSON.

use crate::probe::{Run, openssl_spki, probe};
use crate::util::{QmailHome, peer_env};

/// A home on the trusted (loopback) validating resolver, without control/tlsca: only DANE
/// can authenticate the self-signed MX hosts.
fn home() -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home
}

fn json(home: &QmailHome, domain: &str) -> (Run, serde_json::Value) {
    let r = probe(home, &["--json", domain]);
    let j = r.json();
    (r, j)
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_dane_ee_record_is_shown_usable_and_matching_the_leaf() {
    let spki = openssl_spki("selfsigned");
    let r = probe(&home(), &["ee.dane.test"]);
    r.code(0)
        .has("TLS policy: dane from DANE: TLSA records at _25._tcp.mx-ee.dane.test")
        .has("  DNSSEC: MX answer secure (AD=1); addresses secure (AD=1)\n")
        .has(
            "  DANE: 1 usable of 1 TLSA records at _25._tcp.mx-ee.dane.test (DNSSEC-secure); \
             TLS required, authenticated by these records only\n",
        )
        .has(&format!(
            "    3 1 1 {spki}: usable (DANE-EE, public key, SHA-256); matches certificate 0\n"
        ))
        .has("verification: verified by DANE-EE (3 1 1) for mx-ee.dane.test\n")
        .has("result: OK");
    let (_, j) = json(&home(), "ee.dane.test");
    let p = &j["peers"][0];
    assert_eq!(p["dnssec"]["mx_ad"], true);
    assert_eq!(p["dnssec"]["addr_ad"], true);
    assert!(p["dnssec"]["expanded"].is_null());
    let d = &p["dane"];
    assert_eq!(d["state"], "usable");
    assert_eq!(d["owner"], "_25._tcp.mx-ee.dane.test");
    let rec = &d["records"][0];
    assert_eq!(
        (&rec["usage"], &rec["selector"], &rec["matching"]),
        (&3.into(), &1.into(), &1.into())
    );
    assert_eq!(rec["data"], spki.as_str());
    assert_eq!(rec["usable"], true);
    assert_eq!(rec["matches"], serde_json::json!([0]));
    let tls = &p["attempts"][0]["tls"];
    assert_eq!(tls["dane"], true);
    assert_eq!(tls["verified_by"], "DANE-EE (3 1 1)");
    assert_eq!(j["exit"], 0);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_dane_ta_record_matches_the_intermediate_and_an_alias_is_expanded() {
    let r = probe(&home(), &["ta.dane.test"]);
    r.code(0)
        .has("names a DANE-TA chain may be issued for: mx-ta.dane.test, ta.dane.test\n")
        .has(&format!(
            "    2 1 1 {}: usable (DANE-TA, public key, SHA-256); matches certificate 1\n",
            openssl_spki("int")
        ))
        .has("verification: verified by DANE-TA (2 1 1) for mx-ta.dane.test");
    // mx-alias is a CNAME to mx-ee: the expanded name is the TLSA base domain.
    let (r, j) = json(&home(), "alias.dane.test");
    r.code(0);
    let p = &j["peers"][0];
    assert_eq!(p["dnssec"]["expanded"], "mx-ee.dane.test");
    assert_eq!(p["dane"]["owner"], "_25._tcp.mx-ee.dane.test");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn records_that_cannot_be_used_or_do_not_match_are_named() {
    let r = probe(&home(), &["unusable.dane.test"]);
    r.code(1)
        .has("TLS policy: encrypt from DANE: 2 TLSA records at _25._tcp.mx-unusable.dane.test, none usable")
        .has(
            "  DANE: 2 TLSA records at _25._tcp.mx-unusable.dane.test (DNSSEC-secure), none \
             usable: TLS required (at least encrypt), not authenticated by DANE\n",
        )
        .has(&format!(
            "    1 1 1 {}: unusable: certificate usage other than DANE-TA(2) or DANE-EE(3)\n",
            openssl_spki("selfsigned")
        ));
    let (_, j) = json(&home(), "unusable.dane.test");
    let d = &j["peers"][0]["dane"];
    assert_eq!(d["state"], "unusable");
    let records = d["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    for rec in records {
        assert_eq!(rec["usable"], false);
        assert_eq!(
            rec["unusable_because"],
            "certificate usage other than DANE-TA(2) or DANE-EE(3)"
        );
        assert!(rec["matches"].is_null());
    }
    // eebad: a usable record for another key. DANE refuses the handshake (at any level), so
    // there is no chain to compare.
    let r = probe(&home(), &["eebad.dane.test"]);
    r.code(2)
        .has(&format!(
            "    3 1 1 {}: usable (DANE-EE, public key, SHA-256)\n",
            openssl_spki("expired")
        ))
        .has("no TLSA record at _25._tcp.mx-eebad.dane.test matched")
        .has("(no certificate to show: DANE refused the handshake, at any level)");
    let (_, j) = json(&home(), "eebad.dane.test");
    assert!(j["peers"][0]["dane"]["records"][0]["matches"].is_null());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn why_dane_is_not_used_is_said() {
    let r = probe(&home(), &["insecure.dane.test"]);
    r.has("  DNSSEC: MX answer not validated (AD=0); addresses not validated (AD=0)\n")
        .has("  DANE: not used: the host's addresses are not DNSSEC-validated (AD=0)\n");
    let (_, j) = json(&home(), "insecure.dane.test");
    assert_eq!(j["peers"][0]["dnssec"]["addr_ad"], false);
    assert_eq!(j["peers"][0]["dane"]["state"], "none");
    probe(&home(), &["notlsa.dane.test"]).has(
        "  DANE: not used: no DNSSEC-validated TLSA records for mx-notlsa.dane.test (see the \
         TLSA lookups above)\n",
    );
    let untrusted = peer_env("QREMOTE_DANE_UNTRUSTED_DNS");
    let home = QmailHome::new();
    home.nameserver(&untrusted);
    let r = probe(&home, &["ee.dane.test"]);
    r.code(1).has(&format!(
        "  DANE: not used: DANE not used: the DNSSEC status from resolver {untrusted} is not \
         trusted (not loopback, not in control/dnssecresolvers)\n"
    ));
    let (_, j) = json(&home, "ee.dane.test");
    assert_eq!(j["peers"][0]["dane"]["state"], "none");
    assert!(
        j["peers"][0]["dane"]["reason"]
            .as_str()
            .unwrap()
            .contains("is not trusted")
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_failed_tlsa_lookup_refuses_the_mx_and_the_next_one_is_probed() {
    let (r, j) = json(&home(), "nextmx.dane.test");
    r.code(1);
    let peers = j["peers"].as_array().unwrap();
    assert_eq!(peers[0]["name"], "mx-tlsabad.dane.test", "{}", r.dump());
    assert_eq!(peers[0]["plan"], "refuse");
    assert_eq!(peers[0]["dane"]["state"], "failed");
    assert_eq!(peers[0]["dane"]["owner"], "_25._tcp.mx-tlsabad.dane.test");
    assert!(
        peers[0]["dane"]["reason"]
            .as_str()
            .unwrap()
            .contains("SERVFAIL"),
        "{}",
        r.dump()
    );
    assert_eq!(peers[1]["dane"]["state"], "usable");
    assert_eq!(peers[1]["attempts"][0]["tls"]["dane"], true);
    assert_eq!(peers[1]["attempts"][0]["state"], "ready");
    probe(&home(), &["--all", "tlsabad.dane.test"])
        .code(2)
        .has("a delivery refuses it without connecting: ZTLSA lookup for _25._tcp.mx-tlsabad.dane.test failed");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_override_line_means_no_tlsa_lookup() {
    let home = home();
    home.control("tlspolicy", "eebad.dane.test:encrypt!\n");
    let r = probe(&home, &["eebad.dane.test"]);
    r.code(1)
        .has("TLS policy: encrypt from control/tlspolicy (domain, override)")
        .has("  DANE: not consulted: an override line in control/tlspolicy decides\n")
        .has("DANE and MTA-STS not consulted: override in control/tlspolicy.");
    assert!(!r.stdout.contains("TLSA _25._tcp"), "{}", r.dump());
    let (_, j) = json(&home, "eebad.dane.test");
    assert_eq!(j["peers"][0]["dane"]["state"], "override");
    assert_eq!(
        j["peers"][0]["policy"]["source"],
        "control/tlspolicy (domain, override)"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dane_wins_over_mta_sts_for_an_unlisted_mx_and_the_probe_says_so() {
    // both.dane.test: an enforce policy listing only mx-dead; mx-dane has usable TLSA records.
    let home = crate::probe::home();
    let r = probe(&home, &["--all", "both.dane.test"]);
    r.has("policy in force: mode enforce, id 1 (fetched now)")
        .has(
            "  MTA-STS: not applied: DANE applies to this MX (RFC 8461 section 2); kept although \
         the policy does not list it\n",
        );
    assert!(!r.stdout.contains("drops"), "{}", r.dump());
    let (_, j) = json(&home, "both.dane.test");
    let dane = j["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mx-dane.both.dane.test")
        .cloned()
        .unwrap_or_else(|| panic!("mx-dane dropped\n{}", r.dump()));
    assert_eq!(dane["mta_sts"]["verdict"], "dane");
    assert_eq!(dane["dane"]["state"], "usable");
}
