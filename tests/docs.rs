//! The documentation against the code. Every control file in `qremote::control::CONTROLS` has an
//! entry, with its default, in docs/qmail-remote.8 (CONTROL FILES) and in docs/CONFIGURATION.md,
//! and every report the program can print appears in the man page, with its enhanced status
//! code. Variable parts of a report (addresses, names, reasons) are written in the man page as
//! placeholders (`\fIip\fR`, `\fIhost\fR`, ...); the examples below use values that are then
//! replaced by those placeholders.
//!
//! Adding a `Failure` variant or a `Stage` makes this file fail to compile (the matches in
//! `variant` and `stage_index` are exhaustive): give it an example here and a line in REPORTS.

use std::net::IpAddr;
use std::path::Path;

use qremote::control::CONTROLS;
use qremote::failure::{Failure, Stage};
use qremote::reply::{MAX_LINES, Reply, ReplyBuilder};
use qremote::report::Letter;

const MAN: &str = "docs/qmail-remote.8";
const CONFIG: &str = "docs/CONFIGURATION.md";

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Collapses every run of white space into one space.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes roff escapes from one line of text: font changes, `\&`, `\e`, `\-` and the few
/// named characters a man page uses.
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => match chars.next() {
                Some('(') => {
                    chars.next();
                    chars.next();
                }
                Some('[') => for _ in chars.by_ref().take_while(|&c| c != ']') {},
                _ => {}
            },
            Some('(') => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(match name.as_str() {
                    "aq" | "cq" => "'",
                    "dq" => "\"",
                    "bu" => "*",
                    "em" | "en" => "-",
                    _ => "",
                });
            }
            Some('e') | Some('\\') => out.push('\\'),
            Some('-') => out.push('-'),
            Some(' ') | Some('~') => out.push(' '),
            Some('&') | Some('%') | Some('c') | None => {}
            Some(other) => out.push(other),
        }
    }
    out
}

/// The arguments of a macro line, with roff's double-quote rules.
fn macro_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                        continue;
                    }
                    break;
                }
                arg.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

/// One roff source line as the text it prints (macro names dropped, escapes removed).
fn line_text(line: &str) -> String {
    if line.starts_with(".\\\"") || line.starts_with("'\\\"") {
        return String::new();
    }
    let Some(rest) = line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) else {
        return unescape(line);
    };
    let (name, args) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let args = macro_args(args);
    // The font-alternating macros print their arguments without spaces between them.
    let joiner = match name {
        "BR" | "RB" | "IR" | "RI" | "BI" | "IB" => "",
        _ => " ",
    };
    unescape(&args.join(joiner))
}

