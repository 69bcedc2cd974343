//! SMTP AUTH against scripted relays (rustls servers with rcgen certificates), for what Postfix
//! cannot do on demand: AUTH offered without STARTTLS, CRAM-MD5 checked by hand, every kind of
//! refusal, replies split across TLS records, nonsense in the exchange. Each test checks the
//! bytes the relay received, and that no report carries the password or its base64.
//! Real Postfix with Cyrus SASL is in `auth_postfix.rs`.

use hmac::{Hmac, Mac};
use md5::Md5;
use qremote::base64;

use crate::peer::{Scripted, TlsClient};
use crate::tls::{server_config, upgrade};
use crate::util::{Outcome, QmailHome};

const MSG: &[u8] = b"Subject: auth\n\nbody\n";
const USER: &str = "me@example.net";
/// Everything sagredo's syntax allows in a password: `:`, spaces and `|`.
const PASSWORD: &str = "p:ss w|rd";

fn b64(s: &[u8]) -> String {
    String::from_utf8(base64::encode(s)).unwrap()
}

fn unb64(s: &str) -> Vec<u8> {
    base64::decode(s.trim().as_bytes()).unwrap_or_else(|| panic!("not base64: {s:?}"))
}

/// Fails if `bytes` hold the password, or any base64 form a client could have sent.
pub fn assert_no_secret(what: &str, bytes: &[u8], user: &str, password: &str) {
    let text = String::from_utf8_lossy(bytes);
    let plain = format!("\0{user}\0{password}");
    let forms = [
        password.to_string(),
        b64(password.as_bytes()),
        b64(plain.as_bytes()),
        b64(format!("{user}\0{user}\0{password}").as_bytes()),
    ];
    for form in forms {
        assert!(!text.contains(&form), "{what} holds a secret: {text:?}");
    }
}

fn ehlo_reply(keywords: &[&str]) -> String {
    let mut lines = vec!["scripted"];
    lines.extend(keywords);
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// A relay that does STARTTLS, answers the second EHLO with `keywords`, then runs `script`
/// once per connection.
fn relay<F>(connections: usize, keywords: &'static [&'static str], script: F) -> Scripted
where
    F: Fn(usize, &mut TlsClient) + Send + 'static,
{
    let cfg = server_config(false);
    Scripted::start_with(connections, move |i, c| {
        let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
        t.send(&ehlo_reply(keywords));
        script(i, &mut t);
        t.drain();
        t.transcript
    })
}

/// A qmail home routing example.org to `server` with the test credentials; `level` is the
/// tlspolicy entry for the relay (`[127.0.0.1]`), if any.
fn home_via(server: &Scripted, level: Option<&str>) -> QmailHome {
    let home = QmailHome::new();
    home.route(
        "example.org",
        &format!("{}|{USER}|{PASSWORD}", server.relay()),
    );
    if let Some(level) = level {
        home.control("tlspolicy", &format!("[127.0.0.1]:{level}\n"));
    }
    home
}

