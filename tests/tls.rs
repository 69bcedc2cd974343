//! STARTTLS against scripted peers (rustls servers with rcgen certificates): what Postfix
//! cannot do on demand. The certificate matrix against real Postfix is in `tls_matrix.rs`.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::peer::Scripted;
use crate::util::QmailHome;

const MSG: &[u8] = b"Subject: tls\n\nsecret\n";

pub fn server_config(tls12_only: bool) -> Arc<ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["scripted.qremote.test".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(cfg)
}

/// The server side of EHLO, STARTTLS and the handshake; returns after reading the second EHLO.
pub fn upgrade(
    mut c: crate::peer::Client,
    keywords: &[&str],
    cfg: Arc<ServerConfig>,
) -> crate::peer::TlsClient {
    c.ehlo(keywords);
    c.expect("STARTTLS");
    c.send("220 go ahead\r\n");
    let mut t = c.starttls(cfg);
    t.expect("EHLO");
    t
}

fn home_for(server: &Scripted, level: &str) -> QmailHome {
    let home = QmailHome::new();
    home.route("example.org", &server.relay());
    home.control("timeoutremote", "3\n");
    home.control("tlspolicy", &format!(":{level}\n"));
    home
}

#[test]
fn not_offered_by_level() {
    // (An [ip] route at `verify` never connects: tests/tls_names.rs.)
    let server = Scripted::start(2, |_, c| {
        c.ehlo(&[]);
        let l = c.line();
        if l.starts_with("MAIL") {
            c.accept_rcpt_data();
        } else {
            assert!(l.starts_with("QUIT") || l.is_empty(), "{l}");
        }
    });
    let may = home_for(&server, "may");
    may.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "TLS: none (STARTTLS not offered).");
    home_for(&server, "encrypt")
        .run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "Z",
            "TLS is required, but 127.0.0.1 did not offer STARTTLS (level encrypt from control/tlspolicy (default)). (#4.7.4)",
        );
    server.finish();
}

#[test]
fn starttls_454_continues_in_plaintext_only_at_may() {
    let server = Scripted::start(2, |i, c| {
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("454 4.7.0 TLS not available\r\n");
        if i == 0 {
            c.accept_mail();
        } else {
            c.drain();
        }
    });
    home_for(&server, "may")
        .run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rK",
            "TLS: none (STARTTLS refused: 454 4.7.0 TLS not available).",
        );
    home_for(&server, "encrypt")
        .run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("Z", "refused STARTTLS: 454 4.7.0 TLS not available");
    server.finish();
}

#[test]
fn handshake_abort_retries_plaintext_at_may_never_at_encrypt() {
    // Connection 0: abort the handshake; 1: the plaintext retry; 2: abort under `encrypt`.
    let server = Scripted::start(3, |i, c| {
        if i == 1 {
            c.ehlo(&["STARTTLS"]);
            c.accept_mail();
            return;
        }
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("220 go ahead\r\n");
        let mut hello = [0u8; 5];
        let _ = std::io::Read::read(c.reader.get_mut(), &mut hello);
        c.send_bytes(b"this is not TLS\r\n");
        c.hang_up();
    });
    let out = home_for(&server, "may").run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("rK", "TLS: none (TLS failed, retried in plaintext: ");
    let out = home_for(&server, "encrypt").run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("Z", "(#4.7.5)");
    assert!(
        out.last().text.starts_with("TLS with 127.0.0.1 failed: "),
        "{}",
        out.dump()
    );
    let transcripts = server.finish();
    assert!(
        !String::from_utf8_lossy(&transcripts[2]).contains("MAIL"),
        "required TLS never ends in plaintext"
    );
}

fn tls_delivery(tls12_only: bool, level: &'static str) -> (crate::util::Outcome, Vec<u8>) {
    let cfg = server_config(tls12_only);
    let server = Scripted::start_with(1, move |_, c| {
        let mut t = upgrade(c, &["STARTTLS", "PIPELINING"], cfg.clone());
        t.send("250-scripted\r\n250 PIPELINING\r\n");
        t.expect("MAIL");
        t.expect("RCPT");
        t.expect("DATA");
        t.send("250 ok\r\n250 ok\r\n354 go\r\n");
        let body = t.data();
        t.send("250 2.0.0 queued over tls\r\n");
        t.drain();
        body
    });
    let out = home_for(&server, level).run("example.org", "a@b", &["x@example.org"], MSG);
    let body = server.finish().remove(0);
    (out, body)
}

