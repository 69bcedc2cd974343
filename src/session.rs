//! The SMTP dialogue on one connection: greeting, EHLO (HELO fallback), STARTTLS by policy,
//! MAIL/RCPT/DATA (pipelined when offered), the body, the final dot. It decides whether a
//! failure is final for the message or means "try the next address".

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::args::Envelope;
use crate::auth::{self, Credentials, Exchange};
use crate::conn::{Conn, ReadError, Stream, Upgrade};
use crate::control::Config;
use crate::ehlo::Caps;
use crate::failure::{Failure, Stage};
use crate::message::{Message, SendError};
use crate::reply::{Reply, ReplyBuilder};
use crate::report::{MAX_SAID, RcptLetter, Report, outsafe};
use crate::route::Peer;
use crate::tls::{Level, Policy, StsVerdict, Tls, Verified};

/// RFC 5321 4.5.3.2 reply timeouts, each further capped by `control/timeoutremote`.
fn stage_timeout(stage: Stage) -> Duration {
    Duration::from_secs(match stage {
        Stage::Greeting | Stage::Helo | Stage::StartTls | Stage::Auth | Stage::Mail => 300,
        Stage::Data => 120,
        Stage::AfterDot => 600,
    })
}

/// How a connection ended.
pub enum Outcome {
    /// The verdict for the message.
    Done {
        rcpts: Vec<(RcptLetter, Vec<u8>)>,
        report: Report,
    },
    /// Nothing was decided here: try the next address. The string is the `TLS:` line for the
    /// report, should this failure end up being the verdict.
    Next(Failure, Option<String>),
    /// The TLS handshake failed at level `may`: retry this address without STARTTLS.
    RetryPlain(String),
}

/// Everything a session needs besides the socket.
pub struct Job<'a> {
    pub cfg: &'a Config,
    pub env: &'a Envelope,
    pub msg: &'a mut Message,
    pub tls: &'a Tls,
    /// Sessions so far in which the server greeted with 220 (for `control/mxsessionlimit`).
    pub greeted: usize,
    /// SMTP AUTH credentials for the relay (the TLS policy is raised to match, see
    /// `lib::policy_for`). `None` from [`Job::new`].
    pub auth: Option<&'a Credentials>,
}

impl<'a> Job<'a> {
    pub fn new(cfg: &'a Config, env: &'a Envelope, msg: &'a mut Message, tls: &'a Tls) -> Job<'a> {
        Job {
            cfg,
            env,
            msg,
            tls,
            greeted: 0,
            auth: None,
        }
    }
}

/// What to say about TLS in the final report.
enum TlsNote<S = crate::tls::Session> {
    Plain(String),
    Tls(S),
}

struct Dialogue<'j, 'a> {
    job: &'j mut Job<'a>,
    conn: Conn,
    peer: &'j Peer,
    /// The `TLS:` line once TLS is up, for a failure after that.
    tls_line: Option<String>,
    /// A read or write failed (EOF, error, timeout): nothing more is sent, not even QUIT.
    dead: bool,
    /// The greeting and every EHLO reply, kept for [`probe`].
    greeting: Option<Reply>,
    ehlo: Vec<Reply>,
}

fn died(conn: &Conn, after_dot: bool) -> Failure {
    Failure::Died {
        ip: conn.ip,
        after_dot,
    }
}

impl<'j, 'a> Dialogue<'j, 'a> {
    fn new(job: &'j mut Job<'a>, peer: &'j Peer, tcp: TcpStream) -> Dialogue<'j, 'a> {
        // RFC 5321 4.5.3.2: three minutes for each block of data (and each command).
        let write_limit = job.cfg.timeout_remote.min(Duration::from_secs(180));
        Dialogue {
            job,
            conn: Conn::new(Stream::Plain(tcp), peer.ip, write_limit),
            peer,
            tls_line: None,
            dead: false,
            greeting: None,
            ehlo: Vec::new(),
        }
    }