/// Sets the mode of `control/<file>`.
pub fn chmod(home: &QmailHome, file: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = home.path().join("control").join(file);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run(home: &QmailHome) -> Outcome {
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    assert_no_secret("the reports", &out.stdout, USER, PASSWORD);
    out
}

/// Accepts MAIL (checked to carry no AUTH= parameter), RCPT, DATA and the body.
fn accept(t: &mut TlsClient) {
    let mail = t.expect("MAIL FROM:");
    assert_eq!(mail, "MAIL FROM:<a@b>", "no AUTH= parameter");
    let body = t.accept_rcpt_data();
    assert_eq!(body, b"Subject: auth\r\n\r\nbody\r\n.\r\n");
}

#[test]
fn plain_with_initial_response() {
    let server = relay(1, &["AUTH LOGIN PLAIN"], |_, t| {
        let line = t.expect("AUTH PLAIN ");
        assert_eq!(
            unb64(&line["AUTH PLAIN ".len()..]),
            format!("\0{USER}\0{PASSWORD}").as_bytes()
        );
        t.send("235 2.7.0 Authentication successful\r\n");
        accept(t);
    });
    let home = home_via(&server, Some("encrypt"));
    chmod(&home, "smtproutes", 0o644);
    let out = run(&home);
    out.expect("rK", "\nTLS: TLSv1.3 with ");
    out.expect(
        "rK",
        "\nAUTH: authenticated as me@example.net with PLAIN. Warning: control/smtproutes holds passwords and every user can read it.\n",
    );
    server.finish();
}

#[test]
fn login_with_replies_split_across_records() {
    let server = relay(1, &["AUTH LOGIN"], |_, t| {
        t.expect("AUTH LOGIN");
        // Each send is its own TLS record: the client must put the reply together.
        t.send("33");
        t.send("4 VXNlcm5h");
        t.send("bWU6\r\n");
        assert_eq!(unb64(&t.line()), USER.as_bytes());
        t.send("334-");
        t.send("UGFzc3dvcmQ6\r\n");
        t.send("334 UGFzc3dvcmQ6\r\n");
        assert_eq!(unb64(&t.line()), PASSWORD.as_bytes());
        t.send("23");
        t.send("5 ok\r\n");
        accept(t);
    });
    let home = home_via(&server, Some("encrypt"));
    chmod(&home, "smtproutes", 0o400);
    let out = run(&home);
    out.expect("rK", "AUTH: authenticated as me@example.net with LOGIN.\n");
    server.finish();
}

#[test]
fn cram_md5_is_preferred_and_its_digest_checked() {
    const CHALLENGE: &str = "<1896.697170952@postoffice.example.net>";
    let server = relay(1, &["AUTH LOGIN PLAIN CRAM-MD5"], |_, t| {
        t.expect("AUTH CRAM-MD5");
        t.send(&format!("334 {}\r\n", b64(CHALLENGE.as_bytes())));
        let answer = String::from_utf8(unb64(&t.line())).unwrap();
        let mut mac = <Hmac<Md5> as Mac>::new_from_slice(PASSWORD.as_bytes()).unwrap();
        mac.update(CHALLENGE.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(answer, format!("{USER} {hex}"));
        t.send("235 ok\r\n");
        accept(t);
    });
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect("rK", "AUTH: authenticated as me@example.net with CRAM-MD5.");
    let transcript = server.finish().remove(0);
    assert_no_secret("the relay's transcript", &transcript, USER, PASSWORD);
}

/// The relay offers AUTH but no STARTTLS: whatever the level, not one credential byte is
/// sent, and the mail waits.
#[test]
fn auth_without_starttls_never_gets_credentials() {
    let server = Scripted::start(2, |_, c| {
        c.ehlo(&["AUTH PLAIN LOGIN", "PIPELINING"]);
        c.drain();
    });
    for level in ["none", "may"] {
        let out = run(&home_via(&server, Some(level)));
        out.expect("Z", "TLS is required, but 127.0.0.1 did not offer STARTTLS");
        out.expect(
            "Z",
            &format!("level encrypt from SMTP AUTH credentials, instead of {level} from control/tlspolicy (host)"),
        );
    }
    for t in server.finish() {
        let text = String::from_utf8_lossy(&t);
        assert!(!text.contains("AUTH") && !text.contains("MAIL"), "{text}");
        assert_no_secret("the relay's transcript", &t, USER, PASSWORD);
    }
}

/// Without an explicit lower level, credentials need a verified certificate, and an [ip]
/// route has no name to verify: refused without even connecting.
#[test]
fn credentials_need_verify_unless_tlspolicy_says_otherwise() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let home = QmailHome::new();
    home.route(
        "example.org",
        &format!(
            "[127.0.0.1]:{}|{USER}|{PASSWORD}",
            listener.local_addr().unwrap().port()
        ),
    );
    let out = run(&home);
    out.expect(
        "Z",
        "TLS with 127.0.0.1 failed: an [ip] route has no host name to verify (level verify from SMTP AUTH credentials, instead of may from default). (#4.7.5)",
    );
    let err = listener.accept().map(|_| ()).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing connected"
    );
}

