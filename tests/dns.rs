//! The real binary resolving through real DNS: unbound on `$QREMOTE_DNS` (127.0.0.54), which
//! asks nsd, authoritative for qremote.test and other.test (zones in `scripts/lib/dns.sh`).
//! No smtproutes: the host argument is the test domain, and deliveries land in Postfix's
//! maildirs as in `postfix.rs`.

use std::io::{Seek, Write};
use std::process::{Command, Stdio};

use crate::postfix::{SENDER, assert_stored, delivered, unique};
use crate::util::{BIN, QmailHome, peer_env};

/// A qmail home whose control/nameservers names the test resolver.
fn home() -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home
}

/// Delivers to a fresh mailbox at `domain` (the qremote.test name `label`) and checks that
/// it lands there; `ip` is the address that must have accepted it.
fn delivers(label: &str, ip: &str) {
    let domain = format!("{label}.qremote.test");
    let local = unique(label);
    let rcpt = format!("{local}@{domain}");
    let msg = format!("Subject: via {domain}\n\nhello {label}\n");
    let out = home().run(&domain, SENDER, &[&rcpt], msg.as_bytes());
    out.expect("rK", &format!("{ip} accepted message."));
    assert_stored(&delivered(&domain, &local), msg.as_bytes());
}

/// Runs the binary for `host` with one recipient there and expects a lone verdict.
fn fails(host: &str, letter: &str, needle: &str) {
    let rcpt = format!("{}@{host}", unique("nobody"));
    let out = home().run(host, SENDER, &[&rcpt], b"Subject: x\n\nx\n");
    out.expect(letter, needle);
}

