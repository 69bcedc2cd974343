//! The TLS policy table (`tests/data/tls_policy.table`) against the real Postfix listeners
//! started by scripts/peers-up: each row's letter and report text, the body byte for byte in
//! the maildir when delivery is expected, and Postfix's own Received header saying whether
//! TLS was really used.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rustls::ServerConfig;

use crate::peer::{Client, Scripted};
use crate::util::{Outcome, QmailHome, peer_env};

const TABLE: &str = include_str!("data/tls_policy.table");

struct Row {
    line: usize,
    host: String,
    setting: String,
    letter: String,
    text: String,
}

impl Row {
    /// The verdict, if it has this row's letter and text.
    fn check<'o>(&self, out: &'o Outcome) -> Result<&'o crate::util::Rep, String> {
        out.assert_clean();
        let verdict = out.last();
        if let Some(shape) = crate::util::debug_shape(&verdict.text) {
            return Err(format!(
                "line {}: Rust Debug text {shape:?} in the report\n{}",
                self.line,
                out.dump()
            ));
        }
        if verdict.letter.to_string() != self.letter || !verdict.text.contains(&self.text) {
            return Err(format!(
                "line {}: {} {}: expected {} {:?}\n{}",
                self.line,
                self.host,
                self.setting,
                self.letter,
                self.text,
                out.dump()
            ));
        }
        Ok(verdict)
    }
}

fn rows() -> Vec<Row> {
    TABLE
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let mut f = l.split_whitespace();
            let (host, setting, letter) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let text = f.collect::<Vec<_>>().join(" ");
            Row {
                line: i + 1,
                host: host.into(),
                setting: setting.into(),
                letter: letter.into(),
                text,
            }
        })
        .collect()
}