    fn read(&mut self, stage: Stage) -> Result<Reply, Failure> {
        self.read_into(stage, ReplyBuilder::default())
    }

    fn read_into(&mut self, stage: Stage, builder: ReplyBuilder) -> Result<Reply, Failure> {
        let after_dot = stage == Stage::AfterDot;
        let limit = stage_timeout(stage).min(self.job.cfg.timeout_remote);
        let dead = &mut self.dead;
        self.conn.read_reply(limit, builder).map_err(|e| match e {
            ReadError::Died => {
                *dead = true;
                died(&self.conn, after_dot)
            }
            ReadError::Bad(what) => Failure::BadReply {
                ip: self.conn.ip,
                stage,
                after_dot,
                what,
            },
        })
    }

    fn send(&mut self, data: &[u8]) -> Result<(), Failure> {
        let sent = self.conn.send(data);
        self.dead |= sent.is_err();
        sent.map_err(|_| died(&self.conn, false))
    }

    /// Says goodbye without waiting for the answer, as qmail does; never on a connection known
    /// to be dead (the man page's promise, and a write there could only fail).
    fn quit(&mut self) {
        if !self.dead {
            let _ = self.conn.send(b"QUIT\r\n");
        }
    }

    fn command(&mut self, cmd: &[u8], stage: Stage) -> Result<Reply, Failure> {
        self.send(cmd)?;
        self.read(stage)
    }

    /// EHLO, or HELO when EHLO is refused with anything but 421 (Postfix's rule).
    fn hello(&mut self) -> Result<Caps, Failure> {
        let helo = &self.job.cfg.helohost;
        self.send(&[b"EHLO ", helo.as_slice(), b"\r\n"].concat())?;
        // Keywords are read from the whole reply: a long first line must not hide STARTTLS.
        let reply = self.read_into(Stage::Helo, ReplyBuilder::whole())?;
        if reply.code / 100 == 2 {
            let caps = Caps::parse(&reply);
            self.ehlo.push(reply);
            return Ok(caps);
        }
        let reply = reply.capped();
        if reply.code == 421 {
            return Err(Failure::Rejected {
                ip: self.conn.ip,
                stage: Stage::Helo,
                reply,
            });
        }
        let reply = self.command(&[b"HELO ", helo.as_slice(), b"\r\n"].concat(), Stage::Helo)?;
        if reply.code / 100 == 2 {
            return Ok(Caps::default());
        }
        Err(Failure::Rejected {
            ip: self.conn.ip,
            stage: Stage::Helo,
            reply,
        })
    }
}

/// Runs one SMTP session on a connected socket.
pub fn run(
    job: &mut Job,
    peer: &Peer,
    tcp: TcpStream,
    policy: &Policy,
    plain_because: Option<String>,
) -> Outcome {
    let mut d = Dialogue::new(job, peer, tcp);
    match negotiate(&mut d, policy, plain_because) {
        Ok((caps, note)) => transaction(d, caps, note, policy),
        Err(Step::Next(f)) => {
            if matches!(f, Failure::Rejected { .. }) {
                // The peer is still talking SMTP: say goodbye, as qmail does.
                d.quit();
            }
            let line = failure_tls_line(&f, d.tls_line.take());
            Outcome::Next(f, line)
        }
        Err(Step::RetryPlain(why)) => Outcome::RetryPlain(why),
    }
}

/// The `TLS:` line for a failure before MAIL FROM: the session's, if TLS was up.
fn failure_tls_line(f: &Failure, tls_line: Option<String>) -> Option<String> {
    // A TLS failure's text says all there is to say about TLS.
    let tls_failure = matches!(
        f,
        Failure::TlsFailed { .. } | Failure::TlsNotOffered { .. } | Failure::TlsInjection { .. }
    );
    tls_line.or_else(|| {
        (!tls_failure).then(|| "TLS: none (the session ended before STARTTLS).".to_string())
    })
}