#[test]
fn every_refusal_is_z_with_the_servers_text_and_nothing_more_is_read() {
    const CODES: [&str; 5] = [
        "454 4.7.0 Temporary authentication failure",
        "535 5.7.8 Authentication credentials invalid",
        "534 5.7.9 Authentication mechanism is too weak",
        "538 5.7.11 Encryption required for requested authentication mechanism",
        "432 4.7.12 A password transition is needed",
    ];
    let server = relay(CODES.len(), &["AUTH PLAIN"], |i, t| {
        t.expect("AUTH PLAIN ");
        t.send(&format!("{}\r\n", CODES[i]));
        // The next thing the client says is QUIT: no retry, no MAIL, no waiting.
        assert_eq!(t.line(), "QUIT");
    });
    for code in CODES {
        let out = run(&home_via(&server, Some("encrypt")));
        out.expect(
            "Z",
            &format!(
                "Connected to 127.0.0.1 but authentication as me@example.net (AUTH PLAIN) was rejected.\nRemote host said: {code}\nTLS: "
            ),
        );
    }
    server.finish();
}

/// Sagredo's bug: after a 535 to the password it reads a second reply and hangs for
/// timeoutremote. Here the 535 is the verdict at once (a hang would end as "connection died").
#[test]
fn login_535_after_the_password_does_not_hang() {
    let server = relay(1, &["AUTH LOGIN"], |_, t| {
        login_prompts(t);
        t.send("535 5.7.8 Error: authentication failed\r\n");
        assert_eq!(t.line(), "QUIT");
    });
    let home = home_via(&server, Some("encrypt"));
    home.control("timeoutremote", "30\n");
    let started = std::time::Instant::now();
    let out = run(&home);
    out.expect(
        "Z",
        "(AUTH LOGIN) was rejected.\nRemote host said: 535 5.7.8",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    server.finish();
}

#[test]
fn no_auth_or_no_known_mechanism_is_z_and_nothing_is_sent_unauthenticated() {
    let server = relay(2, &["PIPELINING"], |_, t| assert_eq!(t.line(), "QUIT"));
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect(
        "Z",
        "Connected to 127.0.0.1 but cannot log in as me@example.net: it does not offer SMTP AUTH. Not sending without the SMTP AUTH the control files ask for. (#4.7.0)",
    );
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect(
        "Z",
        "cannot log in as me@example.net: it does not offer SMTP AUTH",
    );
    server.finish();

    let server = relay(1, &["AUTH XOAUTH2 GSSAPI"], |_, t| {
        assert_eq!(t.line(), "QUIT")
    });
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect(
        "Z",
        "it offers none of CRAM-MD5, PLAIN and LOGIN (only: XOAUTH2 GSSAPI)",
    );
    server.finish();

    let server = relay(1, &["AUTH"], |_, t| assert_eq!(t.line(), "QUIT"));
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect(
        "Z",
        "cannot log in as me@example.net: its AUTH keyword lists no mechanism. Not sending",
    );
    server.finish();
}

#[test]
fn nonsense_in_the_exchange_is_cancelled() {
    let server = relay(2, &["AUTH CRAM-MD5 PLAIN"], |i, t| {
        if i == 0 {
            t.expect("AUTH CRAM-MD5");
            t.send("334 this is not base64!\r\n");
        } else {
            t.expect("AUTH CRAM-MD5");
            t.send(&format!("334 {}\r\n", b64(b"<1.2@x>")));
            t.line();
            t.send("334 more?\r\n");
        }
        assert_eq!(t.line(), "*");
        assert_eq!(t.line(), "QUIT");
    });
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect(
        "Z",
        "but AUTH CRAM-MD5 failed: the CRAM-MD5 challenge is not base64. (#4.7.0)",
    );
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect("Z", "the server asked for more than the mechanism sends");
    server.finish();
}

/// Every key form of authsenders, the "no authenticated sender" entry, and smtproutes as the
/// fallback: the user name each connection logged in with shows which line was used.
#[test]
fn authsenders_key_forms_and_precedence_over_smtproutes() {
    let cases: [(&str, &str); 7] = [
        ("full@example.com", "full"),
        ("x@example.com", "at"),
        ("first.last@example.com", "localdot"),
        ("x@sub.example.com", "dot"),
        ("x@other.org", "default"),
        ("", "default"),
        ("nobody@example.com", "routes"),
    ];
    let server = relay(cases.len(), &["AUTH PLAIN"], |_, t| {
        t.expect("AUTH PLAIN ");
        t.send("235 ok\r\n");
        t.expect("MAIL");
        t.accept_rcpt_data();
    });
    let r = server.relay();
    let home = QmailHome::new();
    home.control("tlspolicy", "[127.0.0.1]:encrypt\n");
    home.control(
        "authsenders",
        &format!(
            "# comment\n\
             full@example.com:{r}|full|pw\n\
             @example.com:{r}|at|pw\n\
             .last@example.com:{r}|localdot|pw\n\
             .example.com:{r}|dot|pw\n\
             nobody@example.com:\n\
             :{r}|default|pw\n"
        ),
    );
    home.control("smtproutes", &format!(":{r}|routes|pw\n"));
    for (sender, user) in cases {
        let out = home.run("example.org", sender, &["x@example.org"], MSG);
        out.expect("rK", &format!("AUTH: authenticated as {user} with PLAIN."));
    }
    server.finish();
}

/// An authsenders entry without credentials routes through the relay without AUTH, even when
/// the relay offers it (sagredo's meaning).
#[test]
fn authsenders_entry_without_credentials_routes_without_auth() {
    let server = relay(1, &["AUTH PLAIN"], |_, t| accept(t));
    let home = QmailHome::new();
    home.control("tlspolicy", "[127.0.0.1]:encrypt\n");
    home.control("authsenders", &format!("a@b:{}\n", server.relay()));
    let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
    out.expect("rK", "TLS: TLSv1.3");
    assert!(!out.last().text.contains("AUTH:"), "{}", out.dump());
    server.finish();
}

#[test]
fn unreadable_secret_files_defer_with_their_name() {
    for file in ["smtproutes", "authsenders"] {
        let home = QmailHome::new();
        // A directory cannot be read as a file, even by root (tests run as root in CI).
        std::fs::create_dir(home.path().join("control").join(file)).unwrap();
        let out = home.run("example.org", "a@b", &["x@example.org"], MSG);
        out.expect(
            "Z",
            &format!("Unable to read control files: control/{file} cannot be read"),
        );
    }
}

#[test]
fn syntax_errors_in_authsenders_name_the_line_not_the_password() {
    let home = QmailHome::new();
    home.control("authsenders", "# c\n@example.com|user|hunter2\n");
    let out = home.run("example.org", "x@example.com", &["x@example.org"], MSG);
    out.expect(
        "Z",
        "Syntax error in control/authsenders line 2: no colon (write sender:relay:port|user|password).",
    );
    assert_no_secret("the report", &out.stdout, "user", "hunter2");
    home.control("authsenders", "@example.com:relay:x|user|hunter2\n");
    let out = home.run("example.org", "x@example.com", &["x@example.org"], MSG);
    out.expect("Z", "control/authsenders line 1: bad port");
    assert_no_secret("the report", &out.stdout, "user", "hunter2");
}

/// An AUTH refusal moves on to the relay's next address, as any failure before MAIL does: a
/// relay name with two addresses, each refusing, gets one login attempt each.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn auth_refusal_moves_on_to_the_next_address() {
    let start = |addr: &str, text: &'static str| {
        let cfg = server_config(false);
        Scripted::start_with_on(addr, 1, move |_, c| {
            let mut t = upgrade(c, &["STARTTLS"], cfg.clone());
            t.send(&ehlo_reply(&["AUTH PLAIN"]));
            t.expect("AUTH PLAIN ");
            t.send(&format!("535 5.7.8 {text}\r\n"));
            assert_eq!(t.line(), "QUIT");
            t.drain();
            t.transcript
        })
    };
    let first = start("127.0.9.4:25", "refused by four");
    let second = start("127.0.9.5:25", "refused by five");
    let home = QmailHome::new();
    home.nameserver(&crate::util::peer_env("QREMOTE_DNS"));
    home.route("example.org", &format!("two.auth.test|{USER}|{PASSWORD}"));
    home.control("tlspolicy", "two.auth.test:encrypt\n");
    let out = run(&home);
    out.expect(
        "Z",
        "(AUTH PLAIN) was rejected.\nRemote host said: 535 5.7.8 refused by ",
    );
    first.finish();
    second.finish();
}

