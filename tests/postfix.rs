//! The real binary against a real Postfix (started by `scripts/peers-up`): delivery, message
//! transparency checked byte for byte in the maildir Postfix delivers to, per-recipient
//! results, SIZE, SMTPUTF8 and IPv6. Routed by `control/smtproutes`, so no DNS is involved.
//!
//! Postfix delivers asynchronously after its 250, so [`delivered`] polls for the maildir file
//! (bounded). Every test uses its own recipient local part ([`unique`]), so tests can run in
//! parallel and again without clearing the maildirs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{Outcome, QmailHome, peer_env};

/// The domain every test here routes with smtproutes; Postfix accepts any domain.
pub const DOMAIN: &str = "d.qremote.test";
pub const SENDER: &str = "sender@client.qremote.test";

/// A mailbox local part no other test (or earlier run) uses: `<tag>-<time>-<pid>-<n>`.
/// Lowercase, because Postfix folds the local part when it picks the maildir.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{ms:x}-{:x}-{n}", std::process::id())
}

/// `$QREMOTE_MAILDIRS/<domain>/<local>/new`, where the peer delivers `local@domain`.
pub fn maildir_new(domain: &str, local: &str) -> PathBuf {
    PathBuf::from(peer_env("QREMOTE_MAILDIRS"))
        .join(domain)
        .join(local)
        .join("new")
}

fn files_in(dir: &PathBuf) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits up to 10 s for the one message Postfix delivers to `local@domain` and returns the
/// maildir file's bytes. Fails if nothing arrives or more than one message does.
pub fn delivered(domain: &str, local: &str) -> Vec<u8> {
    let dir = maildir_new(domain, local);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files = files_in(&dir);
        if !files.is_empty() {
            assert_eq!(files.len(), 1, "more than one message in {}", dir.display());
            return std::fs::read(&files[0]).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered to {} within 10 s; see {}",
            dir.display(),
            peer_env("QREMOTE_POSTFIX_LOG")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that nothing has been delivered to `local@domain`. Only meaningful after a run that
/// never saw a 2xx to the final dot: Postfix delivers nothing it did not accept with a 250.
pub fn assert_nothing_delivered(domain: &str, local: &str) {
    let dir = maildir_new(domain, local);
    let files = files_in(&dir);
    assert!(files.is_empty(), "unexpected delivery: {files:?}");
}

/// Shows bytes readably for assertion messages (long input shortened in the middle).
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= 600 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(250).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(250)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head:?} ...[{} bytes]... {tail:?}", b.len())
}

