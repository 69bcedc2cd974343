//! qremote: a drop-in replacement for qmail's `qmail-remote`.
//!
//! The data path, in the order the modules run: [`args`] (argv bytes to an envelope),
//! [`control`] (qmail home and control files), [`message`] (fd 0, scanned once), [`route`]
//! ([`authsenders`], smtproutes, [`dns`], ipme), [`connect`] (with [`tcpto`]), [`session`]
//! (SMTP over [`conn`], replies from [`reply`], keywords from [`ehlo`], STARTTLS from [`tls`],
//! SMTP AUTH from [`auth`], the body from [`encode`]), and finally [`report`], which writes what qmail-rspawn reads. Every failure is
//! a [`failure::Failure`] with exactly one report.
//!
//! `qremote-probe` (src/bin) asks the same modules instead of delivering: [`session::probe`]
//! stops before MAIL FROM, and [`dns::trace`] records the lookups routing made.
#![forbid(unsafe_code)]

pub mod args;
pub mod auth;
pub mod authsenders;
pub mod base64;
pub mod conn;
pub mod connect;
pub mod control;
pub mod dns;
pub mod ehlo;
pub mod encode;
pub mod failure;
pub mod ipme;
pub mod message;
pub mod reply;
pub mod report;
pub mod route;
pub mod session;
pub mod smtproutes;
pub mod sts;
pub mod tcpto;
pub mod tls;

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};

use args::Envelope;
use control::Config;
use failure::Failure;
use message::Message;
use report::{Report, Reporter};
use session::{Job, Outcome};
use tls::Policy;

/// Set once the block with the final dot has been written, cleared when its reply is read: a
/// crash in between must say "Possible duplicate!".
pub static CRITICAL: AtomicBool = AtomicBool::new(false);

/// Turns any panic into a `Z` report and exit 0 (exit 101 would make qmail-rspawn bounce).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|_| {
        let dup = if CRITICAL.load(Ordering::SeqCst) {
            " Possible duplicate!"
        } else {
            ""
        };
        let report = Report::temp(
            report::Esc(3, 0),
            &format!("qmail-remote internal error.{dup}"),
        );
        Reporter::default().finish(&report)
    }));
}

/// The whole delivery. Returns the recipient reports and the verdict.
pub fn run(args: Vec<OsString>) -> (Reporter, Report) {
    run_with(args, Message::from_stdin)
}

/// [`run`] with the message from `read` instead of fd 0 (`qremote-probe --send`).
pub fn run_with(
    args: Vec<OsString>,
    read: impl FnOnce() -> Result<Message, Failure>,
) -> (Reporter, Report) {
    let mut reporter = Reporter::default();
    let report = match deliver(args, &mut reporter, read) {
        Ok(report) => report,
        Err(f) => f.report(),
    };
    (reporter, report)
}

/// What a delivery does with the next address, decided before connecting.
pub enum Plan {
    /// Enough servers greeted and did not take the message (`control/mxsessionlimit`): stop.
    Stop,
    /// `queue/lock/tcpto` says this address timed out recently: skip it.
    Skip,
    /// Refused without a connection: nothing it could present would be verifiable.
    Refuse(Failure),
    /// Connect, with this TLS policy.
    Connect(Policy),
}

/// The decisions before each connection, in one place for deliveries and `qremote-probe`.
/// `level` replaces the policy's level (`qremote-probe --level`); deliveries pass `None`.
pub fn plan(job: &Job, peer: &route::Peer, level: Option<tls::Level>) -> Plan {
    // Postfix's smtp_mx_session_limit: servers that greeted us and still did not take the
    // message are enough for one attempt (route::peers bounds the addresses).
    if job.cfg.mx_session_limit > 0 && job.greeted >= job.cfg.mx_session_limit {
        return Plan::Stop;
    }
    if tcpto::should_skip(peer.ip) {
        return Plan::Skip;
    }
    let policy = policy_for(job, peer, level);
    // Its TLSA lookup failed: DANE may apply and cannot be checked, so not this MX.
    if let Some(f) = &policy.refused {
        return Plan::Refuse(f.clone());
    }
    // Nothing this peer could say would make it verifiable: refuse without a connection, and
    // try the next one.
    match job.tls.unverifiable(peer, &policy) {
        Some(mut why) => {
            if job.auth.is_some() {
                // Say why: the level may come from the credentials, not from tlspolicy.
                why = format!("{why} (level verify from {})", policy.source);
            }
            Plan::Refuse(Failure::TlsFailed { ip: peer.ip, why })
        }
        None => Plan::Connect(policy),
    }
}

