//! Hostile and unusual peers, scripted byte for byte (tier 1: nothing to install).

use crate::peer::Scripted;
use crate::util::QmailHome;

const MSG: &[u8] = b"Subject: t\n\nhello\n.dot line\n";

pub fn home_for(server: &Scripted) -> QmailHome {
    let home = QmailHome::new();
    home.route("example.org", &server.relay());
    home.control("timeoutremote", "2\n");
    home
}

pub fn text(t: &[u8]) -> String {
    String::from_utf8_lossy(t).into_owned()
}

#[test]
fn pipelined_delivery_reports_each_recipient() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["PIPELINING", "SIZE 1000000", "8BITMIME"]);
        c.expect("MAIL FROM:<a@b.example> SIZE=");
        c.expect("RCPT TO:<ok@example.org>");
        c.expect("RCPT TO:<no@example.org>");
        c.expect("RCPT TO:<later@example.org>");
        c.expect("DATA");
        c.send("250 sender ok\r\n250 ok\r\n550 5.1.1 no such user\r\n451 4.3.0 try later\r\n354 go\r\n");
        let body = c.data();
        assert_eq!(body, b"Subject: t\r\n\r\nhello\r\n..dot line\r\n.\r\n");
        c.send("250 2.0.0 queued\r\n");
        c.expect("QUIT");
    });
    let home = home_for(&server);
    let out = home.run(
        "example.org",
        "a@b.example",
        &["ok@example.org", "no@example.org", "later@example.org"],
        MSG,
    );
    out.expect(
        "rhsK",
        "127.0.0.1 accepted message.\nRemote host said: 250 2.0.0 queued\n",
    );
    assert_eq!(
        out.reports[1].text,
        "127.0.0.1 does not like recipient.\nRemote host said: 550 5.1.1 no such user\n"
    );
    assert!(
        out.last()
            .text
            .contains("TLS: none (STARTTLS not offered)."),
        "{}",
        out.dump()
    );
    server.finish();
}

#[test]
fn lock_step_without_pipelining_and_helo_fallback() {
    let server = Scripted::start(1, |_, c| {
        c.send("220 old\r\n");
        c.expect("EHLO client.qremote.test");
        c.send("502 what\r\n");
        c.expect("HELO client.qremote.test");
        c.send("250 hi\r\n");
        c.expect("MAIL FROM:<>");
        c.send("250 ok\r\n");
        c.expect("RCPT TO:<x@example.org>");
        c.send("250 ok\r\n");
        c.expect("DATA");
        c.send("354 go\r\n");
        c.data();
        c.send("250 ok\r\n");
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "", &["x@example.org"], MSG)
        .expect("rK", "accepted message.");
    let t = text(&server.finish()[0]);
    assert!(!t.contains("SIZE="), "{t}");
}

#[test]
fn garbage_greeting_defers() {
    let server = Scripted::start(1, |_, c| c.say_and_wait("HTTP/1.1 400 Bad Request\r\n"));
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "was not SMTP: no reply code");
    server.finish();
}

#[test]
fn mismatched_multiline_codes_defer() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("250-ok\r\n550 no\r\n");
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "different codes");
    server.finish();
}

#[test]
fn greeting_421_defers_with_text() {
    let server = Scripted::start(1, |_, c| c.say_and_wait("421 4.3.2 busy\r\n"));
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "Z",
            "Connected to 127.0.0.1 but greeting failed.\nRemote host said: 421 4.3.2 busy\n",
        );
    server.finish();
}

#[test]
fn greeting_554_is_not_a_bounce() {
    let server = Scripted::start(1, |_, c| c.say_and_wait("554 go away\r\n"));
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "greeting failed");
    server.finish();
}

#[test]
fn mail_421_and_5xx() {
    let server = Scripted::start(2, |i, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send(if i == 0 {
            "421 4.4.5 closing\r\n"
        } else {
            "553 5.7.1 sender refused\r\n"
        });
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "Connected to 127.0.0.1 but sender was rejected.\nRemote host said: 421 4.4.5 closing\n");
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("D", "Connected to 127.0.0.1 but sender was rejected.\nRemote host said: 553 5.7.1 sender refused\n");
    server.finish();
}

#[test]
fn data_and_dot_rejections() {
    let server = Scripted::start(3, |i, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("250 ok\r\n");
        c.expect("RCPT");
        c.send("250 ok\r\n");
        c.expect("DATA");
        if i == 0 {
            c.send("554 5.5.1 no data\r\n");
        } else {
            c.send("354 go\r\n");
            c.data();
            c.send(if i == 1 {
                "552 5.3.4 too big\r\n"
            } else {
                "451 4.3.0 later\r\n"
            });
        }
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rD",
            "127.0.0.1 failed on DATA command.\nRemote host said: 554",
        );
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rD",
            "127.0.0.1 failed after I sent the message.\nRemote host said: 552 5.3.4 too big\n",
        );
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rZ",
            "failed after I sent the message.\nRemote host said: 451",
        );
    server.finish();
}