/// The whole man page as one line of text.
fn man_text() -> String {
    squeeze(
        &read(MAN)
            .lines()
            .map(line_text)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The CONTROL FILES entry of `name` in the man page: the text from its `.TP` tag to the next
/// `.TP` or section, or `None` if there is no such entry.
fn man_entry(name: &str) -> Option<String> {
    let src = read(MAN);
    let lines: Vec<&str> = src.lines().collect();
    let section = lines.iter().position(|l| *l == ".SH \"CONTROL FILES\"")?;
    let tag = format!(".I {name}");
    let start = (section..lines.len().saturating_sub(1))
        .find(|&i| lines[i].starts_with(".TP") && lines[i + 1] == tag)?;
    let end = (start + 2..lines.len())
        .find(|&i| lines[i].starts_with(".TP") || lines[i].starts_with(".SH"))
        .unwrap_or(lines.len());
    Some(squeeze(
        &lines[start + 1..end]
            .iter()
            .map(|l| line_text(l))
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

/// The section of CONFIGURATION.md whose heading names `name` in backquotes, up to the next
/// heading of the same or a higher level.
fn config_entry(name: &str) -> Option<String> {
    let src = read(CONFIG);
    let lines: Vec<&str> = src.lines().collect();
    let quoted = [format!("`{name}`"), format!("`control/{name}`")];
    let start = lines
        .iter()
        .position(|l| l.starts_with('#') && quoted.iter().any(|q| l.contains(q.as_str())))?;
    let level = lines[start].chars().take_while(|&c| c == '#').count();
    let end = (start + 1..lines.len())
        .find(|&i| {
            let hashes = lines[i].chars().take_while(|&c| c == '#').count();
            hashes > 0 && hashes <= level && lines[i].chars().nth(hashes) == Some(' ')
        })
        .unwrap_or(lines.len());
    Some(lines[start..end].join("\n"))
}

#[test]
fn every_control_file_is_documented_with_its_default() {
    let mut missing = Vec::new();
    for &(name, default, _) in CONTROLS {
        match man_entry(name) {
            None => missing.push(format!(
                "{MAN}: no `.TP` / `.I {name}` entry in CONTROL FILES"
            )),
            Some(entry) if !(entry.contains("Default:") && entry.contains(default)) => missing
                .push(format!(
                    "{MAN}: the entry for {name} does not say `Default:` and {default:?}: {entry}"
                )),
            Some(_) => {}
        }
        match config_entry(name) {
            None => missing.push(format!("{CONFIG}: no heading naming `{name}`")),
            Some(entry) if !(entry.contains("Default") && entry.contains(default)) => missing.push(
                format!("{CONFIG}: the section for {name} does not give the default {default:?}"),
            ),
            Some(_) => {}
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

const IP: [u8; 4] = [192, 0, 2, 7];

/// Each variant's position in `EXAMPLES_COVER`; exhaustive on purpose.
fn variant(f: &Failure) -> usize {
    match f {
        Failure::Usage => 0,
        Failure::HomeDir => 1,
        Failure::ControlUnreadable => 2,
        Failure::ControlMissing => 3,
        Failure::ControlSyntax { .. } => 4,
        Failure::ReadMessage => 5,
        Failure::PartialFinalLine => 6,
        Failure::BadAddress => 7,
        Failure::DnsSoft => 8,
        Failure::DnsHard { .. } => 9,
        Failure::NoMx => 10,
        Failure::NullMx { .. } => 11,
        Failure::AmbiguousMx => 12,
        Failure::NoConnection => 13,
        Failure::Died { .. } => 14,
        Failure::Rejected { .. } => 15,
        Failure::GaveUp { .. } => 16,
        Failure::BadReply { .. } => 17,
        Failure::TooBig { .. } => 18,
        Failure::NoSmtpUtf8 { .. } => 19,
        Failure::TlsNotOffered { .. } => 20,
        Failure::TlsFailed { .. } => 21,
        Failure::TlsInjection { .. } => 22,
        Failure::Internal(_) => 23,
        Failure::StsNoMx { .. } => 24,
        Failure::TlsaLookup { .. } => 25,
        Failure::SecretsUnreadable { .. } => 26,
        Failure::AuthUnavailable { .. } => 27,
        Failure::AuthRejected { .. } => 28,
        Failure::AuthAborted { .. } => 29,
    }
}
const VARIANTS: usize = 30;

fn stage_index(s: Stage) -> usize {
    match s {
        Stage::Greeting => 0,
        Stage::Helo => 1,
        Stage::StartTls => 2,
        Stage::Mail => 3,
        Stage::Data => 4,
        Stage::AfterDot => 5,
        Stage::Auth => 6,
    }
}
const STAGES: [Stage; 7] = [
    Stage::Greeting,
    Stage::Helo,
    Stage::StartTls,
    Stage::Auth,
    Stage::Mail,
    Stage::Data,
    Stage::AfterDot,
];

/// What `BadReply` says about `stage` ("to DATA", ...).
fn stage_phrase(stage: Stage) -> String {
    let f = Failure::BadReply {
        ip: IP.into(),
        stage,
        after_dot: false,
        what: "what",
    };
    let text = String::from_utf8(f.report().text().to_vec()).unwrap();
    let phrase = text
        .split_once(" but the reply ")
        .and_then(|(_, rest)| rest.split_once(" was not SMTP"))
        .map(|(p, _)| p.to_string());
    phrase.unwrap_or_else(|| panic!("unexpected BadReply text: {text}"))
}

/// One example of every failure, with the replacements that turn its report into the man
/// page's wording.
fn examples() -> Vec<(Failure, Vec<(String, &'static str)>)> {
    let ip: IpAddr = IP.into();
    let reply = Reply {
        code: 550,
        text: b"550 5.7.1 no\n".to_vec(),
    };
    let none = Vec::new;
    let mut v = vec![
        (Failure::Usage, none()),
        (Failure::HomeDir, none()),
        (Failure::ControlUnreadable, none()),
        (Failure::ControlMissing, none()),
        (
            Failure::ControlSyntax {
                file: "file",
                line: 4711,
                what: "what".into(),
            },
            vec![("line 4711".to_string(), "line n")],
        ),
        (Failure::ReadMessage, none()),
        (Failure::PartialFinalLine, none()),
        (Failure::BadAddress, none()),
        (Failure::DnsSoft, none()),
        (
            Failure::DnsHard {
                host: b"host".to_vec(),
            },
            none(),
        ),
        (Failure::NoMx, none()),
        (
            Failure::NullMx {
                host: b"host".to_vec(),
            },
            none(),
        ),
        (Failure::AmbiguousMx, none()),
        (Failure::NoConnection, none()),
        (Failure::GaveUp { ip }, none()),
        (
            Failure::TooBig {
                ip,
                size: 1001,
                limit: 1000,
            },
            vec![
                ("(1001 bytes)".to_string(), "(size bytes)"),
                ("(1000 bytes)".to_string(), "(limit bytes)"),
            ],
        ),
        (Failure::NoSmtpUtf8 { ip }, none()),
        (
            Failure::TlsNotOffered {
                ip,
                why: "why".into(),
                dane: false,
            },
            none(),
        ),
        (
            Failure::TlsFailed {
                ip,
                why: "why".into(),
            },
            none(),
        ),
        (Failure::TlsInjection { ip }, none()),
        (
            Failure::TlsaLookup {
                owner: "owner".into(),
                why: "why".into(),
            },
            none(),
        ),
        (Failure::Internal("what"), none()),
        (Failure::SecretsUnreadable { file: "file" }, none()),
        (
            Failure::AuthUnavailable {
                ip,
                user: "user".into(),
                why: "why".into(),
            },
            none(),
        ),
        (
            Failure::AuthRejected {
                ip,
                mechanism: "MECH",
                user: "user".into(),
                reply: reply.clone(),
            },
            vec![("MECH".to_string(), "mechanism")],
        ),
        (
            Failure::AuthAborted {
                ip,
                mechanism: "MECH",
                why: "why",
            },
            vec![("MECH".to_string(), "mechanism")],
        ),
        (
            Failure::StsNoMx {
                domain: "domain".into(),
                hosts: "hosts".into(),
            },
            none(),
        ),
    ];
    for after_dot in [false, true] {
        v.push((Failure::Died { ip, after_dot }, none()));
    }
    // session.rs reports a refused STARTTLS as TlsNotOffered and a refused AUTH as
    // AuthRejected, so there is no `Rejected { stage: StartTls | Auth }` report to document.
    for stage in STAGES
        .into_iter()
        .filter(|&s| s != Stage::StartTls && s != Stage::Auth)
    {
        for code in [450, 550] {
            let reply = Reply {
                code,
                text: format!("{code} x\n").into_bytes(),
            };
            v.push((Failure::Rejected { ip, stage, reply }, none()));
        }
    }
    for stage in STAGES {
        for after_dot in [false, true] {
            v.push((
                Failure::BadReply {
                    ip,
                    stage,
                    after_dot,
                    what: "what",
                },
                vec![(stage_phrase(stage), "stage")],
            ));
        }
    }
    v.push((
        Failure::Rejected {
            ip,
            stage: Stage::Mail,
            reply,
        },
        none(),
    ));
    v
}

/// The report as the man page writes it: placeholders in, "Remote host said:" and what follows
/// cut off, white space squeezed.
fn as_documented(f: &Failure, subst: &[(String, &str)]) -> String {
    let mut text = String::from_utf8(f.report().text().to_vec()).expect("report text is ASCII");
    for (from, to) in subst {
        assert!(
            text.contains(from.as_str()),
            "{f:?}: no {from:?} in {text:?}"
        );
        text = text.replace(from.as_str(), to);
    }
    text = text.replace(&IpAddr::from(IP).to_string(), "ip");
    if let Some((head, _)) = text.split_once("Remote host said: ") {
        text = head.to_string();
    }
    squeeze(&text)
}

#[test]
fn every_local_report_is_in_the_man_page() {
    let man = man_text();
    let examples = examples();
    let mut seen = [false; VARIANTS];
    let mut stages = [false; STAGES.len()];
    let mut missing = Vec::new();
    for (f, subst) in &examples {
        seen[variant(f)] = true;
        if let Failure::BadReply { stage, .. } = f {
            stages[stage_index(*stage)] = true;
        }
        let report = f.report();
        let documented = as_documented(f, subst);
        if !man.contains(&documented) {
            missing.push(format!("{f:?}\n    report: {documented}"));
        }
        // Texts with a code carry it at the end, in the class of the letter.
        if let Some((sentence, code)) = documented.rsplit_once(" (#") {
            assert!(!sentence.is_empty(), "{f:?}");
            let class = if report.letter() == Letter::D {
                '5'
            } else {
                '4'
            };
            assert!(code.starts_with(class), "{f:?}: {documented}");
        } else if !matches!(f, Failure::GaveUp { .. }) {
            // Reports without a code quote the server.
            assert!(
                String::from_utf8_lossy(report.text()).contains("Remote host said: "),
                "{f:?}"
            );
        }
    }
    let uncovered: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
    assert!(
        uncovered.is_empty(),
        "no example for variants {uncovered:?}"
    );
    assert!(stages.iter().all(|&s| s), "a Stage has no BadReply example");
    // The list after "stage is" names every stage.
    let list = man
        .split_once("stage is ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map_or("", |(list, _)| list);
    for stage in STAGES {
        let phrase = stage_phrase(stage);
        if !list.contains(&phrase) {
            missing.push(format!("the stage {phrase:?} in \"stage is ...;\""));
        }
    }
    assert!(
        missing.is_empty(),
        "reports missing from {MAN} (REPORTS):\n{}",
        missing.join("\n")
    );
}

/// The `what` of a reply that is not SMTP, as reply.rs says it.
fn reply_error(lines: &[&[u8]]) -> &'static str {
    let mut b = ReplyBuilder::default();
    for line in lines {
        match b.push_line(line) {
            Ok(Some(r)) => panic!("{r:?} parsed"),
            Ok(None) => {}
            Err(what) => return what,
        }
    }
    panic!("no error")
}

#[test]
fn reasons_a_reply_is_not_smtp_are_in_the_man_page() {
    let man = man_text();
    let long = vec![&b"250-x\r\n"[..]; MAX_LINES + 1];
    let mut whats = vec![
        reply_error(&[b"hello\r\n"]),
        reply_error(&[b"250-a\r\n", b"550 b\r\n"]),
        reply_error(&long),
    ];
    // The one session.rs adds.
    let session = read("src/session.rs");
    let data = "DATA was not answered with 354";
    assert!(session.contains(&format!("\"{data}\"")), "src/session.rs");
    whats.push(data);
    for what in whats {
        assert!(man.contains(what), "{MAN} does not mention {what:?}");
    }
}

/// Reports built outside `Failure::report`: in session.rs and in the panic hook in lib.rs.
#[test]
fn session_and_panic_reports_are_in_the_man_page() {
    let man = man_text();
    let checks = [
        (
            "src/session.rs",
            "\"{ip} accepted message.\\n\"",
            "K ip accepted message. Remote host said: reply",
        ),
        (
            "src/session.rs",
            "\"{ip} does not like recipient.\\n\"",
            "ip does not like recipient. Remote host said: reply",
        ),
        (
            "src/session.rs",
            "\"TLS: none ({why}).\"",
            "TLS: none (why).",
        ),
        (
            "src/session.rs",
            "\"TLS: none (the session ended before STARTTLS).\"",
            "the session ended before STARTTLS",
        ),
        (
            "src/session.rs",
            "\"AUTH: authenticated as {user} with {}.\"",
            "AUTH: authenticated as user with mechanism.",
        ),
        (
            "src/session.rs",
            "\" Warning: control/{file} holds passwords and every user can read it.\"",
            "Warning: control/file holds passwords and every user can read it.",
        ),
        (
            "src/lib.rs",
            "\"qmail-remote internal error.{dup}\"",
            "qmail-remote internal error. (#4.3.0)",
        ),
        (
            "src/lib.rs",
            "\" Possible duplicate!\"",
            "qmail-remote internal error. Possible duplicate! (#4.3.0)",
        ),
    ];
    for (file, code, documented) in checks {
        let src = squeeze(&read(file));
        assert!(
            src.contains(code),
            "{file} no longer contains {code}: update {MAN} and this test"
        );
        assert!(
            man.contains(documented),
            "{MAN} does not say {documented:?}"
        );
    }
}

#[test]
fn man_page_unescaping_works() {
    assert_eq!(
        line_text(r"Connected to \fIip\fR but the reply \fIstage\fR\&."),
        "Connected to ip but the reply stage."
    );
    assert_eq!(line_text(r#".IR "Sorry, I" ."#), "Sorry, I.");
    assert_eq!(line_text(r".BR qmail-remote 's"), "qmail-remote's");
    assert_eq!(line_text(r"\&.af.mil:\e\-x"), r".af.mil:\-x");
    assert_eq!(line_text(r#".\" a comment"#), "");
}