/// `dig @resolver ARGS...`: the whole output. Fails loudly if dig is missing.
fn dig(args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", peer_env("QREMOTE_DNS")))
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (package dnsutils; scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `status:` and `ANSWER:` count of a dig reply.
fn dig_status(output: &str) -> (String, usize) {
    let field = |key: &str| {
        let at = output
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in dig output:\n{output}"));
        output[at + key.len()..]
            .trim_start()
            .split([',', ' ', '\n'])
            .next()
            .unwrap()
            .to_string()
    };
    (field("status:"), field("ANSWER:").parse().unwrap())
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn simple_mx() {
    delivers("simple", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn domain_is_a_cname_to_an_mx_domain() {
    delivers("cname", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn cname_chain_across_zones() {
    delivers("chain", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_target_is_a_cname() {
    delivers("mxcname", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn implicit_mx_from_a_record() {
    delivers("implicit", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn implicit_mx_through_a_cname() {
    delivers("implicitcname", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_without_address_is_skipped_for_the_next() {
    delivers("partial", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dead_best_mx_falls_back_to_the_next() {
    delivers("fallback", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn soft_failing_mx_target_does_not_stop_the_others() {
    delivers("mixsoft", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn we_are_only_a_backup_mx() {
    delivers("mebackup", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_answer_over_512_bytes() {
    // The case is what it claims: without EDNS the answer does not fit in UDP.
    let plain = dig(&["+noedns", "+notcp", "+ignore", "bigmx.qremote.test", "MX"]);
    assert!(plain.contains(" tc"), "not truncated:\n{plain}");
    delivers("bigmx", "127.0.0.20");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn forty_addresses_only_one_listening() {
    let many = dig(&["+short", "many.qremote.test", "A"]);
    assert_eq!(many.lines().count(), 40, "{many}");
    // Every address is tried only without control/mxaddresslimit's bound (issue7.rs has it).
    let domain = "bigaddr.qremote.test";
    let local = unique("bigaddr");
    let msg = b"Subject: forty addresses\n\nhello\n";
    let home = home();
    home.control("mxaddresslimit", "0\n");
    let out = home.run(domain, SENDER, &[&format!("{local}@{domain}")], msg);
    out.expect("rK", "127.0.0.20 accepted message.");
    assert_stored(&delivered(domain, &local), msg);
}

/// mx6 has only an AAAA record, ::1. That is an address of an interface that is up (lo), so
/// it is "me", as 127.0.0.1 is: the answer is the loop bounce, not "no address" (#5.4.4),
/// which shows that the AAAA record was looked up and compared with ipme.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn ipv6_only_mx_at_our_own_address_bounces() {
    fails("ipv6only.qremote.test", "D", "(#5.4.6)");
}

/// An smtproutes relay given by name is resolved through DNS too (A and AAAA), and a relay
/// skips the ipme check, so this reaches Postfix on ::1 through mx6's AAAA record.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn relay_by_name_with_only_an_aaaa_record() {
    let domain = "relay6.qremote.test";
    let local = unique("relay6");
    let rcpt = format!("{local}@{domain}");
    let msg = b"Subject: relay by name over IPv6\n\nhello\n";
    let home = home();
    home.route(domain, "mx6.qremote.test");
    let out = home.run(domain, SENDER, &[&rcpt], msg);
    out.expect("rK", "::1 accepted message.");
    assert_stored(&delivered(domain, &local), msg);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn null_mx_bounces() {
    fails("nullmx.qremote.test", "D", "(#5.1.10)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn nonexistent_domain_bounces() {
    let (status, _) = dig_status(&dig(&["nosuch.qremote.test", "MX"]));
    assert_eq!(status, "NXDOMAIN");
    fails(
        "nosuch.qremote.test",
        "D",
        "Sorry, I couldn't find any host named nosuch.qremote.test. (#5.1.2)",
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_with_no_address_bounces() {
    fails("noaddr.qremote.test", "D", "(#5.4.4)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn servfail_on_the_only_mx_target_defers() {
    fails("softmx.qremote.test", "Z", "(#4.1.2)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn servfail_on_the_domain_defers() {
    let (status, _) = dig_status(&dig(&["x.servfail.test", "MX"]));
    assert_eq!(status, "SERVFAIL");
    fails("x.servfail.test", "Z", "(#4.1.2)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_pointing_at_me_bounces() {
    fails("pointsme.qremote.test", "D", "(#5.4.6)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn me_as_best_mx_bounces_even_with_a_backup() {
    // Nothing is strictly better than us, so the backup MX is not tried either.
    fails("mefirst.qremote.test", "D", "(#5.4.6)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn resolver_refuses_any_queries() {
    // Deliveries succeed against this resolver, which proves they never need type ANY.
    let (status, answers) = dig_status(&dig(&["simple.qremote.test", "ANY"]));
    assert_eq!(answers, 0, "ANY was answered (status {status})");
    assert_ne!(status, "NOERROR", "ANY was answered normally");
    let (status, answers) = dig_status(&dig(&["simple.qremote.test", "MX"]));
    assert_eq!((status.as_str(), answers), ("NOERROR", 1));
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dnscacheip_names_the_resolver() {
    let domain = "simple.qremote.test";
    let local = unique("dnscacheip");
    let rcpt = format!("{local}@{domain}");
    let msg = b"Subject: DNSCACHEIP\n\nhello\n";
    let mut home = QmailHome::new();
    home.env("DNSCACHEIP", &peer_env("QREMOTE_DNS"));
    let out = home.run(domain, SENDER, &[&rcpt], msg);
    out.expect("rK", "127.0.0.20 accepted message.");
    assert_stored(&delivered(domain, &local), msg);
}

/// Without control/nameservers or DNSCACHEIP the program reads /etc/resolv.conf. To point
/// that at the test resolver without touching the machine, the binary runs in a private mount
/// namespace (root only) where a temporary file is bind-mounted over /etc/resolv.conf.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn etc_resolv_conf_names_the_resolver() {
    let domain = "simple.qremote.test";
    let local = unique("resolvconf");
    let rcpt = format!("{local}@{domain}");
    let msg = b"Subject: resolv.conf\n\nhello\n";
    let home = QmailHome::new();

    let mut resolv = tempfile::NamedTempFile::new().unwrap();
    writeln!(resolv, "nameserver {}", peer_env("QREMOTE_DNS")).unwrap();
    let mut stdin = tempfile::tempfile().unwrap();
    stdin.write_all(msg).unwrap();
    stdin.rewind().unwrap();

    let out = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#,
        ])
        .arg(resolv.path())
        .args([BIN, domain, SENDER, &rcpt])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("QMAILHOME", home.path())
        .stdin(Stdio::from(stdin))
        .output()
        .expect("run unshare (util-linux)");
    let dump = format!(
        "status: {:?}\nstdout: {:?}\nstderr: {:?}\n(unshare -m needs root)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{dump}");
    assert!(out.stderr.is_empty(), "{dump}");
    // Same shape that util::Outcome::expect("rK", ...) checks: "r" NUL "K..." NUL.
    let reports: Vec<&[u8]> = out
        .stdout
        .strip_suffix(b"\0")
        .unwrap_or_else(|| panic!("no final NUL\n{dump}"))
        .split(|&b| b == 0)
        .collect();
    assert_eq!(reports.len(), 2, "{dump}");
    assert_eq!(reports[0], b"r", "{dump}");
    assert!(
        reports[1].starts_with(b"K127.0.0.20 accepted message."),
        "{dump}"
    );
    assert_stored(&delivered(domain, &local), msg);
}

/// v6mx's only MX has only an AAAA record, fd77::25: local (a "local" route on lo) but on no
/// interface, so not "me". Delivery goes over IPv6 through the whole MX path.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn ipv6_mx_path_delivers() {
    delivers("v6mx", "fd77::25");
}

/// The best MX (a scripted server on 127.0.0.61:25) answers 421 at the greeting: RFC 5321
/// wants the next MX tried, which stock qmail-remote does not do.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn greeting_421_moves_to_the_next_mx() {
    let server = crate::peer::Scripted::start_on("127.0.0.61:25", 1, |_, c| {
        c.send("421 4.3.2 too busy\r\n");
        c.drain();
    });
    delivers("greet421", "127.0.0.20");
    server.finish();
}

/// Required TLS: the best MX (notls) offers no STARTTLS, so the next MX is tried, and the
/// message goes there verified; it never goes in plaintext.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn required_tls_moves_to_the_next_mx() {
    let domain = "tlsfallback.qremote.test";
    let local = unique("tlsfallback");
    let msg = b"Subject: tls fallback\n\nhello\n";
    let home = home();
    home.control("tlspolicy", &format!("{domain}:verify\n"));
    home.control(
        "tlsca",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    let out = home.run(domain, SENDER, &[&format!("{local}@{domain}")], msg);
    out.expect("rK", "127.0.0.20 accepted message.");
    assert!(
        out.last()
            .text
            .contains("verified as mx1.qremote.test by control/tlsca."),
        "{}",
        out.dump()
    );
    assert_stored(&delivered(domain, &local), msg);

    // With only the TLS-less host left, the verdict is a deferral naming the reason.
    let home2 = home_with_route();
    let out = home2.run(domain, SENDER, &[&format!("{local}x@{domain}")], msg);
    out.expect(
        "Z",
        "did not offer STARTTLS (level verify from control/tlspolicy (domain)). (#4.7.4)",
    );
}

fn home_with_route() -> QmailHome {
    let home = home();
    home.route("tlsfallback.qremote.test", "notls.qremote.test");
    home.control("tlspolicy", "tlsfallback.qremote.test:verify\n");
    home
}

/// `control/addresspreference ipv4only` never looks at AAAA records: the IPv6-only MX host
/// has no usable address left.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn ipv4only_preference_ignores_aaaa() {
    let home = home();
    home.control("addresspreference", "ipv4only\n");
    let out = home.run(
        "v6mx.qremote.test",
        SENDER,
        &[&format!("{}@v6mx.qremote.test", unique("v4only"))],
        b"x\n",
    );
    out.expect("D", "(#5.4.4)");
}

/// Two MX hosts of equal preference: each delivery picks one at random (stock qmail's
/// randomisation is dead code on 64-bit systems). Over 20 deliveries both must be used; the
/// chance that a fair choice picks the same host every time is 2 in a million.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn equal_preference_mx_hosts_are_shuffled() {
    let home = home();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let rcpt = format!("{}@equal.qremote.test", unique("equal"));
        let out = home.run(
            "equal.qremote.test",
            SENDER,
            &[&rcpt],
            b"Subject: equal\n\nx\n",
        );
        out.assert_clean();
        let ip = out
            .last()
            .text
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        seen.insert(ip);
    }
    let want: std::collections::BTreeSet<String> =
        ["127.0.0.20", "127.0.0.21"].map(String::from).into();
    assert_eq!(seen, want);
}
