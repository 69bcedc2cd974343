//! Regressions for issue 7 (the SMTP side): each test failed on the code the issue was filed
//! against. Scripted peers where the behaviour is hostile or timing-bound, real DNS (the
//! i7.test zone in scripts/lib/dns.sh) where the address list matters.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::peer::{Client, Scripted};
use crate::scripted::{home_for, text};
use crate::util::{QmailHome, peer_env};

const MSG: &[u8] = b"Subject: t\n\nhello\n";

/// A pipelining server that reads MAIL, `rcpts` RCPTs and DATA, sends `replies` and hangs up
/// without answering the rest (Exim's `drop` ACL).
fn pipelined_drop(rcpts: usize, replies: &'static str) -> Scripted {
    Scripted::start(1, move |_, c: &mut Client| {
        c.ehlo(&["PIPELINING"]);
        c.expect("MAIL");
        for _ in 0..rcpts {
            c.expect("RCPT");
        }
        c.expect("DATA");
        c.send(replies);
        c.hang_up();
    })
}

/// Item 2: Exim's `drop` ACL under PIPELINING. The 550 to the only RCPT was read, then the
/// connection closed without a reply to DATA: the recipient is rejected for good (`h`, `D`),
/// not retried for the whole queue lifetime.
#[test]
fn r7_pipelined_rcpt_550_then_drop_is_final() {
    let server = pipelined_drop(1, "250 ok\r\n550 5.1.1 no such user\r\n");
    let home = home_for(&server);
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("hD", "Giving up on 127.0.0.1.");
    assert!(out.reports[0].text.contains("550 5.1.1 no such user"));
    server.finish();
}

/// Item 2 at every point of a pipelined MAIL, RCPT, DATA: the server answers the first few
/// commands, then closes (FIN) or resets (RST). What was read stands, whatever follows; what
/// was not read is not guessed.
#[test]
fn r7_pipelined_drop_at_each_reply() {
    let died = "Connected to 127.0.0.1 but connection died. (#4.4.2)";
    let cases: [(&str, &str, &str); 6] = [
        ("", "Z", died),
        ("250 ok\r\n", "Z", died),
        ("250 ok\r\n250 ok\r\n", "rZ", died),
        (
            "250 ok\r\n550 5.1.1 no such user\r\n",
            "hD",
            "Giving up on 127.0.0.1.",
        ),
        (
            "250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n",
            "hD",
            "Giving up on 127.0.0.1.",
        ),
        (
            "250 ok\r\n250 ok\r\n554 5.5.1 no valid recipients\r\n",
            "rD",
            "554 5.5.1 no valid recipients",
        ),
    ];
    for reset in [false, true] {
        for (replies, letters, verdict) in cases {
            let server = Scripted::start(1, move |_, c: &mut Client| {
                c.ehlo(&["PIPELINING"]);
                c.expect("MAIL");
                c.expect("RCPT");
                c.expect("DATA");
                c.send(replies);
                if reset {
                    socket2::SockRef::from(c.reader.get_ref())
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                } else {
                    c.hang_up();
                }
            });
            let out = home_for(&server).run("example.org", "a@b", &["x@example.org"], MSG);
            out.assert_clean();
            assert_eq!(
                (out.letters().as_str(), out.last().text.contains(verdict)),
                (letters, true),
                "after {replies:?} (reset: {reset})\n{}",
                out.dump()
            );
            server.finish();
        }
    }
}

/// Item 2, partial cases: the replies read stand, the rest of the message is deferred here
/// (the recipients already answered are never asked of another address).
#[test]
fn r7_rcpt_replies_read_before_a_drop_stand() {
    // Pipelined: accepted, rejected, then the drop before DATA's reply; and the first
    // recipient rejected, then the drop before the second's reply.
    let cases = [
        (
            "250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n",
            ["ok", "no"],
            "rhZ",
        ),
        ("250 ok\r\n550 5.1.1 no such user\r\n", ["no", "x"], "hZ"),
    ];
    for (replies, locals, letters) in cases {
        let server = pipelined_drop(locals.len(), replies);
        let rcpts = locals.map(|l| format!("{l}@example.org"));
        let out = home_for(&server).run("example.org", "a@b", &[&rcpts[0], &rcpts[1]], MSG);
        out.expect(letters, "connection died. (#4.4.2)");
        assert!(
            out.reports[letters.len() - 2].text.contains("550 5.1.1"),
            "{}",
            out.dump()
        );
        server.finish();
    }

    // Lock-step: the same, one command at a time.
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("250 ok\r\n");
        c.expect("RCPT");
        c.send("550 5.1.1 no such user\r\n");
        c.expect("RCPT");
        c.hang_up();
    });
    let home = home_for(&server);
    let out = home.run(
        "example.org",
        "a@b",
        &["no@example.org", "x@example.org"],
        MSG,
    );
    out.expect("hZ", "connection died. (#4.4.2)");
    server.finish();
}

