//! MTA-STS against real peers: nginx serving the policies of the sts.test domains over HTTPS
//! (scripts/lib/nginx.sh), nsd/unbound publishing their `_mta-sts` TXT records and MX
//! records (scripts/lib/dns.sh), and Postfix as the MX hosts (127.0.18.20 with a valid
//! certificate for mx1.sts.test and a.mx.sts.test; the qremote.test listeners for the broken
//! cases). The test CA reaches qmail-remote through control/tlsca. Each test has its own qmail
//! home, so its own cache in `mtasts/`; the tests that shape a cache write its files directly.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::postfix::{SENDER, assert_nothing_delivered, assert_stored, delivered, unique};
use crate::util::{Outcome, QmailHome, peer_env};

/// A qmail home that resolves through the test resolver and trusts the test CA.
fn home() -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    let ca = std::fs::read_to_string(peer_env("QREMOTE_CA")).expect("test CA");
    home.control("tlsca", &ca);
    home
}

struct Sent {
    out: Outcome,
    domain: String,
    local: String,
    msg: Vec<u8>,
}

/// One message to a fresh mailbox at `<label>.sts.test`.
fn send(home: &QmailHome, label: &str) -> Sent {
    let domain = format!("{label}.sts.test");
    let local = unique(label);
    let rcpt = format!("{local}@{domain}");
    let msg = format!("Subject: MTA-STS {label}\n\nbody for {local}\n").into_bytes();
    let out = home.run(&domain, SENDER, &[&rcpt], &msg);
    Sent {
        out,
        domain,
        local,
        msg,
    }
}

fn has_all(out: &Outcome, needles: &[&str]) {
    for n in needles {
        assert!(
            out.last().text.contains(n),
            "verdict lacks {n:?}\n{}",
            out.dump()
        );
    }
}

/// Expects `rK` from `ip`, every needle in the verdict, and the body in the maildir.
fn delivers(home: &QmailHome, label: &str, ip: &str, needles: &[&str]) -> Outcome {
    let s = send(home, label);
    s.out.expect("rK", &format!("{ip} accepted message."));
    has_all(&s.out, needles);
    assert_stored(&delivered(&s.domain, &s.local), &s.msg);
    s.out
}

/// Expects a lone `Z` with every needle, and nothing delivered.
fn blocks(home: &QmailHome, label: &str, needles: &[&str]) -> Outcome {
    let s = send(home, label);
    s.out.expect("Z", needles[0]);
    has_all(&s.out, needles);
    assert_nothing_delivered(&s.domain, &s.local);
    s.out
}

/// A delivery to enforce.sts.test through its one listed MX, with the policy `origin`
/// (`cached` or `fetched`).
fn enforce_delivers(home: &QmailHome, origin: &str) {
    delivers(
        home,
        "enforce",
        "127.0.18.20",
        &[&format!(
            "MTA-STS: enforce policy of enforce.sts.test (id 1, {origin})."
        )],
    );
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn cache_path(home: &QmailHome, domain: &str) -> PathBuf {
    home.path().join("mtasts").join(domain)
}

/// Writes a cache entry as qmail-remote would have: `policy` fetched `age` seconds ago under
/// TXT id `id`.
pub fn write_cache(home: &QmailHome, domain: &str, id: &str, age: u64, policy: &str) {
    let dir = home.path().join("mtasts");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "qremote-mta-sts-cache 1\nid {id}\nfetched {}\nsize {}\n\n{policy}",
        now() - age,
        policy.len()
    );
    std::fs::write(dir.join(domain), text).unwrap();
}

