//! Invocation, control files and local failures: no server involved.

use crate::util::QmailHome;

const MSG: &[u8] = b"Subject: t\n\nhello\n";

#[test]
fn too_few_arguments_is_usage_bounce() {
    let home = QmailHome::new();
    let out = home.command(&[b"example.org", b"a@b"]).output().unwrap();
    assert_eq!(
        out.stdout,
        b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
    );
    assert!(out.stderr.is_empty());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn non_utf8_arguments_do_not_panic() {
    let home = QmailHome::new();
    home.route("", "[127.0.0.1]:1");
    let out = home
        .command(&[b"\xff\xfe.example", b"\xc3@x", b"\xff@\xfe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert!(
        out.stdout.starts_with(b"Z"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn missing_me_and_helohost_defers() {
    let home = QmailHome::new();
    std::fs::remove_file(home.path().join("control/me")).unwrap();
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "Unable to read control files. (#4.3.0)");
}

#[test]
fn unreadable_control_file_defers() {
    let home = QmailHome::new();
    std::fs::create_dir(home.path().join("control/helohost")).unwrap();
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "Unable to read control files. (#4.3.0)");
}

#[test]
fn syntax_error_names_file_and_line() {
    let home = QmailHome::new();
    home.control(
        "smtproutes",
        "# routes\nexample.org:relay.example:notaport\n",
    );
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "control/smtproutes line 2: bad port");
    // A port followed by a comment is read as stock reads it (issue 7): the route is used.
    let home = QmailHome::new();
    home.control("smtproutes", "example.org:[127.0.0.1]:1 # closed port\n");
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "wasn't able to establish an SMTP connection");
    // A timeout without leading digits means the default, as stock's control_readint.
    let home = QmailHome::new();
    home.control("smtproutes", "example.org:[127.0.0.1]:1\n");
    home.control("timeoutremote", "soon\n");
    home.control("timeoutconnect", "5 seconds\n");
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "wasn't able to establish an SMTP connection");
}

#[test]
fn missing_home_defers() {
    let mut home = QmailHome::new();
    home.env("QMAILHOME", "/nonexistent/qmail");
    // env() adds after QMAILHOME in command(), so it overrides it.
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "Unable to switch to home directory. (#4.3.0)");
}

#[test]
fn partial_final_line_bounces_before_connecting() {
    let home = QmailHome::new();
    home.route("example.org", "[127.0.0.1]:1");
    home.run(
        "example.org",
        "a@b",
        &["c@example.org"],
        b"Subject: t\n\nno newline",
    )
    .expect(
        "D",
        "SMTP cannot transfer messages with partial final lines. (#5.6.2)",
    );
}

#[test]
fn no_connection_defers() {
    let home = QmailHome::new();
    home.route("example.org", "[127.0.0.1]:1");
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect(
            "Z",
            "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)",
        );
}

#[test]
fn crlf_in_address_bounces() {
    let home = QmailHome::new();
    home.route("example.org", "[127.0.0.1]:1");
    home.run("example.org", "a@b", &["c@example.org\r\nRSET"], MSG)
        .expect("D", "(#5.1.3)");
}

#[test]
fn bad_outgoingip_is_a_syntax_error() {
    let home = QmailHome::new();
    home.control("outgoingip", "not-an-ip\n");
    home.run("example.org", "a@b", &["c@example.org"], MSG)
        .expect("Z", "control/outgoingip line 1");
}