#[test]
fn may_delivers_over_tls_and_reports_unverified_ip_route() {
    let (out, body) = tls_delivery(false, "may");
    out.expect(
        "rK",
        "Remote host said: 250 2.0.0 queued over tls\nTLS: TLSv1.3 with TLS13_",
    );
    assert!(
        out.last()
            .text
            .contains("unverified: an [ip] route has no host name to check."),
        "{}",
        out.dump()
    );
    assert_eq!(body, b"Subject: tls\r\n\r\nsecret\r\n.\r\n");
}

#[test]
fn tls12_only_server_works() {
    let (out, _) = tls_delivery(true, "encrypt");
    out.expect("rK", "TLS: TLSv1.2 with TLS_ECDHE_");
}

#[test]
fn none_never_sends_starttls() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&["STARTTLS"]);
        c.accept_mail();
    });
    home_for(&server, "none")
        .run("example.org", "a@b", &["x@example.org"], MSG)
        .expect(
            "rK",
            "TLS: none (TLS policy none from control/tlspolicy (default)).",
        );
    server.finish();
}

#[test]
fn qmail_tls_clientcert_is_presented() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::server::WebPkiClientVerifier;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client.qremote.test".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let server_ck =
        rcgen::generate_simple_self_signed(vec!["scripted.qremote.test".to_string()]).unwrap();
    let cfg = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_ck.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    server_ck.signing_key.serialize_der(),
                )),
            )
            .unwrap(),
    );
    let server = Scripted::start_with(1, move |_, c| {
        let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
        let presented = t
            .reader
            .get_ref()
            .conn
            .peer_certificates()
            .map(|c| c.len())
            .unwrap_or(0);
        assert_eq!(
            presented, 1,
            "the client certificate from control/clientcert.pem"
        );
        t.send("250 scripted\r\n");
        t.expect("MAIL");
        t.send("250 ok\r\n");
        t.expect("RCPT");
        t.send("250 ok\r\n");
        t.expect("DATA");
        t.send("354 go\r\n");
        t.data();
        t.send("250 ok\r\n");
        t.drain();
        t.transcript
    });
    let home = home_for(&server, "encrypt");
    home.control(
        "clientcert.pem",
        &format!("{}{}", client.pem(), client_key.serialize_pem()),
    );
    home.run("example.org", "a@b", &["x@example.org"], MSG)
        .expect("rK", "TLS: TLSv1.3");
    server.finish();
}

#[test]
fn failure_after_tls_still_reports_tls() {
    let cfg = server_config(false);
    let server = Scripted::start_with(1, move |_, c| {
        let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
        t.send("250 scripted\r\n");
        t.expect("MAIL");
        t.send("451 4.3.0 later\r\n");
        t.drain();
        t.transcript
    });
    let out = home_for(&server, "encrypt").run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect(
        "Z",
        "sender was rejected.\nRemote host said: 451 4.3.0 later\nTLS: TLSv1.3 with ",
    );
    server.finish();
}

#[test]
#[ignore = "needs root (binds port 465): scripts/test"]
fn port_465_is_implicit_tls_even_at_level_none() {
    let cfg = server_config(false);
    let server = Scripted::start_with_on("127.0.0.62:465", 1, move |_, c| {
        let mut t = c.starttls(cfg.clone());
        t.send("220 smtps ready\r\n");
        t.expect("EHLO");
        t.send("250 scripted\r\n");
        let body = t.accept_mail();
        assert_eq!(body, b"Subject: tls\r\n\r\nsecret\r\n.\r\n");
        t.transcript
    });
    let home = home_for(&server, "none");
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("rK", "TLS: TLSv1.3 with ");
    let transcript = server.finish().remove(0);
    assert!(!String::from_utf8_lossy(&transcript).contains("STARTTLS"));
}

#[test]
fn ehlo_refused_after_tls_reports_the_tls_session() {
    let cfg = server_config(false);
    let server = Scripted::start_with(1, move |_, c| {
        let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
        t.send("421 4.3.2 bye\r\n");
        t.drain();
        t.transcript
    });
    let out = home_for(&server, "may").run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect(
        "Z",
        "my name was rejected.\nRemote host said: 421 4.3.2 bye\nTLS: TLSv1.3 with ",
    );
    server.finish();
}