/// Asserts that the maildir file is Postfix's prepended header lines followed by exactly
/// `expected` (the message as Postfix stored it, LF line ends).
pub fn assert_stored(stored: &[u8], expected: &[u8]) {
    let ok = stored.len() > expected.len() && stored.ends_with(expected);
    if !ok {
        let common = stored
            .iter()
            .rev()
            .zip(expected.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        panic!(
            "stored message does not end with the expected bytes (stored {} bytes, expected {} \
             bytes, last {common} bytes agree)\nstored:   {}\nexpected: {}",
            stored.len(),
            expected.len(),
            show(stored),
            show(expected)
        );
    }
    let prefix = &stored[..stored.len() - expected.len()];
    assert!(
        prefix.starts_with(b"Return-Path: ") && prefix.ends_with(b"\n"),
        "Postfix's own lines are not a clean prefix: {}",
        show(prefix)
    );
}

/// A qmail home that routes [`DOMAIN`] to `relay`.
fn home_via(relay: &str) -> QmailHome {
    let home = QmailHome::new();
    home.route(DOMAIN, relay);
    home
}

/// Sends `msg` (through a seekable file, or a pipe) to a fresh mailbox via 127.0.0.20, expects
/// `rK`, and checks that Postfix stored exactly `stored`.
fn roundtrip(tag: &str, msg: &[u8], stored: &[u8], pipe: bool) {
    let local = unique(tag);
    let rcpt = format!("{local}@{DOMAIN}");
    let home = home_via("[127.0.0.20]");
    let out = if pipe {
        home.run_pipe(DOMAIN, SENDER, &[&rcpt], msg)
    } else {
        home.run(DOMAIN, SENDER, &[&rcpt], msg)
    };
    out.expect("rK", "127.0.0.20 accepted message.");
    assert_stored(&delivered(DOMAIN, &local), stored);
}

/// The queue id in Postfix's "250 2.0.0 Ok: queued as ID".
pub fn queue_id(out: &Outcome) -> String {
    let text = &out.last().text;
    let at = text
        .find("queued as ")
        .unwrap_or_else(|| panic!("{}", out.dump()));
    text[at + "queued as ".len()..]
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn delivers_and_reports_postfix_reply() {
    let local = unique("k");
    let rcpt = format!("{local}@{DOMAIN}");
    let msg = b"From: sender@client.qremote.test\nSubject: k\n\nhello\n";
    let out = home_via("[127.0.0.20]").run(DOMAIN, SENDER, &[&rcpt], msg);
    out.expect("rK", "Remote host said: 250 2.0.0 Ok: queued as ");
    assert_eq!(out.reports[0].text, "", "{}", out.dump());
    assert!(
        out.last().text.starts_with(
            "127.0.0.20 accepted message.\nRemote host said: 250 2.0.0 Ok: queued as "
        ),
        "{}",
        out.dump()
    );
    let stored = delivered(DOMAIN, &local);
    assert_stored(&stored, msg);
    // The file is the message the report talks about.
    let id = queue_id(&out);
    let needle = format!(" id {id}");
    assert!(
        String::from_utf8_lossy(&stored).contains(&needle),
        "queue id {id} not in the Received header: {}",
        show(&stored)
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn dot_lines_are_stuffed_and_unstuffed() {
    let msg = b"Subject: dots\n\n.leading dot\n.\n..\n...\nmiddle . dot\n.\n";
    roundtrip("dots", msg, msg, false);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn message_that_is_only_a_dot_line() {
    roundtrip("onlydot", b".\n", b".\n", false);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn empty_body() {
    let msg = b"Subject: empty body\n\n";
    roundtrip("emptybody", msg, msg, false);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn empty_message() {
    let local = unique("emptymsg");
    let rcpt = format!("{local}@{DOMAIN}");
    let out = home_via("[127.0.0.20]").run(DOMAIN, SENDER, &[&rcpt], b"");
    out.expect("rK", "127.0.0.20 accepted message.");
    let stored = delivered(DOMAIN, &local);
    // Only Postfix's own header lines (and the blank line it adds) are there.
    let text = String::from_utf8_lossy(&stored);
    assert!(text.starts_with("Return-Path: "), "{}", show(&stored));
    assert!(
        text.ends_with(")\n\n") || text.ends_with(")\n"),
        "{}",
        show(&stored)
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn eight_bit_bytes_pass_unchanged() {
    let mut msg = b"Subject: 8bit\n\nlatin-1: caf\xe9 \xfc\xdf \xa4\n".to_vec();
    msg.extend_from_slice("utf-8: café üß € 日本語\n".as_bytes());
    msg.extend_from_slice(b"all high bytes: ");
    msg.extend(0x80u8..=0xff);
    msg.push(b'\n');
    roundtrip("eightbit", &msg, &msg, false);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn line_of_5000_bytes() {
    let mut msg = b"Subject: long line\n\n".to_vec();
    msg.extend((0..5000).map(|i| b'a' + (i % 26) as u8));
    msg.extend_from_slice(b"\nshort\n");
    roundtrip("longline", &msg, &msg, false);
}

/// About `size` bytes of numbered lines, every 50th starting with a dot.
fn big_message(size: usize) -> Vec<u8> {
    let mut msg = b"Subject: big\n\n".to_vec();
    let mut i = 0;
    while msg.len() < size {
        if i % 50 == 0 {
            msg.extend_from_slice(format!(".{i:07} dot-stuffed line\n").as_bytes());
        } else {
            msg.extend_from_slice(
                format!("{i:07} the quick brown fox jumps over the lazy dog\n").as_bytes(),
            );
        }
        i += 1;
    }
    msg
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn one_mebibyte_message() {
    let msg = big_message(1 << 20);
    roundtrip("onemib", &msg, &msg, false);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn message_from_a_pipe() {
    // Larger than a pipe buffer, so it cannot be read in one go.
    let msg = big_message(300_000);
    roundtrip("pipe", &msg, &msg, true);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn crlf_in_the_input_is_one_line_end() {
    roundtrip(
        "crlf",
        b"Subject: crlf\r\n\r\na\r\nb\n",
        b"Subject: crlf\n\na\nb\n",
        false,
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn bare_cr_is_a_line_end_and_the_dot_after_it_is_stuffed() {
    // Sent as "x" CRLF ".." CRLF: Postfix unstuffs the dot and the message goes on.
    roundtrip(
        "barecr",
        b"Subject: bare cr\n\nx\r.\nafter\n",
        b"Subject: bare cr\n\nx\n.\nafter\n",
        false,
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn final_bare_cr_counts_as_a_line_end() {
    roundtrip(
        "finalcr",
        b"Subject: final cr\n\nlast\r",
        b"Subject: final cr\n\nlast\n",
        false,
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn partial_final_line_is_refused_and_nothing_is_delivered() {
    let local = unique("partial");
    let rcpt = format!("{local}@{DOMAIN}");
    let out =
        home_via("[127.0.0.20]").run(DOMAIN, SENDER, &[&rcpt], b"Subject: partial\n\nno newline");
    out.expect(
        "D",
        "SMTP cannot transfer messages with partial final lines. (#5.6.2)",
    );
    assert_nothing_delivered(DOMAIN, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn per_recipient_results() {
    let ok = unique("ok1");
    let rej = unique("reject1");
    let def = unique("defer1");
    let rcpts: Vec<String> = [&ok, &rej, &def]
        .iter()
        .map(|l| format!("{l}@{DOMAIN}"))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msg = b"Subject: three recipients\n\nbody\n";
    let out = home_via("[127.0.0.20]").run(DOMAIN, SENDER, &rcpts, msg);
    out.expect("rhsK", "127.0.0.20 accepted message.");
    for (i, code) in [(1, "550 5.1.1"), (2, "450 4.2.0")] {
        let text = &out.reports[i].text;
        assert!(
            text.starts_with("127.0.0.20 does not like recipient.\nRemote host said: ")
                && text.contains(code),
            "report {i} lacks {code}\n{}",
            out.dump()
        );
    }
    assert_stored(&delivered(DOMAIN, &ok), msg);
    assert_nothing_delivered(DOMAIN, &rej);
    assert_nothing_delivered(DOMAIN, &def);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn all_recipients_rejected_gives_up() {
    let a = format!("{}@{DOMAIN}", unique("reject-a"));
    let b = format!("{}@{DOMAIN}", unique("reject-b"));
    let out = home_via("[127.0.0.20]").run(DOMAIN, SENDER, &[&a, &b], b"Subject: x\n\nx\n");
    out.expect("hhD", "Giving up on 127.0.0.20.");
    assert!(out.reports[0].text.contains("550 5.1.1"), "{}", out.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn sender_rejected() {
    let local = unique("fromrejected");
    let rcpt = format!("{local}@{DOMAIN}");
    let sender = format!("{}@client.qremote.test", unique("rejectsender"));
    let out = home_via("[127.0.0.20]").run(DOMAIN, &sender, &[&rcpt], b"Subject: x\n\nx\n");
    out.expect("D", "Connected to 127.0.0.20 but sender was rejected.");
    assert!(
        out.last().text.contains("Remote host said: 553 5.7.1"),
        "{}",
        out.dump()
    );
    assert_nothing_delivered(DOMAIN, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn message_over_the_advertised_size_is_refused_before_data() {
    // 127.0.0.21 advertises SIZE 100000.
    let local = unique("toobig");
    let rcpt = format!("{local}@{DOMAIN}");
    let msg = big_message(200_000);
    let out = home_via("[127.0.0.21]").run(DOMAIN, SENDER, &[&rcpt], &msg);
    out.assert_clean();
    assert_eq!(out.last().letter, 'D', "{}", out.dump());
    assert!(out.last().text.contains("(#5.3.4)"), "{}", out.dump());
    assert_nothing_delivered(DOMAIN, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn utf8_local_part_with_smtputf8() {
    let local = unique("üser");
    let rcpt = format!("{local}@{DOMAIN}");
    let msg = "Subject: smtputf8\n\nfor üser\n".as_bytes();
    let out = home_via("[127.0.0.20]").run(DOMAIN, SENDER, &[&rcpt], msg);
    out.expect("rK", "127.0.0.20 accepted message.");
    let stored = delivered(DOMAIN, &local);
    assert_stored(&stored, msg);
    assert!(
        String::from_utf8_lossy(&stored).contains(&format!("Delivered-To: {rcpt}\n")),
        "{}",
        show(&stored)
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn utf8_local_part_without_smtputf8_bounces() {
    // 127.0.0.21 does not offer SMTPUTF8.
    let local = unique("üser");
    let rcpt = format!("{local}@{DOMAIN}");
    let out = home_via("[127.0.0.21]").run(DOMAIN, SENDER, &[&rcpt], b"Subject: x\n\nx\n");
    out.assert_clean();
    assert_eq!(out.last().letter, 'D', "{}", out.dump());
    assert!(out.last().text.contains("(#5.6.7)"), "{}", out.dump());
    assert_nothing_delivered(DOMAIN, &local);
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn ipv6_literal_route() {
    let local = unique("ipv6");
    let rcpt = format!("{local}@{DOMAIN}");
    let msg = b"Subject: over ipv6\n\nhello\n";
    let out = home_via("[::1]").run(DOMAIN, SENDER, &[&rcpt], msg);
    out.expect("rK", "accepted message.");
    assert!(out.last().text.contains("::1"), "{}", out.dump());
    let stored = delivered(DOMAIN, &local);
    assert_stored(&stored, msg);
    assert!(
        String::from_utf8_lossy(&stored).contains("[IPv6:::1]"),
        "not received over IPv6: {}",
        show(&stored)
    );
}