/// The TLS policy [`plan`] connects with.
pub fn policy_for(job: &Job, peer: &route::Peer, level: Option<tls::Level>) -> Policy {
    let mut policy = job.tls.policy(peer, &job.env.host);
    if job.auth.is_some() {
        policy = job.tls.with_credentials(policy, peer);
    }
    if let Some(level) = level {
        policy.level = level;
        policy.source = "qremote-probe --level".into();
    }
    policy
}

fn deliver(
    args: Vec<OsString>,
    reporter: &mut Reporter,
    read: impl FnOnce() -> Result<Message, Failure>,
) -> Result<Report, Failure> {
    let env = Envelope::from_args(args)?;
    control::enter_home()?;
    let cfg = Config::load()?;
    let mut msg = read()?;
    if msg.scan.partial {
        return Err(Failure::PartialFinalLine);
    }
    let route = route::route(&cfg, &env.host, &env.sender);
    let peers = route::peers(&cfg, &env.host, &route)?;
    let mut tls = tls::Tls::load()?;
    // MTA-STS: the recipient domain's policy, before the first connection. An `enforce`
    // policy drops the MX hosts it does not list, unless DANE applies to them (RFC 8461 §2)
    // or an override line decides.
    let sts = sts::Sts::for_delivery(&cfg, &tls, &env.host, &peers);
    let peers = match sts.filter(peers, |p| tls.sts_exempt(p, &env.host)) {
        Ok(peers) => peers,
        Err(f) => return Ok(sts.finish(f.report())),
    };
    tls.set_sts(sts.active.clone());
    let mut job = Job::new(&cfg, &env, &mut msg, &tls);
    job.auth = route.credentials();
    let mut last: Option<(Failure, Option<String>)> = None;
    for peer in &peers {
        let policy = match plan(&job, peer, None) {
            Plan::Stop => break,
            Plan::Skip => continue,
            Plan::Refuse(f) => {
                last = Some((f, None));
                continue;
            }
            Plan::Connect(policy) => policy,
        };
        let greeted_before = job.greeted;
        // Set when a handshake failed at `may` and this address is retried in plaintext.
        let mut tls_failed: Option<String> = None;
        loop {
            let Ok(tcp) = connect::connect(&cfg, peer.ip, peer.port) else {
                if let Some(why) = tls_failed.take() {
                    // The plaintext retry could not connect: keep the TLS reason.
                    last = Some((Failure::TlsFailed { ip: peer.ip, why }, None));
                }
                break;
            };
            let plain_because = tls_failed
                .take()
                .map(|why| format!("TLS failed, retried in plaintext: {why}"));
            match session::run(&mut job, peer, tcp, &policy, plain_because) {
                Outcome::Done { rcpts, report } => {
                    for (letter, text) in rcpts {
                        reporter.recipient(letter, text);
                    }
                    return Ok(sts.finish(report));
                }
                Outcome::Next(f, tls_line) => {
                    last = Some((f, tls_line));
                    break;
                }
                Outcome::RetryPlain(why) => tls_failed = Some(why),
            }
        }
        // The plaintext retry after a failed handshake at `may` is the same attempt: one
        // address, one session.
        job.greeted = job.greeted.min(greeted_before + 1);
    }
    let (failure, tls_line) = last.unwrap_or((Failure::NoConnection, None));
    let mut report = failure.report();
    if let Some(line) = tls_line {
        report.push_line(&line);
    }
    Ok(sts.finish(report))
}
