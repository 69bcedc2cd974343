//! Every way a delivery can end other than success, one variant per distinct report, and the one
//! exhaustive mapping to a report. A new variant does not compile until it has a report, and only
//! a 5xx reply or the closed list in [`Failure::is_permanent_local`] can produce a `D`.

use std::net::IpAddr;

use crate::reply::Reply;
use crate::report::{Esc, Letter, Report, outsafe};

/// Where in the SMTP dialogue something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Helo,
    StartTls,
    /// The SMTP AUTH exchange.
    Auth,
    Mail,
    Data,
    /// The reply to the final dot.
    AfterDot,
}

/// Why a connection ended before a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// argc < 4.
    Usage,
    HomeDir,
    /// A control file exists but cannot be read.
    ControlUnreadable,
    /// `control/smtproutes` or `control/authsenders` (they may hold passwords) is unreadable.
    SecretsUnreadable {
        file: &'static str,
    },
    /// Neither `me` nor `helohost`.
    ControlMissing,
    /// `control/NAME line N: what`.
    ControlSyntax {
        file: &'static str,
        line: usize,
        what: String,
    },
    ReadMessage,
    PartialFinalLine,
    /// Sender or recipient holds CR, LF or NUL: it cannot be put on an SMTP command line.
    BadAddress,
    DnsSoft,
    DnsHard {
        host: Vec<u8>,
    },
    NoMx,
    NullMx {
        host: Vec<u8>,
    },
    AmbiguousMx,
    NoConnection,
    /// EOF, I/O error or timeout on the socket.
    Died {
        ip: IpAddr,
        after_dot: bool,
    },
    /// The peer's reply at `stage` was a failure; the class of its code decides the letter.
    Rejected {
        ip: IpAddr,
        stage: Stage,
        reply: Reply,
    },
    /// Every recipient was rejected (their reasons are already in the `h`/`s` reports).
    GaveUp {
        ip: IpAddr,
    },
    /// The peer sent something that is not an SMTP reply.
    BadReply {
        ip: IpAddr,
        stage: Stage,
        after_dot: bool,
        what: &'static str,
    },
    /// The server's SIZE limit is below the message size.
    TooBig {
        ip: IpAddr,
        size: u64,
        limit: u64,
    },
    /// The addresses need SMTPUTF8 and the server does not offer it.
    NoSmtpUtf8 {
        ip: IpAddr,
    },
    /// TLS is required and the server did not offer STARTTLS (or refused it). `dane`: the
    /// requirement is published TLSA records, whose authentication this failure defeats.
    TlsNotOffered {
        ip: IpAddr,
        why: String,
        dane: bool,
    },
    /// TLS is required and the handshake or verification failed.
    TlsFailed {
        ip: IpAddr,
        why: String,
    },
    /// Plaintext bytes arrived after the 220 to STARTTLS: a response-injection attempt.
    TlsInjection {
        ip: IpAddr,
    },
    /// The recipient domain's MTA-STS policy is `enforce` and lists none of its MX hosts.
    StsNoMx {
        domain: String,
        /// The MX host names, comma-separated, already made safe for a report.
        hosts: String,
    },
    /// The TLSA lookup for an MX host with DNSSEC-secure addresses failed (SERVFAIL, bogus,
    /// timeout): DANE may apply, so the host is not used (RFC 7672 2.1.1).
    TlsaLookup {
        owner: String,
        why: String,
    },
    /// Credentials are configured for this relay, but it offers no way to use them here.
    /// Never D: the admin asked for AUTH, so the mail waits rather than go out without it.
    AuthUnavailable {
        ip: IpAddr,
        user: String,
        why: String,
    },
    /// The relay refused the credentials (535, 534, 538, 454, ...). Never D: a wrong password
    /// is a configuration fault, and the mail must wait for the admin, not bounce.
    AuthRejected {
        ip: IpAddr,
        mechanism: &'static str,
        user: String,
        reply: Reply,
    },
    /// The relay's reply made no sense inside the AUTH exchange.
    AuthAborted {
        ip: IpAddr,
        mechanism: &'static str,
        why: &'static str,
    },
    /// A bug. Never D.
    Internal(&'static str),
}

impl Failure {
    /// The closed list of local reasons that may bounce a message.
    pub fn is_permanent_local(&self) -> bool {
        matches!(
            self,
            Failure::Usage
                | Failure::PartialFinalLine
                | Failure::BadAddress
                | Failure::DnsHard { .. }
                | Failure::NoMx
                | Failure::NullMx { .. }
                | Failure::AmbiguousMx
                | Failure::GaveUp { .. }
                | Failure::TooBig { .. }
                | Failure::NoSmtpUtf8 { .. }
        )
    }