/// On an SMTPS port (465) TLS comes first, so AUTH follows the first EHLO.
#[test]
#[ignore = "needs root (binds port 465): scripts/test"]
fn auth_over_smtps_port_465() {
    let cfg = server_config(false);
    let server = Scripted::start_with_on("127.0.9.6:465", 1, move |_, c| {
        let mut t = c.starttls(cfg.clone());
        t.send("220 smtps ready\r\n");
        t.expect("EHLO");
        t.send(&ehlo_reply(&["AUTH PLAIN"]));
        t.expect("AUTH PLAIN ");
        t.send("235 ok\r\n");
        accept(&mut t);
        t.transcript
    });
    let home = QmailHome::new();
    home.route("example.org", &format!("[127.0.9.6]:465|{USER}|{PASSWORD}"));
    home.control("tlspolicy", "[127.0.9.6]:encrypt\n");
    let out = run(&home);
    out.expect("rK", "AUTH: authenticated as me@example.net with PLAIN.");
    let transcript = server.finish().remove(0);
    assert!(!String::from_utf8_lossy(&transcript).contains("STARTTLS"));
}

/// Answers `AUTH LOGIN` with the two usual prompts and returns the password line.
fn login_prompts(t: &mut TlsClient) -> String {
    t.expect("AUTH LOGIN");
    t.send("334 VXNlcm5hbWU6\r\n");
    t.line();
    t.send("334 UGFzc3dvcmQ6\r\n");
    t.line()
}