/// SNI carries the host name from DNS (here an smtproutes relay name), never an IP address.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn sni_is_the_relay_host_name() {
    let cfg = server_config(false);
    let server = Scripted::start_with_on("127.0.0.63:25", 1, move |_, c| {
        let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
        let sni = t.reader.get_ref().conn.server_name().map(str::to_string);
        assert_eq!(sni.as_deref(), Some("scriptedtls.qremote.test"));
        t.send("250 scripted\r\n");
        t.accept_mail();
        t.transcript
    });
    let home = QmailHome::new();
    home.nameserver(&crate::util::peer_env("QREMOTE_DNS"));
    home.route("sni.qremote.test", "scriptedtls.qremote.test");
    let out = home.run("sni.qremote.test", "a@b", &["x@sni.qremote.test"], MSG);
    out.expect(
        "rK",
        "unverified: certificate chain does not lead to a trusted CA.",
    );
    server.finish();
}

/// Writes what `conn` has queued to `sock` one byte at a time, `gap` apart, as a peer that
/// trickles its TLS records would. Returns whether all of it was written (the client may hang
/// up first).
fn trickle(conn: &mut rustls::ServerConnection, sock: &mut std::net::TcpStream) -> bool {
    use std::io::Write;
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    for b in out {
        if sock.write_all(&[b]).is_err() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The 2 s deadline held: the run ended long before the trickle (25 s and more) could have
/// completed, with room for a slow machine.
fn assert_deadline_held(started: std::time::Instant) {
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(12),
        "the delivery took {took:?} with timeoutremote 2"
    );
}

/// Runs the delivery at `encrypt` with `timeoutremote` 2 and checks that the deadline held.
fn run_by_the_deadline(server: &Scripted) -> crate::util::Outcome {
    let home = home_for(server, "encrypt");
    home.control("timeoutremote", "2\n");
    let started = std::time::Instant::now();
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    assert_deadline_held(started);
    out
}

/// Sends `text` inside TLS, trickled (see [`trickle`]).
fn trickle_text(
    stream: &mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    text: &str,
) -> bool {
    std::io::Write::write_all(&mut stream.conn.writer(), text.as_bytes()).unwrap();
    trickle(&mut stream.conn, &mut stream.sock)
}

/// A TLS handshake trickled one byte per 50 ms (about 40 s for the server's flight) must end
/// with `timeoutremote` (2 s), not with 2 s for each read.
#[test]
fn trickled_handshake_ends_at_the_deadline() {
    let cfg = server_config(false);
    let server = Scripted::start_with(1, move |_, mut c| {
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("220 go ahead\r\n");
        let mut sock = c.reader.into_inner();
        let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
        // Read the ClientHello, then trickle the whole answer.
        while !conn.wants_write() {
            if conn.read_tls(&mut sock).unwrap() == 0 {
                break;
            }
            conn.process_new_packets().unwrap();
        }
        let complete = trickle(&mut conn, &mut sock);
        assert!(
            !complete,
            "the client waited for the whole trickled handshake"
        );
        c.transcript
    });
    run_by_the_deadline(&server).expect(
        "Z",
        "TLS with 127.0.0.1 failed: the handshake did not complete in time. (#4.7.5)",
    );
    server.finish();
}

/// After the handshake, an EHLO reply trickled inside one TLS record must still be complete
/// within `timeoutremote`: rustls reads a whole record, and each socket read gets only the
/// time left.
#[test]
fn trickled_reply_under_tls_ends_at_the_deadline() {
    let cfg = server_config(false);
    let server = Scripted::start_with(1, move |_, c| {
        let t = upgrade(c, &["STARTTLS"], cfg.clone());
        let mut stream = t.reader.into_inner();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut stream.sock).unwrap();
        }
        let mut reply = String::new();
        for i in 0..20 {
            reply.push_str(&format!("250-keyword-number-{i}\r\n"));
        }
        reply.push_str("250 PIPELINING\r\n");
        let complete = trickle_text(&mut stream, &reply);
        assert!(!complete, "the client waited for the whole trickled reply");
        t.transcript
    });
    let out = run_by_the_deadline(&server);
    out.expect("Z", "Connected to 127.0.0.1 but connection died. (#4.4.2)");
    assert!(
        out.last().text.contains("\nTLS: TLSv1.3 with "),
        "{}",
        out.dump()
    );
    server.finish();
}