enum Step {
    Next(Failure),
    RetryPlain(String),
}

impl From<Failure> for Step {
    fn from(f: Failure) -> Step {
        Step::Next(f)
    }
}

/// Port 465 (`smtproutes relay:465`) is SMTPS: TLS from the first byte, as in qmail-tls.
const SMTPS_PORT: u16 = 465;

/// [`greet_and_negotiate`], with the policy's own note (DANE not used and why, an override)
/// added to a plaintext session's reason, as the `TLS:` line gives it (a TLS session has the
/// note already). Shared by [`run`] and [`probe`], so that both give the same line.
fn negotiate(
    d: &mut Dialogue,
    policy: &Policy,
    plain_because: Option<String>,
) -> Result<(Caps, TlsNote), Step> {
    let (caps, note) = greet_and_negotiate(d, policy, plain_because)?;
    let note = match note {
        TlsNote::Plain(why) => TlsNote::Plain(format!("{why}{}", policy.note)),
        tls => tls,
    };
    Ok((caps, note))
}

fn greet_and_negotiate(
    d: &mut Dialogue,
    policy: &Policy,
    plain_because: Option<String>,
) -> Result<(Caps, TlsNote), Step> {
    let ip = d.conn.ip;
    if d.peer.port == SMTPS_PORT {
        // No plaintext exists on this port, whatever the level says.
        let implicit = Policy {
            level: policy.level.max(Level::Encrypt),
            ..policy.clone()
        };
        let session = upgrade(d, &implicit)?;
        greet(d)?;
        let caps = d.hello()?;
        return Ok((caps, TlsNote::Tls(session)));
    }
    greet(d)?;
    let caps = d.hello()?;
    if let Some(why) = plain_because {
        return Ok((caps, TlsNote::Plain(why)));
    }
    if policy.level == Level::None {
        return Ok((
            caps,
            TlsNote::Plain(format!("TLS policy none from {}", policy.source)),
        ));
    }
    if !caps.starttls {
        if policy.level.required() {
            let why = format!(
                "did not offer STARTTLS (level {} from {})",
                policy.level.name(),
                policy.source
            );
            return Err(Failure::TlsNotOffered {
                ip,
                why,
                dane: policy.dane().is_some(),
            }
            .into());
        }
        return Ok((caps, TlsNote::Plain("STARTTLS not offered".into())));
    }
    let reply = match d.command(b"STARTTLS\r\n", Stage::StartTls) {
        Ok(reply) => reply,
        // Middleboxes kill STARTTLS by dropping the connection or answering garbage, as
        // others break the handshake after the 220: at `may` all of these mean plaintext on
        // a new connection, at `encrypt` and above a failure for this address.
        Err(f) if !policy.level.required() => {
            let why = match f {
                Failure::BadReply { .. } => "the answer to STARTTLS was not SMTP",
                _ => "the connection died in answer to STARTTLS",
            };
            return Err(Step::RetryPlain(why.into()));
        }
        Err(f) => return Err(f.into()),
    };
    if reply.code != 220 {
        let said = String::from_utf8_lossy(&reply.text)
            .trim_end()
            .replace('\n', " ");
        if policy.level.required() {
            let why = format!(
                "refused STARTTLS: {said} (level {} from {})",
                policy.level.name(),
                policy.source
            );
            return Err(Failure::TlsNotOffered {
                ip,
                why,
                dane: policy.dane().is_some(),
            }
            .into());
        }
        return Ok((caps, TlsNote::Plain(format!("STARTTLS refused: {said}"))));
    }
    let session = upgrade(d, policy)?;
    // Forget everything learned before TLS (RFC 3207 4.2).
    let caps = d.hello()?;
    Ok((caps, TlsNote::Tls(session)))
}

fn greet(d: &mut Dialogue) -> Result<(), Failure> {
    let greeting = d.read(Stage::Greeting)?;
    d.greeting = Some(greeting.clone());
    if greeting.code != 220 {
        return Err(Failure::Rejected {
            ip: d.conn.ip,
            stage: Stage::Greeting,
            reply: greeting,
        });
    }
    d.job.greeted += 1;
    Ok(())
}

