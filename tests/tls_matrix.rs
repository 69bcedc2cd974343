//! The TLS policy table (`tests/data/tls_policy.table`) against the real Postfix listeners
//! started by scripts/peers-up: each row's letter and report text, the body byte for byte in
//! the maildir when delivery is expected, and Postfix's own Received header saying whether
//! TLS was really used.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::{QmailHome, peer_env};

const TABLE: &str = include_str!("data/tls_policy.table");

struct Row {
    line: usize,
    host: String,
    setting: String,
    letter: String,
    text: String,
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
    out.assert_clean();
    let verdict = out.last();
    if verdict.letter.to_string() != row.letter || !verdict.text.contains(&row.text) {
        return Err(format!(
            "line {}: {} {}: expected {} {:?}\n{}",
            row.line,
            row.host,
            row.setting,
            row.letter,
            row.text,
            out.dump()
        ));
    }
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