/// Item 3: SIZE counts what is sent, CR LF as two bytes, once (RFC 1870 section 3): ten
/// `aaaa CR LF` lines are 60 bytes, and a server with SIZE 65 takes them.
#[test]
fn r7_size_of_a_crlf_message_is_not_overcounted() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["SIZE 65"]);
        c.expect("MAIL FROM:<a@b> SIZE=60");
        c.accept_rcpt_data();
    });
    let home = home_for(&server);
    home.run(
        "example.org",
        "a@b",
        &["x@example.org"],
        &b"aaaa\r\n".repeat(10),
    )
    .expect("rK", "accepted message.");
    server.finish();
}

/// Item 5: the keywords after a first EHLO line longer than a report keeps (5,000 bytes) are
/// still seen: STARTTLS is tried (here refused, so `may` goes on in plaintext) and SIZE sent.
#[test]
fn r7_long_first_ehlo_line_hides_no_keyword() {
    let server = Scripted::start(1, |_, c| {
        c.send("220 scripted ESMTP\r\n");
        c.expect("EHLO");
        c.send(&format!(
            "250-{}\r\n250-SIZE 100000\r\n250 STARTTLS\r\n",
            "x".repeat(5000)
        ));
        c.expect("STARTTLS");
        c.send("454 4.7.0 not now\r\n");
        c.expect("MAIL FROM:<a@b> SIZE=");
        c.accept_rcpt_data();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "STARTTLS refused: 454 4.7.0 not now");
    server.finish();
}

/// Item 8: what stock reads with scan_ulong keeps working: a comment after the smtproutes
/// port and after the number of seconds.
#[test]
fn r7_numbers_followed_by_text_work_as_in_stock() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.accept_mail();
    });
    let home = QmailHome::new();
    home.control(
        "smtproutes",
        &format!(
            "example.org:{}:{} # the test server\n",
            server.addr.ip(),
            server.addr.port()
        ),
    );
    home.control("timeoutremote", "5 # seconds\n");
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "accepted message.");
    server.finish();
}

/// A listener whose accept queue is full: connecting to it times out.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    assert!(!fillers.is_empty());
    (listener, fillers, addr)
}

/// Item 9: stock skips a timeout within 120 s of the last counted one only while the count is
/// not 0; a record cleared by a success counts the next timeout at once.
#[test]
fn r7_tcpto_counts_a_timeout_after_a_cleared_record() {
    let (_listener, _fillers, addr) = black_hole();
    let home = QmailHome::new();
    home.route("example.org", &format!("[{}]:{}", addr.ip(), addr.port()));
    home.control("timeoutconnect", "1\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut table = vec![0u8; 1024];
    table[..4].copy_from_slice(&[127, 0, 0, 1]);
    table[4] = 0; // cleared by a success...
    table[8..12].copy_from_slice(&(now - 10).to_le_bytes()); // ...after a timeout 10 s ago
    let path = home.path().join("queue/lock/tcpto");
    std::fs::write(&path, &table).unwrap();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "(#4.4.1)");
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after[4], 1, "the timeout is counted");
    let when = u32::from_le_bytes([after[8], after[9], after[10], after[11]]);
    assert!(when >= now, "and its time recorded");
}