/// One delivery through a relay that refuses `AUTH <mechanism>` with `refusal(response)`, where
/// `response` is the last line the client sent.
fn refused_with(mechanism: &'static str, refusal: fn(&str) -> String) -> Outcome {
    let keywords: &'static [&'static str] = if mechanism == "PLAIN" {
        &["AUTH PLAIN"]
    } else {
        &["AUTH LOGIN"]
    };
    let server = relay(1, keywords, move |_, t| {
        let response = if mechanism == "PLAIN" {
            t.expect("AUTH PLAIN ")["AUTH PLAIN ".len()..].to_string()
        } else {
            login_prompts(t)
        };
        t.send(&refusal(&response));
        assert_eq!(t.line(), "QUIT");
    });
    let out = run(&home_via(&server, Some("encrypt")));
    server.finish();
    out
}

/// A relay that echoes what it got into its refusal (seen in the wild: "535 bad auth: <blob>")
/// must not get the password or its base64 into the report.
#[test]
fn an_echo_of_the_credentials_in_a_refusal_is_hidden() {
    let out = refused_with("PLAIN", |blob| {
        format!("535-5.7.8 rejected {blob}\r\n535 5.7.8 pw {PASSWORD}\r\n")
    });
    out.expect(
        "Z",
        "(AUTH PLAIN) was rejected.\nRemote host said: 535-5.7.8 rejected (hidden)\n535 5.7.8 pw (hidden)\nTLS: ",
    );
    let out = refused_with("LOGIN", |pw| format!("535 5.7.8 bad password {pw}\r\n"));
    out.expect(
        "Z",
        "(AUTH LOGIN) was rejected.\nRemote host said: 535 5.7.8 bad password (hidden)\nTLS: ",
    );
    // An echo where a report cuts the reply: no prefix of it survives the cut either.
    let out = refused_with("PLAIN", |blob| {
        format!("535 5.7.8 {} {blob}\r\n", "x".repeat(4980))
    });
    out.expect("Z", "(AUTH PLAIN) was rejected.");
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&blob[..6]), "{text}");
}

/// Capabilities come from the EHLO after STARTTLS only: what the relay said in plaintext does
/// not count, in either direction.
#[test]
fn auth_keywords_before_starttls_do_not_count() {
    let cfg = server_config(false);
    let server = Scripted::start_with(2, move |i, c| {
        let mut t = upgrade(c, &["STARTTLS", "AUTH CRAM-MD5 PLAIN LOGIN"], cfg.clone());
        if i == 0 {
            t.send(&ehlo_reply(&["AUTH LOGIN"]));
            login_prompts(&mut t);
            t.send("235 ok\r\n");
            accept(&mut t);
        } else {
            t.send(&ehlo_reply(&["PIPELINING"]));
            assert_eq!(t.line(), "QUIT");
        }
        t.drain();
        t.transcript
    });
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect("rK", "AUTH: authenticated as me@example.net with LOGIN.");
    let out = run(&home_via(&server, Some("encrypt")));
    out.expect("Z", "it does not offer SMTP AUTH");
    server.finish();
}