/// The replies of the DATA stage under TLS, trickled a byte at a time inside one record, are
/// bounded as plaintext ones are: the 354 (nothing was sent, no duplicate) and the reply to
/// the final dot ("Possible duplicate!"), each ended by `timeoutremote` (2 s), not by the
/// 30 s the trickle would take.
#[test]
fn trickled_data_replies_under_tls_end_at_the_deadline() {
    for after_dot in [false, true] {
        let cfg = server_config(false);
        let server = Scripted::start_with(1, move |_, c| {
            let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
            t.send("250 scripted\r\n");
            let slow = |t: &mut crate::peer::TlsClient, code: &str| {
                let reply = format!("{code} {}\r\n", "x".repeat(600));
                let complete = trickle_text(t.reader.get_mut(), &reply);
                assert!(!complete, "the client waited for the whole trickled {code}");
            };
            if after_dot {
                t.accept_until_data();
                t.data();
                slow(&mut t, "250");
            } else {
                for (command, reply) in [("MAIL", "250 ok\r\n"), ("RCPT", "250 ok\r\n")] {
                    t.expect(command);
                    t.send(reply);
                }
                t.expect("DATA");
                slow(&mut t, "354");
            }
            t.transcript
        });
        let out = run_by_the_deadline(&server);
        let died = if after_dot {
            "Connected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)"
        } else {
            "Connected to 127.0.0.1 but connection died. (#4.4.2)"
        };
        out.expect("rZ", died);
        server.finish();
    }
}

/// At `may`, a connection dropped in answer to STARTTLS, or an answer that is not SMTP, is
/// treated like a failed handshake: plaintext on a new connection, said in the report. At
/// `encrypt` it fails this address.
#[test]
fn starttls_answered_by_a_drop_or_garbage_retries_plaintext_at_may_only() {
    for (case, why) in [
        ("drop", "the connection died in answer to STARTTLS"),
        ("garbage", "the answer to STARTTLS was not SMTP"),
    ] {
        let server = Scripted::start(3, move |i, c| {
            c.ehlo(&["STARTTLS"]);
            if i == 1 {
                // The plaintext retry sends no STARTTLS, even when offered.
                c.accept_mail();
                return;
            }
            c.expect("STARTTLS");
            if case == "garbage" {
                c.send("this is not SMTP\r\n");
                c.drain();
            } else {
                c.hang_up();
            }
        });
        home_for(&server, "may")
            .run("example.org", "a@b", &["x@example.org"], MSG)
            .expect(
                "rK",
                &format!("TLS: none (TLS failed, retried in plaintext: {why})."),
            );
        let out = home_for(&server, "encrypt").run("example.org", "a@b", &["x@example.org"], MSG);
        out.expect("Z", "Connected to 127.0.0.1 but ");
        let transcripts = server.finish();
        assert!(
            !String::from_utf8_lossy(&transcripts[2]).contains("MAIL"),
            "{case}: required TLS never ends in plaintext"
        );
    }
}

/// A server that shows a certificate but signs the handshake with another key is refused at
/// every level that uses TLS: possession of the certificate's key is never optional.
#[test]
fn handshake_signed_with_another_key_is_refused() {
    let shown = rcgen::generate_simple_self_signed(vec!["shown.qremote.test".to_string()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(other.serialize_der()),
    ))
    .unwrap();
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(shown.cert.der().to_vec())], key);
    for tls12 in [false, true] {
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let cfg = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified.clone(),
                ))),
        );
        let server = Scripted::start_with(1, move |_, mut c| {
            c.ehlo(&["STARTTLS"]);
            c.expect("STARTTLS");
            c.send("220 go ahead\r\n");
            let mut t = c.starttls(cfg.clone());
            // The client refuses during the handshake: nothing more comes.
            t.drain();
            t.transcript
        });
        home_for(&server, "encrypt")
            .run("example.org", "a@b", &["x@example.org"], MSG)
            .expect(
                "Z",
                "TLS with 127.0.0.1 failed: the server's handshake signature does not match its \
                 certificate (it lacks the key). (#4.7.5)",
            );
        server.finish();
    }
}