/// Item 10: the block holding the final dot could not be written: the server answered DATA
/// with 354 and reset the connection. The server cannot have seen the dot, so this is a plain
/// "connection died", not "Possible duplicate!".
///
/// The message is one block (under `message::BLOCK`), so its only write carries the dot, and
/// the write fails whatever the kernel's buffer sizes: the reset usually arrives before the
/// client writes at all (the 354 stays readable on Linux); if the client is quicker, the
/// block is larger than what the small receive window and small segments let the client's
/// send buffer take (about 28 KiB), so the write is still blocked when the reset ends it.
/// Both paths were checked (the second by delaying the reset).
#[test]
fn r7_dot_never_written_is_not_a_possible_duplicate() {
    use socket2::{Domain, SockRef, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.set_tcp_mss(536).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.listen(1).unwrap();
    let server = Scripted::start_on_listener(TcpListener::from(socket), 1, move |_, c| {
        c.ehlo(&[]);
        c.accept_until_data();
        // Closing with a zero linger time sends RST: the body is never read.
        SockRef::from(c.reader.get_ref())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let home = home_for(&server);
    home.control("timeoutremote", "5\n");
    let body: Vec<u8> = b"Subject: big\n\n"
        .iter()
        .copied()
        .chain(b"0123456789".repeat(6300))
        .chain(*b"\n")
        .collect();
    let out = home.run("example.org", "a@b", &["x@example.org"], &body);
    out.expect("rZ", "Connected to 127.0.0.1 but connection died. (#4.4.2)");
    assert!(
        !out.last().text.contains("Possible duplicate!"),
        "{}",
        out.dump()
    );
    server.finish();
}

/// Found in the review of issue 7: a 1xx or 3xx reply to the final dot is neither success
/// nor failure (stock qmail counts it as success, so the server may have stored the message):
/// deferred, with "Possible duplicate!", never `K` and never a plain deferral.
#[test]
fn r7_odd_reply_to_the_dot_is_a_possible_duplicate() {
    for code in ["354", "150"] {
        let server = Scripted::start(1, move |_, c| {
            c.ehlo(&[]);
            c.accept_until_data();
            c.data();
            c.send(&format!("{code} what now\r\n"));
            c.drain();
        });
        let out = home_for(&server).run("example.org", "a@b", &["x@example.org"], MSG);
        out.expect(
            "rZ",
            "Connected to 127.0.0.1 but the reply after the message was not SMTP: no 2xx, 4xx \
             or 5xx code. Possible duplicate! (#4.5.0)",
        );
        server.finish();
    }
}

/// Item 14: the server closed its side after the RCPT without replying; the connection is
/// dead, so no QUIT goes out (the server still reads, and sees none).
#[test]
fn r7_no_quit_on_a_dead_connection() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("250 ok\r\n");
        c.expect("RCPT");
        let _ = c.reader.get_ref().shutdown(std::net::Shutdown::Write);
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "connection died. (#4.4.2)");
    let t = text(&server.finish()[0]);
    assert!(!t.contains("QUIT"), "{t}");
}

/// A listener that never accepts: connections to it complete (the kernel's queue) and then
/// wait for a greeting that never comes. Counts them afterwards.
struct Tripwire(TcpListener);

impl Tripwire {
    fn on(addr: &str) -> Tripwire {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        Tripwire(l)
    }

    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

fn dns_home() -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home.control("timeoutremote", "1\n");
    home
}

/// Item 6: the best MX has six addresses, none listening; the next MX is behind them. At most
/// five addresses are tried (control/mxaddresslimit, Postfix's smtp_mx_address_limit), so the
/// sixth and the next MX are not; 0 lifts the limit.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn r7_address_limit_bounds_the_addresses_tried() {
    let trip = Tripwire::on("127.0.17.20:25");
    let home = dns_home();
    home.run("addrlimit.i7.test", "a@b", &["x@addrlimit.i7.test"], MSG)
        .expect("Z", "wasn't able to establish an SMTP connection. (#4.4.1)");
    assert_eq!(trip.connections(), 0, "the seventh address was tried");

    home.control("mxaddresslimit", "0\n");
    home.run("addrlimit.i7.test", "a@b", &["x@addrlimit.i7.test"], MSG)
        .expect("Z", "Connected to 127.0.17.20 but connection died.");
    assert_eq!(trip.connections(), 1, "no limit: every address is tried");
}

/// Item 6: two MX names with one address: it is tried once.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn r7_an_address_is_tried_once() {
    let trip = Tripwire::on("127.0.17.21:25");
    dns_home()
        .run("dup.i7.test", "a@b", &["x@dup.i7.test"], MSG)
        .expect("Z", "Connected to 127.0.17.21 but connection died.");
    assert_eq!(trip.connections(), 1);
}

/// Item 6: two servers greeted and then deferred MAIL: that is enough for one delivery attempt
/// (control/mxsessionlimit, Postfix's smtp_mx_session_limit); the third MX is not tried.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn r7_session_limit_bounds_the_greeted_sessions() {
    let defer = |_: usize, c: &mut crate::peer::Client| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("421 4.3.2 busy\r\n");
        c.drain();
    };
    let s1 = Scripted::start_on("127.0.17.22:25", 1, defer);
    let s2 = Scripted::start_on("127.0.17.23:25", 1, defer);
    let trip = Tripwire::on("127.0.17.24:25");
    dns_home()
        .run("sessions.i7.test", "a@b", &["x@sessions.i7.test"], MSG)
        .expect("Z", "421 4.3.2 busy");
    assert_eq!(trip.connections(), 0, "a third session was tried");
    s1.finish();
    s2.finish();
}

/// Item 18: an unreadable control/tlsca is said in plain words, as CONFIGURATION.md says it.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn r7_unreadable_tlsca_is_reported_in_plain_words() {
    use std::os::unix::fs::PermissionsExt;
    let mut home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home.route("example.org", "mx1.qremote.test");
    home.control("tlspolicy", ":verify\n");
    home.control(
        "tlsca",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    let tlsca = home.path().join("control/tlsca");
    std::fs::set_permissions(&tlsca, std::fs::Permissions::from_mode(0o000)).unwrap();
    home.unprivileged();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "Z",
            "TLS with 127.0.0.20 failed: cannot read control/tlsca (permission denied). (#4.7.5)",
        );
}
