//! `qremote-probe` against the real peers (Postfix with good, expired, wrong-name and
//! self-signed certificates and without STARTTLS; nsd/unbound with CNAMEs and several MX
//! hosts): the facts it shows, its JSON, and its exit codes.

use std::process::{Command, Stdio};

use crate::postfix::{delivered, unique};
use crate::util::{QmailHome, peer_env};

const PROBE: &str = env!("CARGO_BIN_EXE_qremote-probe");

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "output lacks {needle:?}\n{}",
            self.dump()
        );
        self
    }

    pub fn code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{}", self.dump());
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", self.dump()))
    }

    pub fn dump(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn probe(home: &QmailHome, args: &[&str]) -> Run {
    let out = Command::new(PROBE)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("QMAILHOME", home.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run qremote-probe");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A home that resolves with the test unbound and trusts the test CA (control/tlsca).
pub fn home() -> QmailHome {
    QmailHome::with_test_peers()
}

/// The SPKI SHA-256 of a peer's certificate, computed by openssl.
pub fn openssl_spki(name: &str) -> String {
    let pem = format!("{}/{name}.pem", peer_env("QREMOTE_CERTS"));
    let script = format!(
        "openssl x509 -in {pem} -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum"
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "openssl failed for {pem}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn help_and_bad_usage() {
    let home = QmailHome::new();
    let r = probe(&home, &["--help"]);
    r.code(0).has("usage: qremote-probe").has("exit status");
    let r = probe(&home, &["--bogus", "x.test"]);
    r.code(3);
    assert!(r.stderr.contains("unknown option --bogus"), "{}", r.dump());
    probe(&home, &[]).code(3);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn good_peer_by_mx_shows_route_chain_and_tls_line() {
    let home = home();
    let r = probe(&home, &["simple.qremote.test"]);
    r.code(0)
        .has("route: MX lookup (no smtproutes entry)")
        .has("MX simple.qremote.test: 10 mx1.qremote.test [DNSSEC: not validated, AD=0]")
        .has("A mx1.qremote.test: 127.0.0.20")
        .has("1. 127.0.0.20:25 (mx1.qremote.test, MX 10)  TLS policy: may from default")
        .has("220 peers.qremote.test ESMTP")
        .has("250-STARTTLS")
        .has("EHLO reply after STARTTLS:")
        .has("TLS: TLSv1.")
        .has("subject: CN=mx1.qremote.test")
        .has("names: DNS:mx1.qremote.test")
        .has("issuer: CN=qremote test intermediate")
        .has("(valid now)")
        .has(&format!("SPKI SHA-256: {}", openssl_spki("mx1")))
        .has("verification: verified as mx1.qremote.test by control/tlsca")
        .has("    webpki roots: certificate chain does not lead to a trusted CA\n")
        .has("    control/tlsca: verified\n")
        .has("report line: TLS: TLSv1.")
        .has(", verified as mx1.qremote.test by control/tlsca.")
        .has("a delivery would send MAIL FROM here")
        .has("result: OK");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn json_for_a_good_peer() {
    let home = home();
    let r = probe(&home, &["--json", "simple.qremote.test"]);
    r.code(0);
    let j = r.json();
    assert_eq!(j["status"], "OK");
    assert_eq!(j["exit"], 0);
    assert_eq!(j["route"]["kind"], "mx");
    let mx = &j["dns"][0];
    assert_eq!(mx["type"], "MX");
    assert_eq!(mx["records"][0], "10 mx1.qremote.test");
    assert_eq!(mx["ad"], false);
    let peer = &j["peers"][0];
    assert_eq!(peer["ip"], "127.0.0.20");
    assert_eq!(peer["policy"]["level"], "may");
    assert_eq!(peer["policy"]["source"], "default");
    let a = &peer["attempts"][0];
    assert_eq!(a["state"], "ready");
    assert_eq!(a["starttls_offered"], true);
    assert_eq!(a["tls"]["verified"], true);
    assert_eq!(a["tls"]["verified_by"], "control/tlsca");
    assert_eq!(a["tls"]["checks"][0]["source"], "webpki roots");
    assert_eq!(a["tls"]["checks"][0]["verified"], false);
    assert_eq!(a["tls"]["checks"][1]["source"], "control/tlsca");
    assert_eq!(a["tls"]["checks"][1]["verified"], true);
    assert_eq!(a["certificates"][0]["subject"], "CN=mx1.qremote.test");
    assert_eq!(a["certificates"][0]["spki_sha256"], openssl_spki("mx1"));
    assert_eq!(
        a["certificates"][1]["subject"],
        "CN=qremote test intermediate"
    );
    let line = a["tls_line"].as_str().unwrap();
    assert!(line.starts_with("TLS: TLSv1.") && line.ends_with("by control/tlsca."));
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn broken_certificates_are_named_and_warn() {
    let home = home();
    for (host, why) in [
        ("expired", "certificate has expired"),
        (
            "wrongname",
            "certificate is not valid for wrongname.qremote.test",
        ),
        (
            "selfsigned",
            "certificate chain does not lead to a trusted CA",
        ),
    ] {
        let domain = format!("probe-{host}.test");
        home.route(&domain, &format!("{host}.qremote.test"));
        let r = probe(&home, &["--json", &domain]);
        r.code(1);
        let j = r.json();
        assert_eq!(j["status"], "WARNING", "{}", r.dump());
        assert_eq!(j["route"]["kind"], "smtproutes");
        assert_eq!(j["route"]["relay"], format!("{host}.qremote.test"));
        let a = &j["peers"][0]["attempts"][0];
        assert_eq!(a["state"], "ready", "{}", r.dump());
        assert_eq!(a["tls"]["verified"], false);
        assert_eq!(a["tls"]["error"], why, "{}", r.dump());
        assert!(
            a["tls_line"]
                .as_str()
                .unwrap()
                .contains(&format!("unverified: {why}"))
        );
        assert_eq!(a["certificates"][0]["spki_sha256"], openssl_spki(host));
    }
    let r = probe(&home, &["probe-expired.test"]);
    r.code(1)
        .has("route: control/smtproutes line 1: probe-expired.test:expired.qremote.test")
        .has("(EXPIRED)")
        .has("verification: failed: certificate has expired");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_chosen_level_gives_the_report_a_delivery_would_give() {
    let home = home();
    home.route("probe-expired.test", "expired.qremote.test");
    let r = probe(&home, &["--level", "verify", "probe-expired.test"]);
    r.code(2)
        .has("TLS policy: verify from qremote-probe --level")
        .has("ZTLS with 127.0.0.22 failed: certificate has expired")
        .has("(#4.7.5)")
        .has("--level may shows it")
        .has("result: CRITICAL");
    home.route("probe-notls.test", "notls.qremote.test");
    let r = probe(&home, &["probe-notls.test"]);
    r.code(1)
        .has("report line: TLS: none (STARTTLS not offered).")
        .has("a delivery would send MAIL FROM here");
    let r = probe(&home, &["--level", "encrypt", "--json", "probe-notls.test"]);
    r.code(2);
    let j = r.json();
    let a = &j["peers"][0]["attempts"][0];
    assert_eq!(a["state"], "next");
    assert_eq!(a["starttls_offered"], false);
    let report = a["report"].as_str().unwrap();
    assert!(
        report.starts_with("ZTLS is required, but 127.0.0.21 did not offer STARTTLS"),
        "{report}"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn cnames_are_followed_and_shown() {
    let home = home();
    probe(&home, &["cname.qremote.test"])
        .code(0)
        .has("MX cname.qremote.test -> CNAME simple.qremote.test: 10 mx1.qremote.test");
    // The name checked is the MX name, as in qmail-tls: alias, not the CNAME target.
    let r = probe(&home, &["--json", "mxcname.qremote.test"]);
    r.code(1)
        .has("certificate is not valid for alias.qremote.test");
    let j = r.json();
    let a = j["dns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "alias.qremote.test" && l["type"] == "A")
        .unwrap_or_else(|| panic!("no A lookup of alias\n{}", r.dump()));
    assert_eq!(a["cnames"][0], "mx1.qremote.test");
    assert_eq!(a["records"][0], "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn several_mx_hosts_in_order_one_peer_or_all() {
    let home = home();
    // MX 10 dead (nothing listens), MX 20 mx1: a delivery tries dead, then mx1.
    let r = probe(&home, &["fallback.qremote.test"]);
    r.code(1)
        .has("1. 127.0.0.99:25 (dead.qremote.test, MX 10)")
        .has("2. 127.0.0.20:25 (mx1.qremote.test, MX 20)")
        .has("connect: failed")
        .has("Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)")
        .has("a delivery would send MAIL FROM here");
    probe(&home, &["--peer", "127.0.0.20", "fallback.qremote.test"]).code(0);
    probe(&home, &["--peer", "127.0.0.99", "fallback.qremote.test"]).code(2);
    // MX 10 notls, MX 20 mx1: by default the first that takes mail ends the probe.
    let j = probe(&home, &["--json", "tlsfallback.qremote.test"]).json();
    assert_eq!(j["peers"][0]["probed"], true);
    assert_eq!(j["peers"][1]["probed"], false);
    let j = probe(&home, &["--json", "--all", "tlsfallback.qremote.test"]).json();
    assert_eq!(j["peers"][1]["probed"], true);
    assert_eq!(j["peers"][1]["attempts"][0]["tls"]["verified"], true);
    assert_eq!(j["status"], "WARNING");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn source_address_and_relay_on_the_command_line() {
    let home = home();
    home.control("outgoingip", "127.0.10.7\n");
    let r = probe(&home, &["[127.0.0.20]:25"]);
    r.code(1)
        .has("source address: 127.0.10.7 (control/outgoingip)")
        .has("route: relay [127.0.0.20]:25 given on the command line")
        .has("connect: from 127.0.10.7")
        .has("verification: failed: an [ip] route has no host name to check");
    let j = probe(&home, &["--json", "[::1]:25"]).json();
    assert_eq!(j["route"]["relay"], "[::1]");
    assert_eq!(j["peers"][0]["ip"], "::1");
    assert_eq!(j["peers"][0]["attempts"][0]["state"], "ready");
    assert_eq!(j["peers"][0]["attempts"][0]["source"], "::1");
}

#[test]
fn credentials_in_smtproutes_are_never_printed() {
    let home = QmailHome::new();
    home.route("auth.test", "relay.test:587|alice|s3cretpw");
    for args in [&["auth.test"][..], &["--json", "auth.test"]] {
        let r = probe(&home, args);
        assert!(
            !r.stdout.contains("s3cretpw") && !r.stderr.contains("s3cretpw"),
            "{}",
            r.dump()
        );
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn send_delivers_through_the_real_path() {
    let home = home();
    home.route("probe-send.test", "mx1.qremote.test");
    let local = unique("probe");
    let to = format!("{local}@probe-send.test");
    let r = probe(
        &home,
        &[
            "--send",
            "sender@client.qremote.test",
            &to,
            "probe-send.test",
        ],
    );
    r.code(0)
        .has("r\n")
        .has("K127.0.0.20 accepted message.")
        .has("Remote host said: 250 2.0.0 Ok")
        .has("verified as mx1.qremote.test by control/tlsca.");
    let stored = delivered("probe-send.test", &local);
    assert!(
        String::from_utf8_lossy(&stored).contains("Subject: qremote-probe test message"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}

#[test]
fn every_option_and_exit_code_is_in_the_man_page() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/qremote-probe.1"))
        .unwrap()
        .replace("\\-", "-");
    let help = probe(&QmailHome::new(), &["--help"]).stdout;
    let options: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(options.len() >= 7, "{help}");
    for o in options {
        assert!(man.contains(o), "{o} is not in docs/qremote-probe.1");
    }
    for code in ["OK", "WARNING", "CRITICAL", "UNKNOWN"] {
        assert!(help.contains(code) && man.contains(code), "{code}");
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn routing_failures_show_the_report_a_delivery_would_give() {
    let home = home();
    let r = probe(&home, &["nullmx.qremote.test"]);
    r.code(2)
        .has("MX nullmx.qremote.test: 0 .")
        .has("does not accept mail (null MX)")
        .has("(#5.1.10)");
    let j = probe(&home, &["--json", "nosuchdomain.qremote.test"]).json();
    assert_eq!(j["status"], "CRITICAL");
    assert_eq!(j["dns"][0]["error"], "NXDOMAIN (no such name)");
    let failure = j["route_failure"].as_str().unwrap();
    assert!(
        failure.starts_with("DSorry, I couldn't find any host named"),
        "{failure}"
    );
    assert_eq!(j["peers"].as_array().unwrap().len(), 0);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn equal_preferences_are_said_to_be_shuffled() {
    let home = home();
    probe(&home, &["--all", "equal.qremote.test"])
        .code(1)
        .has("MX hosts of equal preference are shuffled for each delivery")
        .has("127.0.0.20:25 (mx1.qremote.test, MX 10)")
        .has("127.0.0.21:25 (notls.qremote.test, MX 10)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn send_reads_the_message_from_stdin_when_asked() {
    let home = home();
    home.route("probe-send.test", "[127.0.0.21]");
    let local = unique("probestdin");
    let out = Command::new(PROBE)
        .env_clear()
        .env("QMAILHOME", home.path())
        .args([
            "--json",
            "--send",
            "sender@client.qremote.test",
            &format!("{local}@probe-send.test"),
            "--stdin",
            "probe-send.test",
        ])
        .stdin(std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["reports"][0], "r");
    let k = j["reports"][1].as_str().unwrap();
    assert!(k.starts_with("K127.0.0.21 accepted message."), "{k}");
    assert!(k.ends_with("TLS: none (STARTTLS not offered).\n"), "{k}");
    let stored = delivered("probe-send.test", &local);
    assert!(String::from_utf8_lossy(&stored).contains("name = \"qremote\""));
}

/// Writes qmail's queue/lock/tcpto (64 records of 16 bytes) saying `ip` timed out twice just
/// now, so that a delivery skips it; returns the table.
fn timed_out(home: &QmailHome, ip: [u8; 4]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut table = vec![0u8; 64 * 16];
    table[..4].copy_from_slice(&ip);
    table[4] = 2;
    table[8..12].copy_from_slice(&now.to_le_bytes());
    std::fs::write(home.path().join("queue/lock/tcpto"), &table).unwrap();
    table
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn tcpto_is_read_like_a_delivery_and_never_written() {
    let home = home();
    let table = timed_out(&home, [127, 0, 0, 99]);
    let tcpto = home.path().join("queue/lock/tcpto");
    // MX 10 dead (127.0.0.99), MX 20 mx1: a delivery skips dead, so the probe does too.
    let r = probe(&home, &["--json", "fallback.qremote.test"]);
    r.code(0);
    let j = r.json();
    assert_eq!(j["peers"][0]["tcpto_skip"], true);
    assert_eq!(j["peers"][0]["probed"], false);
    assert_eq!(j["peers"][1]["probed"], true);
    probe(&home, &["fallback.qremote.test"]).has("(skipped: recent connect timeouts");
    // A refused connection would clear the record in a delivery; the probe leaves it alone.
    probe(&home, &["--all", "fallback.qremote.test"]).has("connect: failed");
    assert_eq!(std::fs::read(&tcpto).unwrap(), table);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn refusals_and_the_session_limit_are_those_of_a_delivery() {
    let home = home();
    // verify on an [ip] route: a delivery refuses it without connecting.
    let r = probe(&home, &["--json", "--level", "verify", "[127.0.0.20]:25"]);
    r.code(2);
    let j = r.json();
    assert_eq!(j["peers"][0]["plan"], "refuse");
    assert_eq!(j["peers"][0]["probed"], false);
    let refusal = j["peers"][0]["refusal"].as_str().unwrap();
    assert!(
        refusal.starts_with("ZTLS with 127.0.0.20 failed: "),
        "{refusal}"
    );
    // MX 10 notls greets but has no STARTTLS for encrypt; with mxsessionlimit 1 a delivery
    // stops there and never reaches MX 20.
    home.control("mxsessionlimit", "1\n");
    probe(&home, &["--level", "encrypt", "tlsfallback.qremote.test"])
        .code(2)
        .has("did not offer STARTTLS")
        .has("a delivery stops before this address: 1 servers greeted");
}

/// The probe's `TLS:` line (and, where the address is refused, its report) is exactly what
/// qmail-remote prints for the same peer and control files: each case is probed, then
/// delivered to, with the same qmail home.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_tls_line_and_report_are_those_of_a_delivery() {
    // (destination, smtproutes relay, control/tlspolicy)
    let cases = [
        ("simple.qremote.test", None, None),
        ("probe-expired.test", Some("expired.qremote.test"), None),
        ("probe-notls.test", Some("notls.qremote.test"), None),
        // An override line: its note is part of a plaintext session's line too.
        (
            "notls.qremote.test",
            None,
            Some("notls.qremote.test:may!\n"),
        ),
        ("tlsfallback.qremote.test", None, Some(":none!\n")),
        (
            "probe-expired.test",
            Some("expired.qremote.test"),
            Some("expired.qremote.test:verify\n"),
        ),
        (
            "probe-notls.test",
            Some("notls.qremote.test"),
            Some("notls.qremote.test:encrypt\n"),
        ),
        // DANE: verified by TLSA records; a secure host without them; usable records and
        // no STARTTLS; records that match nothing.
        ("ee.dane.test", None, None),
        ("notlsa.dane.test", None, None),
        ("notls.dane.test", None, None),
        ("eebad.dane.test", None, None),
        // MTA-STS: enforce (verified), testing (what enforce would have done).
        ("enforce.sts.test", None, None),
        ("testing.sts.test", None, None),
    ];
    let mut refused = 0;
    for (dest, relay, tlspolicy) in cases {
        let home = home();
        if let Some(relay) = relay {
            home.route(dest, relay);
        }
        if let Some(t) = tlspolicy {
            home.control("tlspolicy", t);
        }
        let r = probe(&home, &["--json", dest]);
        let j = r.json();
        let attempts = j["peers"][0]["attempts"].as_array().unwrap();
        let a = attempts.last().unwrap_or_else(|| panic!("{}", r.dump()));
        let to = format!("{}@{dest}", unique("probe-line"));
        let out = home.run(
            dest,
            "sender@client.qremote.test",
            &[&to],
            b"Subject: x\n\nx\n",
        );
        out.assert_clean();
        let verdict = out.last();
        match a["state"].as_str().unwrap() {
            "ready" => {
                assert_eq!(verdict.letter, 'K', "{dest}: {}\n{}", out.dump(), r.dump());
                let tls = verdict
                    .text
                    .lines()
                    .find(|l| l.starts_with("TLS: "))
                    .unwrap_or_else(|| panic!("{}", out.dump()));
                assert_eq!(a["tls_line"], tls, "{dest}: {}", r.dump());
            }
            _ => {
                refused += 1;
                assert_eq!(
                    a["report"].as_str().unwrap(),
                    format!("{}{}", verdict.letter, verdict.text),
                    "{dest}: {}",
                    r.dump()
                );
            }
        }
    }
    // expired at verify, notls at encrypt, DANE without STARTTLS, DANE not matching.
    assert_eq!(refused, 4);
}

/// The probe says whether the qmail home's `bin/qmail-remote` is qremote: what it shows is
/// what deliveries do only then.
#[test]
fn the_qmail_remote_in_the_home_is_named() {
    let home = QmailHome::new();
    let state = |home: &QmailHome| {
        // Refused before connecting (verify, no host name): no network needed.
        let r = probe(home, &["--json", "--level", "verify", "[127.0.10.9]:25"]);
        r.json()["qmail_remote"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(&home), "unknown");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Not a file to read: never blocks, never reads without end.
    std::os::unix::fs::symlink("/dev/zero", bin.join("qmail-remote")).unwrap();
    assert_eq!(state(&home), "unknown");
    std::fs::remove_file(bin.join("qmail-remote")).unwrap();
    std::fs::write(bin.join("qmail-remote"), "#!/bin/sh\necho qmail 1.03\n").unwrap();
    assert_eq!(state(&home), "other");
    probe(&home, &["--level", "verify", "[127.0.10.9]:25"])
        .has("qmail-remote: bin/qmail-remote is not qremote");
    std::fs::copy(env!("CARGO_BIN_EXE_qmail-remote"), bin.join("qmail-remote")).unwrap();
    // "qremote-stale" where a package is installed whose build is not this one.
    assert!(state(&home).starts_with("qremote"));
}

/// Output into a closed pipe (`qremote-probe example.com | head -1`) ends the probe quietly
/// with UNKNOWN: no abort, no core, no Rust panic text.
#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    let home = QmailHome::new();
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    let out = Command::new(PROBE)
        .env_clear()
        .env("QMAILHOME", home.path())
        .args(["--level", "verify", "[127.0.10.9]:25"])
        .stdin(Stdio::null())
        .stdout(write)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A handshake that fails at `may`, then a plaintext retry that cannot connect (the server
/// closed its listener): a delivery reports the TLS failure, and so does the probe.
#[test]
fn a_plaintext_retry_that_cannot_connect_keeps_the_tls_reason() {
    fn one_failed_handshake() -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = format!("[127.0.0.1]:{}", listener.local_addr().unwrap().port());
        let handle = std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Read, Write};
            let (tcp, _) = listener.accept().unwrap();
            // Closed before the client can learn the handshake failed: its retry is refused.
            drop(listener);
            let mut r = BufReader::new(tcp);
            let mut line = String::new();
            let say = |r: &mut BufReader<std::net::TcpStream>, s: &[u8]| {
                let _ = r.get_mut().write_all(s);
            };
            say(&mut r, b"220 scripted ESMTP\r\n");
            let _ = r.read_line(&mut line);
            say(&mut r, b"250-scripted\r\n250 STARTTLS\r\n");
            let _ = r.read_line(&mut line);
            say(&mut r, b"220 go ahead\r\n");
            let mut hello = [0u8; 5];
            let _ = r.get_mut().read(&mut hello);
            say(&mut r, b"this is not TLS\r\n");
            let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
        });
        (relay, handle)
    }
    let home = QmailHome::new();
    home.control("timeoutremote", "3\n");
    let (relay, server) = one_failed_handshake();
    home.route("example.org", &relay);
    let r = probe(&home, &["--json", "example.org"]);
    server.join().unwrap();
    let j = r.json();
    let attempts = j["peers"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{}", r.dump());
    assert_eq!(attempts[0]["state"], "retry-plaintext");
    assert_eq!(attempts[1]["state"], "no-connection");
    let probed = attempts[1]["report"].as_str().unwrap().to_string();

    let home = QmailHome::new();
    home.control("timeoutremote", "3\n");
    let (relay, server) = one_failed_handshake();
    home.route("example.org", &relay);
    let out = home.run(
        "example.org",
        "a@b",
        &["x@example.org"],
        b"Subject: x\n\nx\n",
    );
    server.join().unwrap();
    out.expect("Z", "(#4.7.5)");
    assert!(
        out.last().text.starts_with("TLS with 127.0.0.1 failed: "),
        "{}",
        out.dump()
    );
    assert_eq!(probed, format!("Z{}", out.last().text), "{}", r.dump());
}

/// A peer that trickles its greeting, or its side of the TLS handshake, one byte at a time
/// (no per-read timeout would ever fire) is cut off at `timeoutremote`, as in a delivery.
#[test]
fn a_trickling_greeting_or_handshake_is_cut_off() {
    use crate::peer::Scripted;
    use std::time::{Duration, Instant};
    fn trickle(c: &mut crate::peer::Client, first: &[u8]) {
        c.send_bytes(first);
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            let w = c.reader.get_mut();
            if std::io::Write::write_all(w, b"2").is_err() {
                break;
            }
        }
    }
    let server = Scripted::start(2, |i, c| {
        if i == 0 {
            trickle(c, b"2");
        } else {
            c.ehlo(&["STARTTLS"]);
            c.expect("STARTTLS");
            c.send("220 go ahead\r\n");
            let mut hello = [0u8; 5];
            let _ = std::io::Read::read(c.reader.get_mut(), &mut hello);
            // A handshake record of 16 KiB whose bytes come one by one.
            trickle(c, b"\x16\x03\x03\x40\x00");
        }
    });
    let home = QmailHome::new();
    home.control("timeoutremote", "2\n");
    home.route("example.org", &server.relay());
    let start = Instant::now();
    let r = probe(&home, &["--json", "example.org"]);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    let a = &r.json()["peers"][0]["attempts"][0];
    assert!(
        a["report"]
            .as_str()
            .unwrap()
            .starts_with("ZConnected to 127.0.0.1 but connection died."),
        "{}",
        r.dump()
    );
    let start = Instant::now();
    let r = probe(&home, &["--json", "--level", "encrypt", "example.org"]);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    let a = &r.json()["peers"][0]["attempts"][0];
    assert_eq!(
        a["report"],
        "ZTLS with 127.0.0.1 failed: the handshake did not complete in time. (#4.7.5)\n",
        "{}",
        r.dump()
    );
    server.finish();
}

/// The probe says what the whole delivery comes to, as qmail-remote decides it: MX 10 has no
/// STARTTLS for `encrypt`, MX 20 is skipped for recent timeouts (queue/lock/tcpto), so a
/// delivery ends with MX 10's report; the same home delivered to gives the same report.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_delivery_outcome_is_that_of_a_delivery() {
    let home = home();
    let r = probe(&home, &["--json", "simple.qremote.test"]);
    assert_eq!(r.json()["delivery"]["outcome"], "mail-from", "{}", r.dump());
    assert_eq!(r.json()["delivery"]["ip"], "127.0.0.20");
    probe(&home, &["simple.qremote.test"]).has("a delivery would send MAIL FROM to 127.0.0.20\n");

    home.control("tlspolicy", "notls.qremote.test:encrypt\n");
    timed_out(&home, [127, 0, 0, 20]);
    let r = probe(&home, &["--json", "tlsfallback.qremote.test"]);
    let j = r.json();
    assert_eq!(j["delivery"]["outcome"], "report", "{}", r.dump());
    let report = j["delivery"]["report"].as_str().unwrap().to_string();
    assert!(
        report.starts_with("ZTLS is required, but 127.0.0.21 did not offer STARTTLS"),
        "{}",
        r.dump()
    );
    probe(&home, &["tlsfallback.qremote.test"]).has(&format!(
        "a delivery would end with this report:\n  {}",
        report.lines().next().unwrap()
    ));
    let to = format!("{}@tlsfallback.qremote.test", unique("probe-outcome"));
    let out = home.run(
        "tlsfallback.qremote.test",
        "sender@client.qremote.test",
        &[&to],
        b"Subject: x\n\nx\n",
    );
    out.assert_clean();
    assert_eq!(report, format!("Z{}", out.last().text), "{}", out.dump());
}