/// Switches the connection to TLS. Refuses bytes buffered past the last reply (injection).
/// A failed handshake is final for this address when the level requires TLS, and a plaintext
/// retry on a new connection otherwise.
fn upgrade(d: &mut Dialogue, policy: &Policy) -> Result<crate::tls::Session, Step> {
    let ip = d.conn.ip;
    let tls = d.job.tls;
    let peer = d.peer;
    let mut session = None;
    // The whole handshake must complete within one reply's time (RFC 5321 4.5.3.2 has no
    // figure for it; STARTTLS's own 5 minutes, capped by timeoutremote).
    let deadline = Instant::now() + stage_timeout(Stage::StartTls).min(d.job.cfg.timeout_remote);
    let upgraded = d.conn.upgrade(|tcp| {
        tls.handshake(tcp, peer, policy, deadline)
            .map(|(stream, s)| {
                session = Some(s);
                stream
            })
    });
    match (upgraded, session) {
        (Ok(()), Some(session)) => {
            d.tls_line = Some(tls_line(&TlsNote::Tls(&session), policy));
            Ok(session)
        }
        (Ok(()), None) => Err(Failure::Internal("TLS session without parameters").into()),
        (Err(Upgrade::Injected), _) => Err(Failure::TlsInjection { ip }.into()),
        (Err(Upgrade::Failed(why)), _) if policy.level.required() => {
            Err(Failure::TlsFailed { ip, why }.into())
        }
        (Err(Upgrade::Failed(why)), _) => Err(Step::RetryPlain(why)),
    }
}

/// What [`probe`] learned on one connection.
pub struct Probe {
    pub greeting: Option<Reply>,
    /// Every EHLO reply, in order (before and after STARTTLS).
    pub ehlo: Vec<Reply>,
    /// The negotiated TLS session, when the dialogue got that far.
    pub session: Option<crate::tls::Session>,
    /// The peer's certificate chain as sent, end entity first (DER).
    pub certs: Vec<Vec<u8>>,
    pub outcome: ProbeOutcome,
}

pub enum ProbeOutcome {
    /// Ready for MAIL FROM: the capabilities, and the `TLS:` line a delivery would report.
    Ready(Caps, String),
    /// As [`Outcome::Next`]: a delivery would try the next address.
    Next(Failure, Option<String>),
    /// As [`Outcome::RetryPlain`].
    RetryPlain(String),
}

/// `qremote-probe`: the same greeting, EHLO and STARTTLS as [`run`] (same policy, verifier and
/// reports), then QUIT instead of MAIL FROM.
pub fn probe(
    job: &mut Job,
    peer: &Peer,
    tcp: TcpStream,
    policy: &Policy,
    plain_because: Option<String>,
) -> Probe {
    let mut d = Dialogue::new(job, peer, tcp);
    let result = negotiate(&mut d, policy, plain_because);
    let certs = d.conn.peer_certificates();
    let (session, outcome) = match result {
        Ok((caps, TlsNote::Plain(why))) => {
            let line = tls_line(&TlsNote::Plain(why), policy);
            (None, ProbeOutcome::Ready(caps, line))
        }
        Ok((caps, TlsNote::Tls(s))) => {
            let line = tls_line(&TlsNote::Tls(&s), policy);
            (Some(s), ProbeOutcome::Ready(caps, line))
        }
        Err(Step::Next(f)) => {
            let line = failure_tls_line(&f, d.tls_line.take());
            (None, ProbeOutcome::Next(f, line))
        }
        Err(Step::RetryPlain(why)) => (None, ProbeOutcome::RetryPlain(why)),
    };
    d.quit();
    Probe {
        greeting: d.greeting,
        ehlo: d.ehlo,
        session,
        certs,
        outcome,
    }
}