/// Waits (bounded) for Postfix to write the message into the maildir.
fn delivered(domain: &str, local: &str) -> Option<Vec<u8>> {
    let dir = PathBuf::from(peer_env("QREMOTE_MAILDIRS"))
        .join(domain)
        .join(local)
        .join("new");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(entry) = std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        {
            return std::fs::read(entry.path()).ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn run_row(row: &Row) -> Result<(), String> {
    if let Some(case) = row.host.strip_prefix("scripted-") {
        return run_scripted_row(row, case);
    }
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    let ca = std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap();
    home.control("tlsca", &ca);
    let domain = "tlsmatrix.qremote.test";
    home.route(domain, &row.host);
    match row.setting.as_str() {
        "tlshosts" => {
            home.control(&format!("tlshosts/{}.pem", row.host), &ca);
        }
        "tlshosts-bad" => {
            let other = std::fs::read_to_string(peer_env("QREMOTE_UNKNOWN_CA")).unwrap();
            home.control(&format!("tlshosts/{}.pem", row.host), &other);
        }
        "pinned" => {
            home.control(&format!("tlshosts/{}.pem", row.host), &own_cert(&row.host));
        }
        "pinned-tlsca" => {
            home.control("tlsca", &own_cert(&row.host));
            home.control("tlspolicy", ":verify\n");
        }
        "notlshosts" => {
            home.control(&format!("notlshosts/{}", row.host), "");
        }
        "exhaustive" => {
            home.control("tlshosts/exhaustivelist", "");
        }
        level => {
            home.control("tlspolicy", &format!(":{level}\n"));
        }
    }
    let local = format!("tls-{}-{}", row.line, std::process::id());
    let body = format!(
        "Subject: row {}\n\n.dotted\nrow {} {}\n",
        row.line, row.host, row.setting
    );
    let out = home.run(
        domain,
        "sender@qremote.test",
        &[&format!("{local}@{domain}")],
        body.as_bytes(),
    );
    let verdict = row.check(&out)?;
    if row.letter == "K" {
        let stored =
            delivered(domain, &local).ok_or(format!("line {}: not delivered", row.line))?;
        if !stored.ends_with(body.as_bytes()) {
            return Err(format!(
                "line {}: body differs: {:?}",
                row.line,
                String::from_utf8_lossy(&stored)
            ));
        }
        let head = String::from_utf8_lossy(&stored);
        let used_tls = head.contains("(using TLS");
        if used_tls == verdict.text.contains("TLS: none") {
            return Err(format!(
                "line {}: report and Received header disagree about TLS:\n{head}",
                row.line
            ));
        }
    }
    Ok(())
}

/// The certificate a listener of scripts/lib/gen-certs.sh presents, by its host name.
fn own_cert(host: &str) -> String {
    let name = match host.split('.').next().unwrap() {
        "mx" => "wild",
        first => first,
    };
    let path = PathBuf::from(peer_env("QREMOTE_CERTS")).join(format!("{name}.pem"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn tls_policy_table() {
    let failures: Vec<String> = rows().iter().filter_map(|r| run_row(r).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows().len(),
        failures.join("\n\n")
    );
}

/// The server side of one scripted case (see the table's comments), for one connection.
fn scripted_peer(case: &str, tls12: Arc<ServerConfig>, c: Client) -> Vec<u8> {
    let mut c = c;
    c.ehlo(if case == "notoffered" {
        &[]
    } else {
        &["STARTTLS"]
    });
    let line = c.line();
    if line.starts_with("MAIL") {
        c.accept_rcpt_data();
        return c.transcript;
    }
    if !line.starts_with("STARTTLS") {
        c.drain();
        return c.transcript;
    }
    match case {
        "454" => {
            c.send("454 4.7.0 TLS not available\r\n");
            if c.line().starts_with("MAIL") {
                c.accept_rcpt_data();
            } else {
                c.drain();
            }
        }
        "abort" => {
            c.send("220 go ahead\r\n");
            let mut hello = [0u8; 5];
            let _ = std::io::Read::read(c.reader.get_mut(), &mut hello);
            c.send("this is not TLS\r\n");
            c.hang_up();
        }
        "inject" => c.say_and_wait("220 go ahead\r\n250 injected\r\n"),
        _ => {
            c.send("220 go ahead\r\n");
            let mut t = c.starttls(tls12);
            t.expect("EHLO");
            t.send("250 scripted\r\n");
            t.accept_mail();
            return t.transcript;
        }
    }
    c.transcript
}

fn run_scripted_row(row: &Row, case: &str) -> Result<(), String> {
    // At `may` a failed handshake is retried in plaintext on a second connection.
    let connections = if case == "abort" && row.setting == "may" {
        2
    } else {
        1
    };
    let cfg = crate::peer::server_config("scripted", &[&rustls::version::TLS12]);
    let owned = case.to_string();
    let server = Scripted::start_with_on("127.0.0.64:25", connections, move |i, c| {
        // The plaintext retry meets a server that no longer offers STARTTLS.
        let case = if i == 1 { "notoffered" } else { owned.as_str() };
        scripted_peer(case, cfg.clone(), c)
    });
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home.control(
        "tlsca",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    home.control("tlspolicy", &format!(":{}\n", row.setting));
    home.route("scripted.qremote.test", "scripted.qremote.test");
    let body = format!("Subject: row {}\n\n.dotted\n", row.line);
    let out = home.run(
        "scripted.qremote.test",
        "sender@qremote.test",
        &["rcpt@scripted.qremote.test"],
        body.as_bytes(),
    );
    let transcripts = server.finish();
    row.check(&out)?;
    let all = transcripts
        .iter()
        .map(|t| String::from_utf8_lossy(t))
        .collect::<Vec<_>>()
        .join("");
    let body_sent = all.contains("\r\n..dotted\r\n.\r\n");
    if body_sent != (row.letter == "K") {
        return Err(format!(
            "line {}: body sent: {body_sent}, letter {}:\n{all}",
            row.line, row.letter
        ));
    }
    Ok(())
}

/// Per-destination entries in control/tlspolicy: keyed by the recipient domain or by the MX
/// (relay) host name, `.suffix` matches, and explicit entries combine to the strongest level.
#[test]
#[ignore = "needs real peers: scripts/test"]
fn per_destination_policy_entries() {
    let cases = [
        // (tlspolicy, expected letter, expected text)
        (
            "notls.qremote.test:encrypt\n",
            "Z",
            "(level encrypt from control/tlspolicy (host)). (#4.7.4)",
        ),
        (
            "pd.qremote.test:verify\n",
            "Z",
            "(level verify from control/tlspolicy (domain)). (#4.7.4)",
        ),
        (
            ".qremote.test:encrypt\n",
            "Z",
            "(level encrypt from control/tlspolicy (domain)). (#4.7.4)",
        ),
        (
            "pd.qremote.test:none\nnotls.qremote.test:verify\n",
            "Z",
            "(level verify from control/tlspolicy (host)). (#4.7.4)",
        ),
        (
            ":verify\npd.qremote.test:may\n",
            "rK",
            "TLS: none (STARTTLS not offered).",
        ),
        (
            ":verify\nother.example:none\n",
            "Z",
            "(level verify from control/tlspolicy (default)). (#4.7.4)",
        ),
    ];
    for (policy, letter, text) in cases {
        let home = QmailHome::new();
        home.nameserver(&peer_env("QREMOTE_DNS"));
        home.route("pd.qremote.test", "notls.qremote.test");
        home.control("tlspolicy", policy);
        let out = home.run(
            "pd.qremote.test",
            "s@qremote.test",
            &[&format!("pd-{}@pd.qremote.test", std::process::id())],
            b"x\n",
        );
        out.expect(letter, text);
    }
}