#[test]
fn all_recipients_rejected_gives_up_without_sending_body() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["PIPELINING"]);
        c.expect("MAIL");
        c.expect("RCPT");
        c.expect("RCPT");
        c.expect("DATA");
        c.send("250 ok\r\n550 no\r\n450 not now\r\n354 go ahead anyway\r\n");
        c.drain();
    });
    let home = home_for(&server);
    let out = home.run(
        "example.org",
        "a@b",
        &["x@example.org", "y@example.org"],
        MSG,
    );
    out.expect("hsD", "Giving up on 127.0.0.1.");
    let t = text(&server.finish()[0]);
    assert!(!t.contains("hello"), "body must not be sent: {t}");
}

#[test]
fn stall_times_out_as_died() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.drain(); // never answers
    });
    let home = home_for(&server);
    home.control("timeoutremote", "1\n");
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("Z", "Connected to 127.0.0.1 but connection died. (#4.4.2)");
    assert!(!out.last().text.contains("Possible duplicate"));
    server.finish();
}

#[test]
fn drop_after_dot_is_possible_duplicate() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.accept_until_data();
        c.data();
        // hang up without a reply
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rZ",
            "Connected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)",
        );
    server.finish();
}

#[test]
fn drop_at_data_is_not_a_duplicate() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        c.send("250 ok\r\n");
        c.expect("RCPT");
        c.send("250 ok\r\n");
        c.expect("DATA");
    });
    let home = home_for(&server);
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    // The RCPT reply stands (`r`); the message is deferred on this address.
    out.expect("rZ", "connection died. (#4.4.2)");
    server.finish();
}

#[test]
fn over_long_reply_text_is_capped_and_huge_reply_refused() {
    let server = Scripted::start(2, |i, c| {
        c.ehlo(&[]);
        c.expect("MAIL");
        if i == 0 {
            c.send(&format!("550-{}\r\n550 end\r\n", "x".repeat(100_000)));
        } else {
            for _ in 0..2000 {
                c.send("250-padding padding padding\r\n");
            }
            c.send("250 ok\r\n");
        }
        c.drain();
    });
    let home = home_for(&server);
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("D", "sender was rejected");
    assert!(out.last().text.len() < 6000, "{}", out.last().text.len());
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "reply too long");
    server.finish();
}

#[test]
fn size_limit_refused_before_mail() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["SIZE 10"]);
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("D", "(#5.3.4)");
    let t = text(&server.finish()[0]);
    assert!(!t.contains("MAIL"), "{t}");
}

#[test]
fn smtputf8_needed_but_missing_bounces() {
    let server = Scripted::start(2, |i, c| {
        if i == 0 {
            c.ehlo(&[]);
            c.drain();
        } else {
            c.ehlo(&["SMTPUTF8", "8BITMIME"]);
            c.expect("MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8");
            c.send("250 ok\r\n");
            c.expect("RCPT TO:<üser@example.org>");
            c.send("250 ok\r\n");
            c.expect("DATA");
            c.send("354 go\r\n");
            c.data();
            c.send("250 ok\r\n");
            c.drain();
        }
    });
    let home = home_for(&server);
    let msg = "Subject: ü\n\nhä\n".as_bytes();
    home.run("example.org", "a@b", &["üser@example.org"], msg)
        .expect("D", "(#5.6.7)");
    home.run("example.org", "a@b", &["üser@example.org"], msg)
        .expect("rK", "accepted message");
    server.finish();
}

#[test]
fn bare_cr_is_stuffed_on_the_wire() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        assert_eq!(c.accept_mail(), b"x\r\n..\r\ny\r\n.\r\n");
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], b"x\r.\r\ny\n")
        .expect("rK", "accepted");
    server.finish();
}

#[test]
fn plaintext_after_starttls_220_is_refused() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("220 go ahead\r\n250 injected\r\n");
        c.drain();
    });
    let home = home_for(&server);
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "sent plaintext after agreeing to STARTTLS");
    server.finish();
}

#[test]
fn pipe_input_works() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["PIPELINING"]);
        c.expect("MAIL");
        c.expect("RCPT");
        c.expect("DATA");
        c.send("250 ok\r\n250 ok\r\n354 go\r\n");
        assert_eq!(c.data(), b"Subject: t\r\n\r\nhello\r\n..dot line\r\n.\r\n");
        c.send("250 ok\r\n");
        c.drain();
    });
    let home = home_for(&server);
    home.run_pipe("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "accepted");
    server.finish();
}

#[test]
fn tcpto_skips_recent_timeouts_and_clears_on_success() {
    let home = QmailHome::new();
    home.route("example.org", "[127.0.0.1]:1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut table = vec![0u8; 1024];
    table[..4].copy_from_slice(&[127, 0, 0, 1]);
    table[4] = 2;
    table[8..12].copy_from_slice(&now.to_le_bytes());
    let path = home.path().join("queue/lock/tcpto");
    std::fs::write(&path, &table).unwrap();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "(#4.4.1)");

    // A count below 2 does not skip; a refused connection (not a timeout) resets the count.
    table[4] = 1;
    std::fs::write(&path, &table).unwrap();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "(#4.4.1)");
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), 1024);
    assert_eq!(
        after[4], 0,
        "count reset after a non-timeout connect result"
    );
}