/// The `TLS:` line of the report; in MTA-STS `testing` mode it also says what `enforce`
/// would have done with this host.
fn tls_line(note: &TlsNote<&crate::tls::Session>, policy: &Policy) -> String {
    let line = match note {
        TlsNote::Plain(why) => format!("TLS: none ({why})."),
        TlsNote::Tls(s) => s.to_string(),
    };
    let Some(StsVerdict::Testing { listed }) = &policy.sts else {
        return line;
    };
    let would = match note {
        _ if !listed => "not have used this host (it is not in the policy's mx list)".to_string(),
        // Level none (notlshosts/, a tlspolicy line): enforce is an explicit verify source
        // that outranks it, so it would have tried TLS, which this delivery did not.
        TlsNote::Plain(why) if policy.level == Level::None => {
            format!("have required verified TLS, not tried here ({why})")
        }
        TlsNote::Plain(why) => format!("have refused this host: no TLS ({why})"),
        TlsNote::Tls(s) => match &s.verified {
            Verified::Yes(_) | Verified::Dane(_) => "have accepted this host".to_string(),
            Verified::No(why) => format!("have refused this host: {why}"),
        },
    };
    format!("{line} MTA-STS testing: enforce would {would}.")
}

fn transaction(mut d: Dialogue, caps: Caps, note: TlsNote, policy: &Policy) -> Outcome {
    let mut line = match &note {
        TlsNote::Plain(why) => tls_line(&TlsNote::Plain(why.clone()), policy),
        TlsNote::Tls(s) => tls_line(&TlsNote::Tls(s), policy),
    };
    let authenticated = authenticate(&mut d, &caps, &note);
    if let Ok(Some(auth_line)) = &authenticated {
        line = format!("{line}\n{auth_line}");
    }
    let outcome = match authenticated.and_then(|_| mail_rcpt_data(&mut d, &caps)) {
        Ok(Outcome::Done { rcpts, mut report }) => {
            report.push_line(&line);
            Outcome::Done { rcpts, report }
        }
        Ok(other) => other,
        Err(f) => Outcome::Next(f, Some(line)),
    };
    // Decide first, then QUIT without waiting; a failed QUIT cannot change the verdict.
    d.quit();
    outcome
}

/// SMTP AUTH after the EHLO that follows STARTTLS, when the route has credentials. Returns
/// the report line naming the user and mechanism. Every failure here moves on to the next
/// address (as any failure before MAIL does) and can only end as `Z`.
/// The mechanism a delivery logs in with after the EHLO reply `caps`, or why it cannot
/// (`tls_up`: that EHLO followed STARTTLS). Shared with `qremote-probe`, which shows it.
pub fn auth_mechanism(caps: &Caps, tls_up: bool) -> Result<auth::Mechanism, String> {
    if !tls_up {
        // The policy was raised to require TLS, so this cannot happen; never send anyway.
        return Err("TLS is not up".into());
    }
    let Some(offered) = &caps.auth else {
        return Err("it does not offer SMTP AUTH".into());
    };
    if offered.is_empty() {
        return Err("its AUTH keyword lists no mechanism".into());
    }
    auth::choose(offered.iter().map(Vec::as_slice)).ok_or_else(|| {
        let list = offered
            .iter()
            .map(|m| outsafe(m))
            .collect::<Vec<_>>()
            .join(" ");
        format!("it offers none of CRAM-MD5, PLAIN and LOGIN (only: {list})")
    })
}