pub fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_with_a_good_mx_delivers_verified_then_uses_the_cache() {
    let home = home();
    delivers(
        &home,
        "enforce",
        "127.0.18.20",
        &[
            "verified as mx1.sts.test by control/tlsca",
            "MTA-STS: enforce policy of enforce.sts.test (id 1, fetched).",
        ],
    );
    let cached = std::fs::read_to_string(cache_path(&home, "enforce.sts.test")).unwrap();
    assert!(
        cached.starts_with("qremote-mta-sts-cache 1\nid 1\n"),
        "{cached}"
    );
    assert!(
        cached.ends_with("mx: mx1.sts.test\r\nmax_age: 86400\r\n"),
        "{cached}"
    );
    enforce_delivers(&home, "cached");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_refuses_a_bad_certificate() {
    blocks(
        &home(),
        "expired",
        &[
            "TLS with 127.0.0.22 failed: certificate has expired. (#4.7.5)",
            "MTA-STS: enforce policy of expired.sts.test (id 1, fetched).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_refuses_an_mx_without_starttls() {
    blocks(
        &home(),
        "notls",
        &[
            "TLS is required, but 127.0.0.21 did not offer STARTTLS (level verify from MTA-STS policy of notls.sts.test). (#4.7.4)",
            "MTA-STS: enforce policy of notls.sts.test",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn enforce_never_uses_an_mx_the_policy_does_not_list() {
    blocks(
        &home(),
        "unlisted",
        &[
            "None of the MX hosts of unlisted.sts.test (mx1.sts.test) is allowed by its MTA-STS policy. (#4.7.5)",
            "MTA-STS: enforce policy of unlisted.sts.test (id 1, fetched).",
        ],
    );
    // fallback.sts.test: MX 10 mx2 (not listed, a valid server) and MX 20 mx1 (listed).
    delivers(
        &home(),
        "fallback",
        "127.0.18.20",
        &["verified as mx1.sts.test"],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_wildcard_matches_one_label_only() {
    // MX 5 b.c.mx.sts.test (two labels under the pattern: not allowed), MX 10 a.mx.sts.test.
    delivers(
        &home(),
        "wild",
        "127.0.18.20",
        &["verified as a.mx.sts.test by control/tlsca"],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn testing_delivers_and_says_what_enforce_would_have_done() {
    delivers(
        &home(),
        "testing",
        "127.0.0.22",
        &[
            "unverified: certificate has expired. MTA-STS testing: enforce would have refused this host: certificate has expired.",
            "MTA-STS: testing policy of testing.sts.test (id 1, fetched).",
        ],
    );
    // notlshosts/ says no TLS for the host; enforce would have outranked it and tried TLS, so
    // the line does not claim enforce would have refused a host it never saw over TLS.
    let home = home();
    home.control("notlshosts/expired.qremote.test", "");
    delivers(
        &home,
        "testing",
        "127.0.0.22",
        &[
            "TLS: none (TLS policy none from control/notlshosts/expired.qremote.test). MTA-STS \
             testing: enforce would have required verified TLS, not tried here (TLS policy none \
             from control/notlshosts/expired.qremote.test).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mode_none_is_no_policy() {
    delivers(
        &home(),
        "none",
        "127.0.0.22",
        &[
            "unverified: certificate has expired.",
            "MTA-STS: the policy of none.sts.test has mode none (id 1, fetched).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_policy_that_cannot_be_had_is_no_policy_and_is_not_refetched_at_once() {
    // Each of these MX hosts has an expired certificate: had the policy been taken, the
    // delivery would have been refused.
    for (label, why) in [
        ("missing", "HTTP status 404"),
        (
            "badhost",
            "certificate is not valid for mta-sts.badhost.sts.test",
        ),
        ("redirect", "HTTP status 301: redirects are not followed"),
        ("big", "the policy is larger than 64 KiB"),
        (
            "malformed",
            "invalid policy: no mx patterns in mode enforce",
        ),
        ("html", "Content-Type is text/html, not text/plain"),
    ] {
        let home = home();
        delivers(
            &home,
            label,
            "127.0.0.22",
            &[
                "unverified: certificate has expired.",
                &format!("MTA-STS: no policy for {label}.sts.test: "),
                why,
            ],
        );
        delivers(
            &home,
            label,
            "127.0.0.22",
            &[&format!(
                "MTA-STS: no policy for {label}.sts.test: not fetched: the last attempt failed less than 5 minutes ago."
            )],
        );
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn two_sts_records_mean_no_policy_and_a_cname_is_followed() {
    // _mta-sts.twotxt has "v=STSv1; id=1", "v=STSv1; id=2" and an SPF record (RFC 8461 3.1:
    // not exactly one STSv1 record, no policy). Its enforce policy does not list its MX,
    // whose certificate has expired: had the policy been taken, nothing would go.
    delivers(
        &home(),
        "twotxt",
        "127.0.0.22",
        &[
            "unverified: certificate has expired.",
            "MTA-STS: no policy for twotxt.sts.test: more than one v=STSv1 TXT record.",
        ],
    );
    // _mta-sts.cnametxt is a CNAME for _mta-sts.enforce; the policy still comes from
    // mta-sts.cnametxt.sts.test.
    delivers(
        &home(),
        "cnametxt",
        "127.0.18.20",
        &[
            "verified as mx1.sts.test by control/tlsca",
            "MTA-STS: enforce policy of cnametxt.sts.test (id 1, fetched).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_chunked_policy_is_read() {
    delivers(
        &home(),
        "chunked",
        "127.0.18.20",
        &["MTA-STS: enforce policy of chunked.sts.test (id 1, fetched)."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_cached_policy_applies_while_the_policy_host_is_down() {
    // down.sts.test publishes id 1; its policy host's address has no server. A cached policy
    // under an older id is refreshed, the fetch fails, and the cached policy still applies.
    let home = home();
    write_cache(
        &home,
        "down.sts.test",
        "0",
        60,
        &policy("enforce", "mx1.sts.test"),
    );
    delivers(
        &home,
        "down",
        "127.0.18.20",
        &[
            "verified as mx1.sts.test",
            "MTA-STS: enforce policy of down.sts.test (id 0, cached; policy fetch failed: cannot connect to 127.0.18.99: connection refused).",
        ],
    );
    let home = crate::sts::home();
    write_cache(
        &home,
        "down.sts.test",
        "0",
        60,
        &policy("enforce", "mx9.sts.test"),
    );
    blocks(
        &home,
        "down",
        &[
            "None of the MX hosts of down.sts.test (mx1.sts.test) is allowed by its MTA-STS policy.",
            "(id 0, cached; policy fetch failed: cannot connect to 127.0.18.99",
        ],
    );
    // The back-off: no second attempt right away, the cached policy still applies.
    blocks(
        &home,
        "down",
        &["(id 0, cached; not fetched: the last attempt failed less than 5 minutes ago)."],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn without_a_cache_a_dead_policy_host_means_no_policy() {
    let home = home();
    // Expired: not used, whatever happens.
    write_cache(
        &home,
        "down.sts.test",
        "1",
        90_000,
        &policy("enforce", "mx9.sts.test"),
    );
    delivers(
        &home,
        "down",
        "127.0.18.20",
        &[
            "MTA-STS: no policy for down.sts.test: policy fetch failed: cannot connect to 127.0.18.99: connection refused.",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_new_id_is_fetched() {
    // idchange.sts.test publishes id 2; the cache has a policy under id 1 that would block.
    let home = home();
    write_cache(
        &home,
        "idchange.sts.test",
        "1",
        60,
        &policy("enforce", "mx9.sts.test"),
    );
    delivers(
        &home,
        "idchange",
        "127.0.18.20",
        &["MTA-STS: enforce policy of idchange.sts.test (id 2, fetched)."],
    );
    let cached = std::fs::read_to_string(cache_path(&home, "idchange.sts.test")).unwrap();
    assert!(cached.contains("\nid 2\n"), "{cached}");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_expired_or_old_policy_is_fetched_again() {
    for age in [90_000, 50_000] {
        // 90000 s: past max_age; 50000 s: past half of it, time for a refresh.
        let home = home();
        write_cache(
            &home,
            "enforce.sts.test",
            "1",
            age,
            &policy("enforce", "mx9.sts.test"),
        );
        enforce_delivers(&home, "fetched");
    }
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn two_concurrent_deliveries_share_the_cache() {
    let home = home();
    let sent: Vec<Sent> = std::thread::scope(|s| {
        let a = s.spawn(|| send(&home, "enforce"));
        let b = s.spawn(|| send(&home, "enforce"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for s in &sent {
        s.out.expect("rK", "127.0.18.20 accepted message.");
        assert_stored(&delivered(&s.domain, &s.local), &s.msg);
    }
    let names: Vec<String> = std::fs::read_dir(home.path().join("mtasts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["enforce.sts.test"], "no temporary file left");
    enforce_delivers(&home, "cached");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_corrupt_or_unusable_cache_never_defers() {
    let home = home();
    std::fs::create_dir_all(home.path().join("mtasts")).unwrap();
    std::fs::write(cache_path(&home, "enforce.sts.test"), "garbage\n").unwrap();
    delivers(
        &home,
        "enforce",
        "127.0.18.20",
        &[
            "MTA-STS: enforce policy of enforce.sts.test (id 1, fetched; cache not used: mtasts/enforce.sts.test is corrupt).",
        ],
    );
    // Rewritten by that delivery.
    delivers(&home, "enforce", "127.0.18.20", &["(id 1, cached)."]);

    let home = crate::sts::home();
    std::fs::write(home.path().join("mtasts"), "not a directory").unwrap();
    delivers(
        &home,
        "enforce",
        "127.0.18.20",
        &[
            "MTA-STS: enforce policy of enforce.sts.test (id 1, fetched; cache not used: mtasts is not a directory).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_cache_directory_qmailr_cannot_make_or_write_never_defers() {
    use std::os::unix::fs::PermissionsExt;
    // As qmailr, in a qmail home it may not write to: no mtasts/, and none can be made.
    let mut home = home();
    home.unprivileged();
    delivers(
        &home,
        "enforce",
        "127.0.18.20",
        &[
            "MTA-STS: enforce policy of enforce.sts.test (id 1, fetched; cache not used: cannot create mtasts: permission denied).",
        ],
    );
    assert!(!home.path().join("mtasts").exists());
    // mtasts/ made by root, readable but not writable: a cached policy is used, and a
    // fetched one cannot be stored.
    let mut home = crate::sts::home();
    write_cache(
        &home,
        "enforce.sts.test",
        "1",
        60,
        &policy("enforce", "mx1.sts.test"),
    );
    let dir = home.path().join("mtasts");
    for p in [dir.clone(), dir.join("enforce.sts.test")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    home.unprivileged();
    enforce_delivers(&home, "cached");
    delivers(
        &home,
        "idchange",
        "127.0.18.20",
        &[
            "MTA-STS: enforce policy of idchange.sts.test (id 2, fetched; cache not updated: cannot write mtasts/idchange.sts.test: permission denied).",
        ],
    );
}

/// Requests nginx has logged for `host`.
fn requests_for(host: &str) -> usize {
    let log = std::fs::read_to_string(peer_env("QREMOTE_NGINX_LOG")).unwrap_or_default();
    log.lines()
        .filter(|l| l.starts_with(&format!("{host} ")))
        .count()
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_warm_cache_makes_no_https_request() {
    // Only this test uses warm.sts.test.
    let host = "mta-sts.warm.sts.test";
    let home = home();
    let before = requests_for(host);
    delivers(&home, "warm", "127.0.18.20", &["(id 1, fetched)."]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while requests_for(host) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(requests_for(host), before + 1, "the cold run fetched once");
    delivers(&home, "warm", "127.0.18.20", &["(id 1, cached)."]);
    assert_eq!(
        requests_for(host),
        before + 1,
        "the warm run fetched nothing"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_override_lowers_a_published_policy() {
    // An override line (level!) for the domain: the policy is not even looked up.
    let home = home();
    home.control("tlspolicy", "expired.sts.test:may!\n");
    let out = delivers(
        &home,
        "expired",
        "127.0.0.22",
        &[
            "unverified: certificate has expired; DANE and MTA-STS not consulted: override in control/tlspolicy.",
        ],
    );
    assert!(!out.last().text.contains("MTA-STS:"), "{}", out.dump());
    assert!(!home.path().join("mtasts/expired.sts.test").exists());
    // For the MX host: the policy applies to the domain, but neither drops that host nor
    // requires verified TLS from it.
    let home = crate::sts::home();
    home.control("tlspolicy", "expired.qremote.test:may!\n");
    delivers(
        &home,
        "expired",
        "127.0.0.22",
        &[
            "unverified: certificate has expired; DANE and MTA-STS not consulted: override in control/tlspolicy.",
            "MTA-STS: enforce policy of expired.sts.test (id 1, fetched).",
        ],
    );
    // Without the !, the strongest level wins: the policy's verify.
    let home = crate::sts::home();
    home.control("tlspolicy", "expired.sts.test:may\n");
    blocks(
        &home,
        "expired",
        &["TLS with 127.0.0.22 failed: certificate has expired. (#4.7.5)"],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_domain_without_mta_sts_reports_nothing_about_it() {
    let out = delivers(
        &home(),
        "plain",
        "127.0.18.20",
        &["verified as mx1.sts.test"],
    );
    assert!(!out.last().text.contains("MTA-STS"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_policy_host_that_stalls_or_trickles_is_cut_off_by_the_deadlines() {
    use std::io::{Read, Write};
    // Hostile behaviour nginx cannot produce: a scripted server on mta-sts.trickle.sts.test's
    // address. Connection 1 never starts TLS; connection 2 sends the headers and then one
    // byte of body every 200 ms, which no per-read timeout would ever stop.
    let listener = std::net::TcpListener::bind("127.0.18.3:443").expect("bind 127.0.18.3:443");
    // The test CA's certificate for every policy host, mta-sts.trickle.sts.test included.
    let cfg = crate::peer::server_config(
        "policy",
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let server = std::thread::spawn(move || {
        let (silent, _) = listener.accept().unwrap();
        let (tcp, _) = listener.accept().unwrap();
        drop(silent);
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            req.push(b[0]);
        }
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nversion: STSv1\r\n");
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(200));
            if s.write_all(b"x").and_then(|()| s.flush()).is_err() {
                break;
            }
        }
        String::from_utf8_lossy(&req).into_owned()
    });
    let start = Instant::now();
    delivers(
        &home(),
        "trickle",
        "127.0.18.20",
        &[
            "MTA-STS: no policy for trickle.sts.test: policy fetch failed: mta-sts.trickle.sts.test (127.0.18.3): TLS handshake timed out.",
        ],
    );
    let handshake = start.elapsed();
    assert!(handshake < Duration::from_secs(8), "{handshake:?}");
    let start = Instant::now();
    delivers(
        &home(),
        "trickle",
        "127.0.18.20",
        &[
            "MTA-STS: no policy for trickle.sts.test: policy fetch failed: mta-sts.trickle.sts.test (127.0.18.3): timed out (the whole fetch may take 10 s).",
        ],
    );
    let total = start.elapsed();
    assert!(total < Duration::from_secs(13), "{total:?}");
    let request = server.join().unwrap();
    assert!(
        request.starts_with(
            "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.trickle.sts.test\r\n"
        ) && request.contains("\r\nConnection: close\r\n"),
        "{request}"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_cached_policy_outlives_its_txt_record() {
    // plain.sts.test publishes no TXT record (any more): a policy cached before still applies
    // until it expires, which is what stripping the record from DNS must not defeat.
    let home = home();
    write_cache(
        &home,
        "plain.sts.test",
        "7",
        60,
        &policy("enforce", "mx9.sts.test"),
    );
    blocks(
        &home,
        "plain",
        &[
            "None of the MX hosts of plain.sts.test (mx1.sts.test) is allowed by its MTA-STS policy.",
            "MTA-STS: enforce policy of plain.sts.test (id 7, cached; no TXT record now, the cached policy applies until it expires).",
        ],
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_smtproutes_relay_is_not_subject_to_mta_sts() {
    // No MX is chosen for a routed domain: the policy (which lists only mx1.sts.test) has
    // nothing to say about the relay, and is not even looked up.
    let home = home();
    home.route("enforce.sts.test", "expired.qremote.test");
    let out = delivers(
        &home,
        "enforce",
        "127.0.0.22",
        &["unverified: certificate has expired."],
    );
    assert!(!out.last().text.contains("MTA-STS"), "{}", out.dump());
    assert!(!home.path().join("mtasts/enforce.sts.test").exists());
}
