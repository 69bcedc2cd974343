//! `qremote-probe` and SMTP AUTH, against the Postfix + Cyrus SASL relays of tests/auth_postfix.rs
//! (plain/login/cram.auth.test, 127.0.9.1-3): the authsenders or smtproutes line that chose
//! the route (the user shown, the password never), the mechanisms the relay offers after
//! STARTTLS and the one a delivery would use, what a delivery does when it cannot log in, and
//! that no password, nor any encoding of it, reaches the probe's text or JSON output.

use crate::auth::assert_no_secret;
use crate::postfix::{DOMAIN, delivered, unique};
use crate::probe::{Run, home, probe};
use crate::util::QmailHome;

/// The account in the relays' sasldb (scripts/lib/postfix.sh).
const USER: &str = "relayuser";
const PASSWORD: &str = "s3cret: with spaces|and a bar";

/// Nothing of the password: not itself, not its base64 forms (PLAIN, LOGIN), and no run of
/// eight of its bytes, in the probe's standard output or error.
fn assert_clean(r: &Run, password: &str) {
    for (what, out) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        assert_no_secret(what, out.as_bytes(), USER, password);
        for w in password.as_bytes().windows(8) {
            let w = String::from_utf8_lossy(w);
            assert!(
                !out.contains(&*w),
                "{what} holds {w:?} of the password\n{}",
                r.dump()
            );
        }
    }
}

fn routed(relay: &str, password: &str) -> QmailHome {
    let home = home();
    home.route(DOMAIN, &format!("{relay}|{USER}|{password}"));
    home
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_route_user_and_mechanism_are_shown_and_the_password_never() {
    for (relay, mech) in [
        ("plain.auth.test", "PLAIN"),
        ("login.auth.test", "LOGIN"),
        ("cram.auth.test", "CRAM-MD5"),
    ] {
        let home = routed(relay, PASSWORD);
        let r = probe(&home, &[DOMAIN]);
        r.code(0)
            .has(&format!(
                "route: control/smtproutes line 1: {DOMAIN}:{relay}|{USER}|(password hidden) \
                 (relay {relay} port 25, no MX lookup)\n"
            ))
            .has(&format!("credentials: user {USER}, password not shown"))
            .has("TLS policy: verify from SMTP AUTH credentials")
            .has(&format!("  AUTH offered: {mech}\n"))
            .has(&format!(
                "  AUTH: a delivery would authenticate as {USER} with {mech} (the probe sends \
                 no credentials: only --send shows whether the password is accepted)\n"
            ));
        assert_clean(&r, PASSWORD);
        let r = probe(&home, &["--json", DOMAIN]);
        assert_clean(&r, PASSWORD);
        let j = r.json();
        assert_eq!(j["route"]["kind"], "smtproutes");
        assert_eq!(j["route"]["user"], USER);
        assert_eq!(
            j["route"]["text"],
            format!("{DOMAIN}:{relay}|{USER}|(password hidden)")
        );
        let auth = &j["peers"][0]["attempts"][0]["auth"];
        assert_eq!(auth["offered"], serde_json::json!([mech]));
        assert_eq!(auth["credentials"], true);
        assert_eq!(auth["mechanism"], mech);
        assert!(auth["error"].is_null());
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn authsenders_chooses_by_sender_or_hands_over_to_smtproutes() {
    let home = routed("cram.auth.test", PASSWORD);
    let other = "Zq9#Xv!7kP|w0rd";
    home.control(
        "authsenders",
        &format!("# vip senders\n@vip.test:plain.auth.test:25|vipuser|{other}\n.bounce.test:\n"),
    );
    let r = probe(&home, &["--sender", "a@vip.test", DOMAIN]);
    r.code(0)
        .has("envelope sender: <a@vip.test>\n")
        .has(
            "route: control/authsenders line 2: @vip.test:plain.auth.test:25|vipuser|(password \
             hidden) (relay plain.auth.test port 25, no MX lookup)\n",
        )
        .has("credentials: user vipuser, password not shown")
        .has("AUTH: a delivery would authenticate as vipuser with PLAIN");
    assert_clean(&r, other);
    let r = probe(&home, &["--json", "--sender", "a@vip.test", DOMAIN]);
    assert_clean(&r, other);
    let j = r.json();
    assert_eq!(j["route"]["kind"], "authsenders");
    assert_eq!(j["route"]["line"], 2);
    assert_eq!(j["route"]["sender"], "a@vip.test");
    assert_eq!(j["route"]["user"], "vipuser");

    // `.bounce.test:` hands the sender over to smtproutes; without --sender (<>) no key matches.
    let r = probe(&home, &["--sender", "x@mail.bounce.test", DOMAIN]);
    r.has("control/authsenders line 3: .bounce.test: (this sender is routed by smtproutes)\n")
        .has(&format!(
            "route: control/smtproutes line 1: {DOMAIN}:cram.auth.test|{USER}|(password hidden)"
        ));
    assert_clean(&r, PASSWORD);
    let r = probe(&home, &[DOMAIN]);
    r.has("envelope sender: <> (control/authsenders routes by sender: give --sender)\n")
        .has("AUTH: a delivery would authenticate as relayuser with CRAM-MD5");
    assert_clean(&r, PASSWORD);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_relay_without_auth_is_what_a_delivery_reports() {
    // mx1.qremote.test: Postfix with a valid certificate and no SMTP AUTH.
    let routed_home = routed("mx1.qremote.test", PASSWORD);
    let r = probe(&routed_home, &[DOMAIN]);
    r.code(2)
        .has("  AUTH not offered\n")
        .has(&format!(
            "  AUTH: a delivery could not authenticate as {USER}: it does not offer SMTP AUTH\n"
        ))
        .has(&format!(
            "ZConnected to 127.0.0.20 but cannot log in as {USER}: it does not offer SMTP AUTH. \
             Not sending without the SMTP AUTH the control files ask for."
        ))
        .has("result: CRITICAL");
    assert_clean(&r, PASSWORD);
    let r = probe(&routed_home, &["--json", DOMAIN]);
    assert_clean(&r, PASSWORD);
    let a = &r.json()["peers"][0]["attempts"][0];
    assert_eq!(a["state"], "next");
    assert!(a["auth"]["offered"].is_null());
    assert_eq!(a["auth"]["error"], "it does not offer SMTP AUTH");
    // Without credentials a relay's AUTH is only listed.
    let bare = home();
    bare.route(DOMAIN, "cram.auth.test");
    probe(&bare, &[DOMAIN]).code(0).has(
        "  AUTH offered: CRAM-MD5 (no credentials for this route: a delivery does not log \
             in)\n",
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn send_logs_in_and_reports_without_the_password() {
    let home = routed("cram.auth.test", PASSWORD);
    let local = unique("probeauth");
    let to = format!("{local}@{DOMAIN}");
    let r = probe(
        &home,
        &["--send", "sender@client.qremote.test", &to, DOMAIN],
    );
    r.code(0)
        .has("127.0.9.3 accepted message.")
        .has(&format!("AUTH: authenticated as {USER} with CRAM-MD5."));
    assert_clean(&r, PASSWORD);
    let body = delivered(DOMAIN, &local);
    assert!(
        String::from_utf8_lossy(&body).contains("qremote-probe --send"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