fn authenticate(d: &mut Dialogue, caps: &Caps, note: &TlsNote) -> Result<Option<String>, Failure> {
    let Some(creds) = d.job.auth else {
        return Ok(None);
    };
    let ip = d.conn.ip;
    let user = outsafe(creds.user());
    let unavailable = |why: String| Failure::AuthUnavailable {
        ip,
        user: user.clone(),
        why,
    };
    let mechanism = auth_mechanism(caps, matches!(note, TlsNote::Tls(_))).map_err(unavailable)?;
    let (mut exchange, command) = Exchange::start(mechanism, creds);
    d.send(command.bytes())?;
    loop {
        // More than a report keeps, so that a secret the relay echoes at the cut is hidden
        // whole before the reply is cut.
        let builder = ReplyBuilder::keeping(MAX_SAID + auth::MAX_RESPONSE_LINE);
        let reply = d.read_into(Stage::Auth, builder)?;
        match exchange.reply(&reply) {
            auth::Step::Send(response) => d.send(response.bytes())?,
            auth::Step::Done => {
                let mut line = format!("AUTH: authenticated as {user} with {}.", mechanism.name());
                for file in &d.job.cfg.exposed {
                    line.push_str(&format!(
                        " Warning: control/{file} holds passwords and every user can read it."
                    ));
                }
                return Ok(Some(line));
            }
            auth::Step::Refused(reply) => {
                return Err(Failure::AuthRejected {
                    ip,
                    mechanism: mechanism.name(),
                    user,
                    reply: exchange.hide_secrets(&reply).capped(),
                });
            }
            auth::Step::Abort(why) => {
                // RFC 4954 4: "*" cancels the exchange; its 501 is not waited for.
                let _ = d.conn.send(b"*\r\n");
                return Err(Failure::AuthAborted {
                    ip,
                    mechanism: mechanism.name(),
                    why,
                });
            }
        }
    }
}