#[test]
fn a_reply_dribbled_byte_by_byte_still_times_out() {
    let server = Scripted::start(1, |_, c| {
        // Each byte comes well within timeoutremote, the whole greeting never does.
        for b in "220 slow".bytes().cycle().take(40) {
            c.send_bytes(&[b]);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c.drain();
    });
    let home = home_for(&server);
    home.control("timeoutremote", "1\n");
    let started = std::time::Instant::now();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "connection died. (#4.4.2)");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.finish();
}

#[test]
fn connect_timeout_is_recorded_in_tcpto() {
    use socket2::{Domain, Socket, Type};
    // A listener whose accept queue is full drops further SYNs, so connecting times out.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).ok()
        })
        .collect();
    assert!(!fillers.is_empty());

    let home = QmailHome::new();
    home.route("example.org", &format!("[{}]:{}", addr.ip(), addr.port()));
    home.control("timeoutconnect", "1\n");
    let path = home.path().join("queue/lock/tcpto");
    std::fs::write(&path, vec![0u8; 1024]).unwrap();
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "(#4.4.1)");
    let table = std::fs::read(&path).unwrap();
    assert_eq!(
        &table[..4],
        &[127, 0, 0, 1],
        "the timed-out address is recorded"
    );
    assert_eq!(table[4], 1, "with one counted timeout");
    let when = u32::from_le_bytes([table[8], table[9], table[10], table[11]]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    assert!(
        now.abs_diff(when) < 60,
        "time of the timeout, little-endian"
    );
    drop(fillers);
}

#[test]
fn outgoingip_sets_the_source_address() {
    let server = Scripted::start(1, |_, c| {
        let peer = c.reader.get_ref().peer_addr().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.77", "control/outgoingip");
        c.ehlo(&[]);
        c.accept_mail();
    });
    let home = home_for(&server);
    home.control("outgoingip", "127.0.0.77\n");
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "accepted message");
    server.finish();
}

/// 421 ("closing") at each stage of the dialogue, one connection per stage.
#[test]
fn reply_421_at_each_stage() {
    const STAGES: [&str; 6] = ["greeting", "ehlo", "mail", "rcpt", "data", "dot"];
    // What the server reads before each stage's reply, and its reply when that stage is fine.
    const STEPS: [(&str, &str); 6] = [
        ("", "220 scripted\r\n"),
        ("EHLO", "250 scripted\r\n"),
        ("MAIL", "250 ok\r\n"),
        ("RCPT", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        (".", ""),
    ];
    let server = Scripted::start(STAGES.len(), |i, c| {
        for (step, (read, fine)) in STEPS.iter().enumerate() {
            match *read {
                "" => {}
                "." => drop(c.data()),
                command => drop(c.expect(command)),
            }
            if step == i {
                return c.say_and_wait("421 4.3.2 closing\r\n");
            }
            c.send(fine);
        }
    });
    let home = home_for(&server);
    let said = "Remote host said: 421 4.3.2 closing\n";
    let expected = [
        (
            "Z",
            format!("Connected to 127.0.0.1 but greeting failed.\n{said}"),
        ),
        (
            "Z",
            format!("Connected to 127.0.0.1 but my name was rejected.\n{said}"),
        ),
        (
            "Z",
            format!("Connected to 127.0.0.1 but sender was rejected.\n{said}"),
        ),
        ("sD", "Giving up on 127.0.0.1.\n".to_string()),
        ("rZ", format!("127.0.0.1 failed on DATA command.\n{said}")),
        (
            "rZ",
            format!("127.0.0.1 failed after I sent the message.\n{said}"),
        ),
    ];
    for (stage, (letters, text)) in STAGES.iter().zip(expected) {
        let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
        out.expect(letters, &text);
        assert!(
            !out.last().text.contains("Possible duplicate"),
            "{stage}: {}",
            out.dump()
        );
    }
    server.finish();
}

#[test]
fn a_peer_that_stops_reading_the_body_times_out_before_the_dot() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let client_done = std::sync::Arc::new(AtomicBool::new(false));
    let done = client_done.clone();
    let server = Scripted::start(1, move |_, c| {
        c.ehlo(&[]);
        c.accept_until_data();
        // Read nothing more until the client has given up.
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let home = home_for(&server);
    home.control("timeoutremote", "1\n");
    let line = format!("{}\n", "x".repeat(999));
    let big = line.repeat(24 * 1024); // 24 MiB: more than the socket buffers hold
    let started = std::time::Instant::now();
    let out = home.run("example.org", "a@b", &["x@example.org"], big.as_bytes());
    client_done.store(true, Ordering::SeqCst);
    out.expect("rZ", "Connected to 127.0.0.1 but connection died. (#4.4.2)");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.finish();
}