    pub fn report(&self) -> Report {
        use Failure::*;
        let perm = |e, s: &str| Report::perm(e, s);
        let temp = |e, s: &str| Report::temp(e, s);
        match self {
            Usage => perm(Esc(3, 5), "I (qmail-remote) was invoked improperly."),
            HomeDir => temp(Esc(3, 0), "Unable to switch to home directory."),
            ControlUnreadable | ControlMissing => temp(Esc(3, 0), "Unable to read control files."),
            SecretsUnreadable { file } => temp(
                Esc(3, 0),
                &format!(
                    "Unable to read control files: control/{file} cannot be read (it may hold passwords: make it owned by qmailr, mode 0400)."
                ),
            ),
            ControlSyntax { file, line, what } => temp(
                Esc(3, 5),
                &format!("Syntax error in control/{file} line {line}: {what}."),
            ),
            ReadMessage => temp(Esc(3, 0), "Unable to read message."),
            PartialFinalLine => perm(
                Esc(6, 2),
                "SMTP cannot transfer messages with partial final lines.",
            ),
            BadAddress => perm(
                Esc(1, 3),
                "Sorry, an envelope address contains CR, LF or NUL and cannot be sent over SMTP.",
            ),
            DnsSoft => temp(Esc(1, 2), "Sorry, I couldn't find any host by that name."),
            DnsHard { host } => perm(
                Esc(1, 2),
                &format!("Sorry, I couldn't find any host named {}.", outsafe(host)),
            ),
            NoMx => perm(
                Esc(4, 4),
                "Sorry, I couldn't find a mail exchanger or IP address.",
            ),
            NullMx { host } => perm(
                Esc(1, 10),
                &format!("Sorry, {} does not accept mail (null MX).", outsafe(host)),
            ),
            AmbiguousMx => perm(
                Esc(4, 6),
                "Sorry. Although I'm listed as a best-preference MX or A for that host,\nit isn't in my control/locals file, so I don't treat it as local.",
            ),
            NoConnection => temp(
                Esc(4, 1),
                "Sorry, I wasn't able to establish an SMTP connection.",
            ),
            Died { ip, after_dot } => {
                let dup = if *after_dot {
                    " Possible duplicate!"
                } else {
                    ""
                };
                temp(
                    Esc(4, 2),
                    &format!("Connected to {ip} but connection died.{dup}"),
                )
            }
            Rejected { ip, stage, reply } => rejected(*ip, *stage, reply),
            GaveUp { ip } => Report::raw(Letter::D, format!("Giving up on {ip}.\n").into_bytes()),
            BadReply {
                ip,
                stage,
                after_dot,
                what,
            } => {
                let dup = if *after_dot {
                    " Possible duplicate!"
                } else {
                    ""
                };
                temp(
                    Esc(5, 0),
                    &format!(
                        "Connected to {ip} but the reply {} was not SMTP: {what}.{dup}",
                        stage_name(*stage)
                    ),
                )
            }
            TooBig { ip, size, limit } => perm(
                Esc(3, 4),
                &format!(
                    "Connected to {ip} but the message ({size} bytes) is larger than the server's limit ({limit} bytes)."
                ),
            ),
            NoSmtpUtf8 { ip } => perm(
                Esc(6, 7),
                &format!(
                    "Connected to {ip} but server does not support unicode in email addresses."
                ),
            ),
            // RFC 7672 and issue 8: without STARTTLS a DANE peer cannot be authenticated,
            // which is a failed security check (X.7.5), not merely a missing feature (X.7.4).
            TlsNotOffered { ip, why, dane } => temp(
                Esc(7, if *dane { 5 } else { 4 }),
                &format!("TLS is required, but {ip} {why}."),
            ),
            TlsFailed { ip, why } => temp(Esc(7, 5), &format!("TLS with {ip} failed: {why}.")),
            TlsInjection { ip } => temp(
                Esc(7, 5),
                &format!("Connected to {ip} but it sent plaintext after agreeing to STARTTLS."),
            ),
            StsNoMx { domain, hosts } => temp(
                Esc(7, 5),
                &format!(
                    "None of the MX hosts of {domain} ({hosts}) is allowed by its MTA-STS policy."
                ),
            ),
            TlsaLookup { owner, why } => temp(
                Esc(7, 5),
                &format!(
                    "TLSA lookup for {owner} failed ({why}); DANE may apply there, so that MX was not used."
                ),
            ),
            AuthUnavailable { ip, user, why } => temp(
                Esc(7, 0),
                &format!(
                    "Connected to {ip} but cannot log in as {user}: {why}. Not sending without the SMTP AUTH the control files ask for."
                ),
            ),
            AuthRejected {
                ip,
                mechanism,
                user,
                reply,
            } => {
                let mut text = format!(
                    "Connected to {ip} but authentication as {user} (AUTH {mechanism}) was rejected.\n"
                )
                .into_bytes();
                reply.append_said(&mut text);
                Report::raw(Letter::Z, text)
            }
            AuthAborted { ip, mechanism, why } => temp(
                Esc(7, 0),
                &format!("Connected to {ip} but AUTH {mechanism} failed: {why}."),
            ),
            Internal(what) => temp(Esc(3, 0), &format!("qmail-remote internal error: {what}.")),
        }
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Greeting => "to the greeting",
        Stage::Helo => "to EHLO/HELO",
        Stage::StartTls => "to STARTTLS",
        Stage::Auth => "to AUTH",
        Stage::Mail => "to MAIL/RCPT",
        Stage::Data => "to DATA",
        Stage::AfterDot => "after the message",
    }
}

