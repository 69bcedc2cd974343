//! SMTP AUTH against real Postfix with Cyrus SASL (scripts/lib/postfix.sh): one relay per
//! mechanism on 127.0.9.1-3, named plain/login/cram.auth.test in the test DNS, AUTH only after
//! STARTTLS, relaying only for authenticated clients. The body is compared byte for byte in
//! the maildir and Postfix's log must name the SASL user.

use std::time::{Duration, Instant};

use crate::auth::{assert_no_secret, chmod};
use crate::postfix::{
    DOMAIN, assert_nothing_delivered, assert_stored, delivered, queue_id, unique,
};
use crate::util::{QmailHome, peer_env};

/// The account scripts/lib/postfix.sh writes into the relays' sasldb.
const USER: &str = "relayuser";
const PASSWORD: &str = "s3cret: with spaces|and a bar";
const SENDER: &str = "sender@client.qremote.test";

/// Waits (bounded) until Postfix's log has a line with both `a` and `b`.
fn logged(a: &str, b: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(peer_env("QREMOTE_POSTFIX_LOG")).unwrap_or_default();
        if log.lines().any(|l| l.contains(a) && l.contains(b)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn each_mechanism_delivers_through_postfix_with_cyrus_sasl() {
    for (relay, mech) in [
        ("plain.auth.test", "PLAIN"),
        ("login.auth.test", "LOGIN"),
        ("cram.auth.test", "CRAM-MD5"),
    ] {
        let local = unique("auth");
        let rcpt = format!("{local}@{DOMAIN}");
        let home = QmailHome::with_test_peers();
        home.route(DOMAIN, &format!("{relay}|{USER}|{PASSWORD}"));
        chmod(&home, "smtproutes", 0o400);
        let msg = format!("Subject: via {mech}\n\n.leading dot\nbody\n").into_bytes();
        let out = home.run(DOMAIN, SENDER, &[&rcpt], &msg);
        out.expect("rK", &format!("verified as {relay} by "));
        out.expect(
            "rK",
            &format!("\nAUTH: authenticated as {USER} with {mech}.\n"),
        );
        assert_no_secret("the reports", &out.stdout, USER, PASSWORD);
        assert_stored(&delivered(DOMAIN, &local), &msg);
        let id = queue_id(&out);
        assert!(
            logged(
                &format!("{id}: client="),
                &format!("sasl_method={mech}, sasl_username={USER}")
            ),
            "no SASL login for {id} in {}",
            peer_env("QREMOTE_POSTFIX_LOG")
        );
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn wrong_password_is_z_and_nothing_is_delivered() {
    let local = unique("authbad");
    let rcpt = format!("{local}@{DOMAIN}");
    let home = QmailHome::with_test_peers();
    home.route(
        DOMAIN,
        &format!("plain.auth.test:25|{USER}|wrong: password"),
    );
    let out = home.run(DOMAIN, SENDER, &[&rcpt], b"Subject: x\n\nx\n");
    out.expect(
        "Z",
        "but authentication as relayuser (AUTH PLAIN) was rejected.\nRemote host said: 535 5.7.8 ",
    );
    assert_no_secret("the reports", &out.stdout, USER, "wrong: password");
    assert_nothing_delivered(DOMAIN, &local);
}

/// The relay really requires AUTH: without credentials it refuses to relay.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn without_credentials_the_relay_refuses() {
    let local = unique("authnone");
    let rcpt = format!("{local}@{DOMAIN}");
    let home = QmailHome::with_test_peers();
    home.route(DOMAIN, "plain.auth.test");
    let out = home.run(DOMAIN, SENDER, &[&rcpt], b"Subject: x\n\nx\n");
    out.assert_clean();
    assert_eq!(out.letters(), "hD", "{}", out.dump());
    assert!(out.reports[0].text.contains("554 5.7.1 "), "{}", out.dump());
}

/// authsenders picks the relay and the account by sender, before smtproutes.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn authsenders_with_real_postfix() {
    let local = unique("authsender");
    let rcpt = format!("{local}@{DOMAIN}");
    let home = QmailHome::with_test_peers();
    home.route(DOMAIN, "[127.0.0.99]");
    home.control(
        "authsenders",
        &format!("@client.qremote.test:login.auth.test|{USER}|{PASSWORD}\n"),
    );
    let msg = b"Subject: by sender\n\nhello\n";
    let out = home.run(DOMAIN, SENDER, &[&rcpt], msg);
    out.expect("rK", "AUTH: authenticated as relayuser with LOGIN.");
    assert_stored(&delivered(DOMAIN, &local), msg);
}