/// Returns `Err` for failures that should move on to the next address.
fn mail_rcpt_data(d: &mut Dialogue, caps: &Caps) -> Result<Outcome, Failure> {
    let ip = d.conn.ip;
    let env = d.job.env;
    let scan = d.job.msg.scan;
    let final_failure = |f: Failure| {
        Ok(Outcome::Done {
            rcpts: Vec::new(),
            report: f.report(),
        })
    };
    if env.utf8 && !caps.smtputf8 {
        // Another MX may have it: move on, and bounce only if none does.
        return Err(Failure::NoSmtpUtf8 { ip });
    }
    if let Some(limit) = caps.size.filter(|&l| l > 0 && scan.size > l) {
        return Err(Failure::TooBig {
            ip,
            size: scan.size,
            limit,
        });
    }
    let mut mail = [b"MAIL FROM:<", env.sender.as_slice(), b">"].concat();
    if caps.size.is_some() {
        mail.extend_from_slice(format!(" SIZE={}", scan.size).as_bytes());
    }
    if scan.eight_bit && caps.eight_bit_mime {
        mail.extend_from_slice(b" BODY=8BITMIME");
    }
    if env.utf8 {
        mail.extend_from_slice(b" SMTPUTF8");
    }
    mail.extend_from_slice(b"\r\n");
    let rcpt_cmds: Vec<Vec<u8>> = env
        .recipients
        .iter()
        .map(|r| [b"RCPT TO:<", r.as_slice(), b">\r\n"].concat())
        .collect();

    // With PIPELINING everything up to DATA goes in one write (RFC 2920 3.1).
    if caps.pipelining {
        let mut batch = mail.clone();
        rcpt_cmds.iter().for_each(|c| batch.extend_from_slice(c));
        batch.extend_from_slice(b"DATA\r\n");
        d.send(&batch)?;
    } else {
        d.send(&mail)?;
    }
    let reply = d.read(Stage::Mail)?;
    if reply.code == 421 {
        return Err(Failure::Rejected {
            ip,
            stage: Stage::Mail,
            reply,
        });
    }
    if !reply.is_positive() {
        return final_failure(Failure::Rejected {
            ip,
            stage: Stage::Mail,
            reply,
        });
    }
    let done = |rcpts, f: Failure| {
        Ok(Outcome::Done {
            rcpts,
            report: f.report(),
        })
    };
    // Each RCPT reply read is the server's answer for that recipient and stands, whatever
    // happens to the connection later: it is reported here and never asked of another address.
    let mut rcpts = Vec::with_capacity(rcpt_cmds.len());
    for cmd in &rcpt_cmds {
        let reply = if caps.pipelining {
            d.read(Stage::Mail)
        } else {
            d.command(cmd, Stage::Mail)
        };
        match reply {
            Ok(reply) => rcpts.push(rcpt_result(ip, &reply)),
            // Nobody answered yet: the next address may still take the message.
            Err(f) if rcpts.is_empty() => return Err(f),
            // Some answers stand; the others are unknown: the message is deferred.
            Err(f) => return done(rcpts, f),
        }
    }
    if !rcpts.iter().any(|(l, _)| *l == RcptLetter::Accepted) {
        // Every recipient was answered and none accepted: final, whatever a pipelined DATA
        // got (it is not even read; the body is never sent).
        return done(rcpts, Failure::GaveUp { ip });
    }
    let data = if caps.pipelining {
        d.read(Stage::Data)
    } else {
        d.command(b"DATA\r\n", Stage::Data)
    };
    // Recipients were accepted on this connection: a drop now defers the message here (the
    // accepted ones are `r`, the rejected ones keep their `h`).
    let data = match data {
        Ok(data) => data,
        Err(f) => return done(rcpts, f),
    };
    if data.code >= 400 {
        return done(
            rcpts,
            Failure::Rejected {
                ip,
                stage: Stage::Data,
                reply: data,
            },
        );
    }
    if data.code / 100 != 3 {
        return done(
            rcpts,
            Failure::BadReply {
                ip,
                stage: Stage::Data,
                after_dot: false,
                what: "DATA was not answered with 354",
            },
        );
    }
    let conn = &mut d.conn;
    let sent = d.job.msg.send(
        |block| conn.send(block),
        || {
            crate::CRITICAL.store(true, Ordering::SeqCst);
            #[cfg(feature = "fault-injection")]
            if std::env::var_os("QREMOTE_PANIC_AT_DOT").is_some() {
                panic!("fault injection at the final dot");
            }
        },
    );
    match sent {
        Ok(()) => {}
        Err(SendError::Read) => return done(rcpts, Failure::ReadMessage),
        Err(SendError::Write) => {
            // A block was not written, so the final dot never reached the socket: no duplicate.
            d.dead = true;
            return done(
                rcpts,
                Failure::Died {
                    ip,
                    after_dot: false,
                },
            );
        }
    }
    let reply = match d.read(Stage::AfterDot) {
        Ok(r) => r,
        Err(f) => return done(rcpts, f),
    };
    crate::CRITICAL.store(false, Ordering::SeqCst);
    if reply.code / 100 == 2 {
        let mut text = format!("{ip} accepted message.\n").into_bytes();
        reply.append_said(&mut text);
        return Ok(Outcome::Done {
            rcpts,
            report: Report::accepted(text),
        });
    }
    if reply.code < 400 {
        // A 1xx or 3xx to the dot (RFC 5321 4.3.2 allows only 2xx, 4xx and 5xx) is neither
        // success nor failure: stock qmail takes it as success, so the server may well have
        // stored the message. Deferred, and the retry is flagged as a possible duplicate.
        return done(
            rcpts,
            Failure::BadReply {
                ip,
                stage: Stage::AfterDot,
                after_dot: true,
                what: "no 2xx, 4xx or 5xx code",
            },
        );
    }
    done(
        rcpts,
        Failure::Rejected {
            ip,
            stage: Stage::AfterDot,
            reply,
        },
    )
}

fn rcpt_result(ip: std::net::IpAddr, reply: &Reply) -> (RcptLetter, Vec<u8>) {
    let letter = match reply.code {
        200..=299 => return (RcptLetter::Accepted, Vec::new()),
        500.. => RcptLetter::Rejected,
        _ => RcptLetter::Deferred,
    };
    let mut text = format!("{ip} does not like recipient.\n").into_bytes();
    reply.append_said(&mut text);
    (letter, text)
}