/// Stock wording per stage; a 5xx is D only at MAIL, DATA and after the dot, as in qmail.
fn rejected(ip: IpAddr, stage: Stage, reply: &Reply) -> Report {
    let (what, may_bounce) = match stage {
        Stage::Greeting => (format!("Connected to {ip} but greeting failed."), false),
        Stage::Helo => (
            format!("Connected to {ip} but my name was rejected."),
            false,
        ),
        Stage::StartTls => (
            format!("Connected to {ip} but STARTTLS was rejected."),
            false,
        ),
        Stage::Auth => (
            format!("Connected to {ip} but authentication was rejected."),
            false,
        ),
        Stage::Mail => (format!("Connected to {ip} but sender was rejected."), true),
        Stage::Data => (format!("{ip} failed on DATA command."), true),
        Stage::AfterDot => (format!("{ip} failed after I sent the message."), true),
    };
    let letter = if may_bounce && reply.code >= 500 {
        Letter::D
    } else {
        Letter::Z
    };
    let mut text = what.into_bytes();
    text.push(b'\n');
    reply.append_said(&mut text);
    Report::raw(letter, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<Failure> {
        let ip: IpAddr = [192, 0, 2, 7].into();
        let reply = Reply::parse_for_test(b"550 5.7.1 no\r\n");
        vec![
            Failure::Usage,
            Failure::HomeDir,
            Failure::ControlUnreadable,
            Failure::ControlMissing,
            Failure::SecretsUnreadable {
                file: "authsenders",
            },
            Failure::ControlSyntax {
                file: "smtproutes",
                line: 3,
                what: "bad port".into(),
            },
            Failure::ReadMessage,
            Failure::PartialFinalLine,
            Failure::BadAddress,
            Failure::DnsSoft,
            Failure::DnsHard {
                host: b"x.example".to_vec(),
            },
            Failure::NoMx,
            Failure::NullMx {
                host: b"x.example".to_vec(),
            },
            Failure::AmbiguousMx,
            Failure::NoConnection,
            Failure::Died {
                ip,
                after_dot: true,
            },
            Failure::Rejected {
                ip,
                stage: Stage::Greeting,
                reply: reply.clone(),
            },
            Failure::Rejected {
                ip,
                stage: Stage::Mail,
                reply,
            },
            Failure::GaveUp { ip },
            Failure::BadReply {
                ip,
                stage: Stage::Data,
                after_dot: false,
                what: "no code",
            },
            Failure::TooBig {
                ip,
                size: 10,
                limit: 5,
            },
            Failure::NoSmtpUtf8 { ip },
            Failure::TlsNotOffered {
                ip,
                why: "did not offer STARTTLS".into(),
                dane: false,
            },
            Failure::TlsFailed {
                ip,
                why: "x".into(),
            },
            Failure::TlsInjection { ip },
            Failure::StsNoMx {
                domain: "x.example".into(),
                hosts: "mx.x.example".into(),
            },
            Failure::TlsaLookup {
                owner: "_25._tcp.mx.example".into(),
                why: "SERVFAIL from 127.0.0.1".into(),
            },
            Failure::AuthUnavailable {
                ip,
                user: "u".into(),
                why: "it does not offer SMTP AUTH".into(),
            },
            Failure::AuthRejected {
                ip,
                mechanism: "PLAIN",
                user: "u".into(),
                reply: Reply::parse_for_test(b"535 5.7.8 bad\r\n"),
            },
            Failure::AuthAborted {
                ip,
                mechanism: "LOGIN",
                why: "x",
            },
            Failure::Internal("x"),
        ]
    }

    #[test]
    fn d_only_from_closed_list_or_5xx() {
        for f in examples() {
            let r = f.report();
            if r.letter() == Letter::D {
                let remote = matches!(&f, Failure::Rejected { reply, .. } if reply.code >= 500);
                assert!(f.is_permanent_local() || remote, "{f:?} gave D");
            }
            assert!(!r.text().contains(&0), "{f:?}");
            let t = String::from_utf8_lossy(r.text());
            if t.contains("(#") {
                let class = if r.letter() == Letter::D {
                    "(#5."
                } else {
                    "(#4."
                };
                assert!(t.contains(class), "{f:?}: {t}");
            }
        }
    }

    #[test]
    fn stock_texts() {
        let ip: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(
            Failure::Died {
                ip,
                after_dot: true
            }
            .report()
            .text(),
            b"Connected to 192.0.2.7 but connection died. Possible duplicate! (#4.4.2)\n"
        );
        let reply = Reply::parse_for_test(b"451-a\r\n451 b\r\n");
        let r = Failure::Rejected {
            ip,
            stage: Stage::AfterDot,
            reply,
        }
        .report();
        assert_eq!(r.letter(), Letter::Z);
        assert_eq!(
            r.text(),
            b"192.0.2.7 failed after I sent the message.\nRemote host said: 451-a\n451 b\n"
        );
    }
}
