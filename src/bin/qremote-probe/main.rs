//! `qremote-probe`: what qmail-remote would do for a destination, without sending a message.
//! See qremote-probe(1). Everything it decides comes from the qremote library, the code
//! qmail-remote runs: qmail home, control files, smtproutes, DNS, ipme cut, tcpto, TLS policy,
//! connect, greeting, EHLO, STARTTLS, verifier and reports. This file only asks and shows.
//! Unlike qmail-remote it is run by an admin, so it writes to stdout and stderr freely.

mod auth;
mod cert;
mod dane;
mod installed;
mod json;
mod sts;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use qremote::args::Envelope;
use qremote::control::{self, Config};
use qremote::dns::trace::{self, Lookup};
use qremote::dns::{DnsError, Resolver};
use qremote::ehlo::Caps;
use qremote::failure::Failure;
use qremote::message::Message;
use qremote::report::{Letter, Report, outsafe, sanitize};
use qremote::route::{self, Peer};
use qremote::session::{self, Job, ProbeOutcome};
use qremote::smtproutes::{Route, Routes};
use qremote::sts::{CacheUse, Store, Sts};
use qremote::tls::{Anchors, Level, Policy, Tls, Verified};
use qremote::{Plan, connect, tcpto};

use json::Json;

const USAGE: &str = "\
usage: qremote-probe [options] destination

Shows what qmail-remote would do for a destination, using the same qmail home, control
files, routing, DNS, TLS policy and certificate verification, and talks to each peer up to
EHLO after STARTTLS. No MAIL FROM is sent unless --send is given.

destination:
  example.com        a recipient domain, routed as qmail-remote routes it (smtproutes, MX)
  [192.0.2.1]        an IP address literal
  relay.example:587  a relay and port, as if smtproutes routed the destination there

options:
  --all              probe every address (default: stop at the first one that would take
                     the message, as a delivery does)
  --peer IP          probe only this address of the route
  --level LEVEL      use TLS level none, may, encrypt or verify instead of the policy
  --json             one JSON object on stdout, for monitoring
  --sender ADDR      the envelope sender, for control/authsenders (default: <>, the
                     sender of bounces)
  --no-cache-write   read the MTA-STS policy cache but neither create nor update it (by
                     default the probe fetches and caches a policy as a delivery would)
  --send FROM TO     deliver a test message from FROM to TO through the real delivery path
                     (qmail-remote's) and print its reports; the message is generated, or
                     read from stdin with --stdin
  --stdin            with --send: the message is on stdin
  -h, --help         this text
  -V, --version      the version

exit status (Nagios/monitoring-plugins convention):
  0  OK: a delivery would reach MAIL FROM, with TLS verified on every peer probed
     (with --send: the message was accepted)
  1  WARNING: a delivery would reach MAIL FROM, but a probed peer failed or TLS was not
     verified there
  2  CRITICAL: no probed peer would take the message (with --send: deferred or bounced)
  3  UNKNOWN: bad usage, the control files cannot be used, or the output cannot be
     written
";

struct Opts {
    dest: String,
    all: bool,
    peer: Option<IpAddr>,
    level: Option<Level>,
    json: bool,
    no_cache_write: bool,
    sender: Option<String>,
    send: Option<(String, String)>,
    stdin: bool,
}

#[derive(Clone, Copy)]
enum Exit {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

fn parse_args(args: &[String]) -> Result<Option<Opts>, String> {
    let mut opts = Opts {
        dest: String::new(),
        all: false,
        peer: None,
        level: None,
        json: false,
        no_cache_write: false,
        sender: None,
        send: None,
        stdin: false,
    };
    let mut dest = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "-V" | "--version" => {
                println!("qremote-probe {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--all" => opts.all = true,
            "--json" => opts.json = true,
            "--no-cache-write" => opts.no_cache_write = true,
            "--sender" => opts.sender = Some(value("an envelope sender")?),
            "--stdin" => opts.stdin = true,
            "--peer" => {
                let v = value("an IP address")?;
                let ip = route::literal(v.as_bytes())
                    .ok_or_else(|| format!("--peer {v}: not an IP address"))?;
                opts.peer = Some(ip);
            }
            "--level" => {
                let v = value("a level")?;
                opts.level = Some(
                    Level::parse(v.as_bytes())
                        .ok_or_else(|| format!("--level {v}: not none, may, encrypt or verify"))?,
                );
            }
            "--send" => {
                let from = value("a sender and a recipient")?;
                let to = value("a recipient")?;
                opts.send = Some((from, to));
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => {
                if dest.replace(s.to_string()).is_some() {
                    return Err("more than one destination".into());
                }
            }
        }
    }
    opts.dest = dest.ok_or("no destination")?;
    if opts.stdin && opts.send.is_none() {
        return Err("--stdin goes with --send".into());
    }
    if opts.send.is_some() && (opts.all || opts.peer.is_some() || opts.level.is_some()) {
        // A delivery takes no such choice: the test message would go as usual, not as asked.
        return Err(
            "--send delivers as qmail-remote does: not with --all, --peer or --level".into(),
        );
    }
    if opts.sender.is_some() && opts.send.is_some() {
        return Err("--send names its own sender: not with --sender".into());
    }
    if opts.no_cache_write && opts.send.is_some() {
        return Err(
            "--send delivers as qmail-remote does, cache included: not with --no-cache-write"
                .into(),
        );
    }
    Ok(Some(opts))
}

/// `relay:587` or `[2001:db8::1]:2525`: a relay and port given on the command line.
fn relay_form(dest: &str) -> Option<(&str, u16)> {
    let (host, port) = dest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    (bracketed || !host.contains(':')).then_some((host, port))
}

/// A panic (the build aborts on one) would dump core with Rust's message. The usual one is
/// output into a closed pipe (`qremote-probe example.com | head`): println! panics on
/// EPIPE. Either way: one line at most, and UNKNOWN for a monitoring system.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        if !msg.contains("Broken pipe") {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "qremote-probe: internal error: {msg}");
        }
        std::process::exit(Exit::Unknown as i32);
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let opts = match parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("qremote-probe: {e}\n\n{USAGE}");
            return ExitCode::from(Exit::Unknown as u8);
        }
    };
    let code = match &opts.send {
        Some((from, to)) => send(&opts, from, to),
        None => probe(&opts),
    };
    ExitCode::from(code as u8)
}

/// Shows a report as qmail-remote would print it: letter, then the text (NUL left out).
fn report_text(letter: char, text: &[u8]) -> String {
    format!("{letter}{}", String::from_utf8_lossy(&sanitize(text)))
}

fn letter_char(l: Letter) -> char {
    l.byte() as char
}

fn fail_early(opts: &Opts, what: &str, report: &Report) -> Exit {
    let text = report_text(letter_char(report.letter()), report.text());
    if opts.json {
        let mut out = String::new();
        Json::Obj(vec![
            ("destination", Json::str(opts.dest.clone())),
            ("error", Json::str(what)),
            ("report", Json::str(text)),
            ("exit", Json::Num(Exit::Unknown as i64)),
        ])
        .write(&mut out);
        println!("{out}");
    } else {
        println!("{what}: qmail-remote would report:\n  {}", text.trim_end());
    }
    Exit::Unknown
}

/// `--send`: qmail-remote's own delivery, in this process, with a generated message.
fn send(opts: &Opts, from: &str, to: &str) -> Exit {
    if relay_form(&opts.dest).is_some() {
        eprintln!(
            "qremote-probe: --send delivers by the real route: give a domain (route a test domain \
             with control/smtproutes to reach a relay)"
        );
        return Exit::Unknown;
    }
    let args: Vec<OsString> = ["qmail-remote", &opts.dest, from, to]
        .iter()
        .map(OsString::from)
        .collect();
    let stdin = opts.stdin;
    let (reporter, verdict) = qremote::run_with(args, || {
        if stdin {
            Message::from_reader(std::io::stdin().lock())
        } else {
            Message::from_reader(test_message(from, to).as_bytes())
        }
    });
    let rendered = reporter.render(&verdict);
    let reports: Vec<&[u8]> = rendered
        .strip_suffix(b"\0")
        .unwrap_or(&rendered)
        .split(|&b| b == 0)
        .collect();
    let code = match verdict.letter() {
        Letter::K => Exit::Ok,
        Letter::Z | Letter::D => Exit::Critical,
    };
    if opts.json {
        let mut out = String::new();
        Json::Obj(vec![
            ("destination", Json::str(opts.dest.clone())),
            ("sender", Json::str(from)),
            ("recipient", Json::str(to)),
            (
                "reports",
                Json::Arr(
                    reports
                        .iter()
                        .map(|r| Json::str(String::from_utf8_lossy(r)))
                        .collect(),
                ),
            ),
            ("exit", Json::Num(code as i64)),
        ])
        .write(&mut out);
        println!("{out}");
    } else {
        println!("qmail-remote's reports (one per line group, NUL terminators left out):");
        for r in reports {
            // The server's own words are in them: no escape sequence reaches the terminal.
            for line in String::from_utf8_lossy(&sanitize(r)).trim_end().lines() {
                println!("  {line}");
            }
        }
    }
    code
}

fn test_message(from: &str, to: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "From: <{from}>\nTo: <{to}>\nSubject: qremote-probe test message\n\
         Message-ID: <qremote-probe.{now}.{}@{}>\n\n\
         This is a test message sent by qremote-probe --send.\n",
        std::process::id(),
        from.rsplit_once('@').map_or("localhost", |(_, d)| d),
    )
}

/// One connection to one address.
struct Attempt {
    plain_because: Option<String>,
    /// The plaintext retry after a failed handshake at `may`: that failure, which a delivery
    /// reports if the retry cannot connect.
    retry_of: Option<Failure>,
    source: Option<SocketAddr>,
    connect: Result<Duration, String>,
    probe: Option<session::Probe>,
}

/// What [`qremote::plan`] said, for the display.
enum PlanNote {
    Connect,
    /// A delivery stops before this address (`control/mxsessionlimit`).
    Stop,
    /// A delivery refuses this address without connecting: the report.
    Refuse(Report),
    /// The recipient domain's MTA-STS `enforce` policy drops this MX host before any
    /// connection (`Sts::split`): a delivery never uses it.
    Dropped,
}

struct PeerRun {
    peer: Peer,
    policy: Policy,
    /// The policy had the recipient domain no MTA-STS policy: what MTA-STS changed.
    without_sts: Policy,
    dane: dane::Dane,
    tcpto_skip: bool,
    plan: PlanNote,
    attempts: Vec<Attempt>,
    /// Connected to, or refused where a delivery would refuse it: counts for the exit code.
    tried: bool,
}

impl PeerRun {
    /// An MX host the `enforce` policy dropped: never connected to, whatever the options.
    /// Its policy is the one it would have without MTA-STS (no delivery asks for another).
    fn dropped(tls: &Tls, peer: &Peer, domain: &[u8]) -> PeerRun {
        let policy = tls.policy_without_sts(peer, domain);
        PeerRun {
            peer: peer.clone(),
            without_sts: policy.clone(),
            policy,
            // Decided before the drop (Tls::sts_exempt): no second TLSA query.
            dane: dane::Dane::Decided(tls.dane_decision(peer, domain)),
            tcpto_skip: tcpto::should_skip(peer.ip),
            plan: PlanNote::Dropped,
            attempts: Vec::new(),
            tried: false,
        }
    }

    /// The certificate chain the last connection that got one was presented.
    fn certs(&self) -> Option<&[Vec<u8>]> {
        self.attempts
            .iter()
            .rev()
            .filter_map(|a| a.probe.as_ref())
            .find(|p| !p.certs.is_empty())
            .map(|p| p.certs.as_slice())
    }

    fn ready(&self) -> bool {
        self.attempts.last().is_some_and(|a| {
            a.probe
                .as_ref()
                .is_some_and(|p| matches!(p.outcome, ProbeOutcome::Ready(..)))
        })
    }

    fn verified(&self) -> bool {
        self.attempts.last().is_some_and(|a| {
            a.probe.as_ref().is_some_and(|p| {
                p.session
                    .as_ref()
                    .is_some_and(|s| matches!(s.verified, Verified::Yes(_) | Verified::Dane(_)))
            })
        })
    }
}

/// What the route section shows.
struct RouteInfo {
    /// `authsenders`, `smtproutes`, `command line`, `mx` or `literal`.
    kind: &'static str,
    line: Option<usize>,
    /// The authsenders or smtproutes line with any password hidden, or the command-line relay.
    text: Option<String>,
    relay: Option<(String, u16)>,
    /// The envelope sender authsenders was asked about (`--sender`, else `<>`).
    sender: String,
    /// A `sender:` line of control/authsenders that hands this sender over to smtproutes.
    handed_over: Option<usize>,
    /// The user name of the route's credentials (never the password).
    user: Option<String>,
}

/// A control file line for display: a sagredo-style `relay:port|user|password` keeps the user
/// and hides the password (everything after the second `|`, which may itself hold `|`);
/// anything unprintable becomes '?'.
fn mask_credentials(line: &[u8]) -> String {
    let mut parts = line.splitn(3, |&b| b == b'|');
    let mut out = String::from_utf8_lossy(&sanitize(parts.next().unwrap_or_default())).into_owned();
    if let Some(user) = parts.next() {
        out.push('|');
        out.push_str(&String::from_utf8_lossy(&sanitize(user)));
    }
    if parts.next().is_some() {
        out.push_str("|(password hidden)");
    }
    out.replace('\n', "?")
}

/// Line `n` of `control/<file>`, credentials masked.
fn masked_line(file: &str, n: usize) -> Option<String> {
    let raw = control::read_file(file).ok().flatten().unwrap_or_default();
    control::lines(&raw)
        .find(|(i, _)| *i == n)
        .map(|(_, l)| mask_credentials(l))
}

fn route_info(
    cfg: &Config,
    host: &[u8],
    sender: &[u8],
    route: &Route,
    relay: Option<(&str, u16)>,
) -> RouteInfo {
    let relay_of = |r: &Route| match r {
        Route::Relay { host, port, .. } => Some((outsafe(host), *port)),
        Route::Mx => None,
    };
    let by_sender = cfg.authsenders.lookup(sender).is_some();
    let sender_line = cfg.authsenders.matched_line(sender);
    let mut info = RouteInfo {
        kind: "mx",
        line: None,
        text: None,
        relay: None,
        sender: outsafe(sender),
        handed_over: sender_line.filter(|_| !by_sender),
        user: route.credentials().map(|c| outsafe(c.user())),
    };
    if let Some((h, p)) = relay {
        info.kind = "command line";
        info.text = Some(format!("{h}:{p}"));
        info.relay = Some((h.to_string(), p));
    } else if let (true, Some(n)) = (by_sender, sender_line) {
        info.kind = "authsenders";
        info.line = Some(n);
        info.text = masked_line("authsenders", n);
        info.relay = relay_of(route);
    } else if let Some((_, n)) = cfg.routes.matched_line(host) {
        info.kind = "smtproutes";
        info.line = Some(n);
        info.text = masked_line("smtproutes", n);
        info.relay = relay_of(route);
    } else if route::literal(host).is_some() {
        info.kind = "literal";
    }
    info
}

fn dns_error(e: &DnsError) -> String {
    match e {
        DnsError::NxDomain => "NXDOMAIN (no such name)".into(),
        DnsError::NoData => "no records of this type (NODATA)".into(),
        DnsError::Temporary(why) => format!("temporary failure: {why}"),
    }
}

fn anchors_text(a: &Anchors) -> String {
    match a {
        Anchors::Public => {
            if control::exists("tlsca") {
                "webpki roots, then control/tlsca".into()
            } else {
                "webpki roots".into()
            }
        }
        Anchors::File(path) => format!("only {path}"),
        Anchors::Dane(d) => format!("only the TLSA records at {}", d.owner),
    }
}

fn probe(opts: &Opts) -> Exit {
    let home = match control::enter_home() {
        Ok(h) => h,
        Err(f) => return fail_early(opts, "qmail home", &f.report()),
    };
    let mut cfg = match Config::load() {
        Ok(c) => c,
        Err(f) => return fail_early(opts, "control files", &f.report()),
    };
    let relay = relay_form(&opts.dest);
    let host: Vec<u8> = match relay {
        Some((h, p)) => {
            // Exactly what an smtproutes line `:relay:port` would do.
            match Routes::parse(format!(":{h}:{p}\n").as_bytes()) {
                Ok(r) => cfg.routes = r,
                Err(f) => return fail_early(opts, "relay", &f.report()),
            }
            // The relay given decides alone: no sender's authsenders line replaces it.
            cfg.authsenders = Default::default();
            h.as_bytes().to_vec()
        }
        None => opts.dest.as_bytes().to_vec(),
    };
    let sender = opts.sender.as_deref().unwrap_or_default().as_bytes();
    // authsenders by envelope sender, then smtproutes: the delivery's own choice.
    let route = route::route(&cfg, &host, sender);
    let route_info = route_info(&cfg, &host, sender, &route, relay);
    let resolver: Vec<String> = Resolver::from_config()
        .map(|r| r.servers().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    trace::start();
    let peers = route::peers(&cfg, &host, &route);
    let mut lookups = trace::take();
    let mut tls = match Tls::load() {
        Ok(t) => t,
        Err(f) => return fail_early(opts, "control files", &f.report()),
    };
    let mut ctx = Context {
        opts,
        home: home.display().to_string(),
        cfg: &cfg,
        route: route_info,
        resolver,
        installed: installed::check(),
        sts: None,
    };
    let peers = match peers {
        Ok(p) => p,
        Err(f) => {
            let report = f.report();
            return ctx.show(&lookups, &[], Some(&report));
        }
    };
    // MTA-STS as a delivery does it, before the first connection (lib::deliver).
    let cache = if opts.no_cache_write {
        CacheUse::ReadOnly
    } else {
        CacheUse::Existing
    };
    let (found, trace) = Sts::traced(&cfg, &tls, &host, &peers, cache);
    if trace.as_ref().is_ok_and(|t| t.store == Store::Written) {
        sts::give_to_cache_owner(&host);
    }
    // The order routing chose, dropped hosts included: the numbered list shows them in place.
    let routed = peers.clone();
    let (peers, dropped) = found.split(peers, |p| tls.sts_exempt(p, &host));
    let dropped_runs = |tls: &Tls| -> Vec<(usize, PeerRun)> {
        routed
            .iter()
            .enumerate()
            .filter(|(_, p)| dropped.contains(p))
            .map(|(i, p)| (i, PeerRun::dropped(tls, p, &host)))
            .collect()
    };
    let dropped_runs = dropped_runs(&tls);
    tls.set_sts(found.active.clone());
    let no_mx = peers
        .is_empty()
        .then(|| found.finish(found.no_mx(&dropped).report()));
    ctx.sts = Some(sts::View {
        domain: String::from_utf8_lossy(&host).into_owned(),
        sts: found,
        trace,
        dropped,
    });
    if let Some(report) = no_mx {
        lookups.extend(trace::take());
        let runs: Vec<PeerRun> = dropped_runs.into_iter().map(|(_, r)| r).collect();
        return ctx.show(&lookups, &runs, Some(&report));
    }
    let env = Envelope {
        host: host.clone(),
        sender: sender.to_vec(),
        recipients: Vec::new(),
        utf8: false,
    };
    let Ok(mut msg) = Message::from_reader(&b""[..]) else {
        eprintln!("qremote-probe: cannot create a temporary file");
        return Exit::Unknown;
    };
    let mut job = Job::new(&cfg, &env, &mut msg, &tls);
    // Credentials raise the TLS level (see qremote::policy_for); the probe never sends them.
    job.auth = route.credentials();
    if let Some(ip) = opts.peer
        && !peers.iter().any(|p| p.ip == ip)
    {
        let dropped = ctx
            .sts
            .as_ref()
            .is_some_and(|v| v.dropped.iter().any(|p| p.ip == ip));
        if dropped {
            eprintln!("qremote-probe: {ip} is dropped by the domain's MTA-STS enforce policy");
        } else {
            eprintln!("qremote-probe: {ip} is not an address of this route");
        }
        return Exit::Unknown;
    }
    let mut runs: Vec<PeerRun> = Vec::new();
    for peer in &peers {
        // The same decisions as a delivery, in the same order (qremote::plan).
        let plan = qremote::plan(&job, peer, opts.level);
        let delivery_tries = !runs.iter().any(PeerRun::ready)
            && !runs.iter().any(|r| matches!(r.plan, PlanNote::Stop));
        let chosen = match opts.peer {
            Some(ip) => ip == peer.ip,
            None => opts.all || delivery_tries,
        };
        let mut run = PeerRun {
            peer: peer.clone(),
            policy: qremote::policy_for(&job, peer, opts.level),
            without_sts: match opts.level {
                // --level replaces the level either way: MTA-STS changed nothing.
                Some(_) => qremote::policy_for(&job, peer, opts.level),
                None => job.tls.policy_without_sts(peer, &host),
            },
            dane: if job.tls.overridden(peer, &host) {
                dane::Dane::Override
            } else {
                dane::Dane::Decided(job.tls.dane_decision(peer, &host))
            },
            tcpto_skip: tcpto::should_skip(peer.ip),
            plan: PlanNote::Connect,
            attempts: Vec::new(),
            tried: false,
        };
        // --all and --peer connect where a delivery would not (but never to a refused peer).
        let asked = opts.all || opts.peer.is_some();
        let connect = match plan {
            Plan::Refuse(f) => {
                run.plan = PlanNote::Refuse(f.report());
                run.tried = chosen;
                false
            }
            Plan::Stop => {
                if delivery_tries {
                    run.plan = PlanNote::Stop;
                }
                chosen && asked
            }
            Plan::Skip => chosen && asked,
            Plan::Connect(_) => chosen,
        };
        let greeted_before = job.greeted;
        if connect {
            run.attempts = attempts(&mut job, peer, &run.policy);
            run.tried = true;
        }
        // A plaintext retry is the same session for control/mxsessionlimit, as in a delivery.
        job.greeted = job.greeted.min(greeted_before + 1);
        runs.push(run);
    }
    // Back in routing's order: each dropped host where the MX list had it.
    for (i, run) in dropped_runs {
        runs.insert(i.min(runs.len()), run);
    }
    lookups.extend(trace::take());
    ctx.show(&lookups, &runs, None)
}

/// The connections a delivery would make to one address: one, or two when a TLS handshake
/// failed at level `may` and the address is retried in plaintext.
fn attempts(job: &mut Job, peer: &Peer, policy: &Policy) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut plain_because = None;
    let mut retry_of = None;
    loop {
        let start = Instant::now();
        let tcp = match connect::try_connect(job.cfg, peer.ip, peer.port) {
            Ok(t) => t,
            Err(e) => {
                out.push(Attempt {
                    plain_because,
                    retry_of,
                    source: None,
                    connect: Err(e.to_string()),
                    probe: None,
                });
                return out;
            }
        };
        let elapsed = start.elapsed();
        let source = tcp.local_addr().ok();
        let mut p = session::probe(job, peer, tcp, policy, plain_because.clone());
        // A delivery with credentials logs in before MAIL FROM; where it could not, it goes
        // on to the next address (the password itself is only tried by --send).
        if let (Some(creds), ProbeOutcome::Ready(caps, line)) = (job.auth, &p.outcome)
            && let Err(why) = session::auth_mechanism(caps, p.session.is_some())
        {
            let f = Failure::AuthUnavailable {
                ip: peer.ip,
                user: outsafe(creds.user()),
                why,
            };
            p.outcome = ProbeOutcome::Next(f, Some(line.clone()));
        }
        let failed = match &p.outcome {
            ProbeOutcome::RetryPlain(why) => Some(why.clone()),
            _ => None,
        };
        out.push(Attempt {
            plain_because,
            retry_of,
            source,
            connect: Ok(elapsed),
            probe: Some(p),
        });
        match failed {
            Some(why) if out.len() < 2 => {
                plain_because = Some(format!("TLS failed, retried in plaintext: {why}"));
                retry_of = Some(Failure::TlsFailed { ip: peer.ip, why });
            }
            _ => return out,
        }
    }
}

struct Context<'a> {
    opts: &'a Opts,
    home: String,
    cfg: &'a Config,
    route: RouteInfo,
    resolver: Vec<String>,
    /// Whether `bin/qmail-remote` is this build of qremote.
    installed: installed::Installed,
    /// Set once routing found peers.
    sts: Option<sts::View>,
}

fn exit_code(runs: &[PeerRun], route_failure: Option<&Report>) -> Exit {
    if route_failure.is_some() {
        return Exit::Critical;
    }
    let probed: Vec<&PeerRun> = runs.iter().filter(|r| r.tried).collect();
    if !probed.iter().any(|r| r.ready()) {
        return Exit::Critical;
    }
    if probed.iter().all(|r| r.ready() && r.verified()) {
        Exit::Ok
    } else {
        Exit::Warning
    }
}

/// What the whole delivery would come to, from the addresses in order, as lib::deliver
/// decides it.
enum Delivery {
    /// It sends MAIL FROM to this address.
    MailFrom(IpAddr),
    /// It ends with this report (letter and text): the last failure it recorded.
    Report(String),
    /// An address a delivery would connect to was not probed (`--peer`).
    Unknown,
}

fn delivery(runs: &[PeerRun], sts: Option<&Sts>) -> Delivery {
    let finish = |r: Report| {
        let r = match sts {
            Some(s) => s.finish(r),
            None => r,
        };
        report_text(letter_char(r.letter()), r.text())
    };
    let mut last: Option<String> = None;
    for run in runs {
        match &run.plan {
            PlanNote::Dropped => continue,
            PlanNote::Stop => break,
            PlanNote::Refuse(f) => {
                last = Some(finish(f.clone()));
                continue;
            }
            PlanNote::Connect if run.tcpto_skip => continue,
            PlanNote::Connect => {}
        }
        let Some(a) = run.attempts.last() else {
            return Delivery::Unknown;
        };
        match (&a.connect, verdict(a, sts)) {
            (_, ("ready", _, _)) => return Delivery::MailFrom(run.peer.ip),
            // A connection that failed leaves the last report standing, unless it was the
            // plaintext retry after a failed handshake (whose failure the report names).
            (Err(_), _) if a.retry_of.is_none() => {}
            (_, (_, Some(report), _)) => last = Some(report),
            (_, (_, None, _)) => {}
        }
    }
    Delivery::Report(last.unwrap_or_else(|| finish(Failure::NoConnection.report())))
}

/// What a delivery would do after this attempt (`ready`, `next`, `retry-plaintext`,
/// `no-connection`), the report it would print if this address were the last one tried, and
/// the `TLS:` line. `sts` adds the `MTA-STS:` line, as a delivery does to its last report.
fn verdict(a: &Attempt, sts: Option<&Sts>) -> (&'static str, Option<String>, Option<String>) {
    let finish = |r: Report| match sts {
        Some(s) => s.finish(r),
        None => r,
    };
    match (&a.connect, &a.probe) {
        (Err(_), _) => {
            // As lib::deliver: a plaintext retry that cannot connect keeps the TLS reason.
            let f = a.retry_of.clone().unwrap_or(Failure::NoConnection);
            let r = finish(f.report());
            (
                "no-connection",
                Some(report_text(letter_char(r.letter()), r.text())),
                None,
            )
        }
        (Ok(_), Some(p)) => match &p.outcome {
            ProbeOutcome::Ready(_, line) => ("ready", None, Some(line.clone())),
            ProbeOutcome::Next(f, line) => {
                let mut r = f.report();
                if let Some(l) = line {
                    r.push_line(l);
                }
                let r = finish(r);
                (
                    "next",
                    Some(report_text(letter_char(r.letter()), r.text())),
                    line.clone(),
                )
            }
            ProbeOutcome::RetryPlain(why) => (
                "retry-plaintext",
                Some(format!("TLS handshake failed at level may: {why}")),
                None,
            ),
        },
        (Ok(_), None) => ("unknown", None, None),
    }
}

fn reply_lines(r: &qremote::reply::Reply) -> Vec<String> {
    String::from_utf8_lossy(&sanitize(&r.text))
        .lines()
        .map(str::to_string)
        .collect()
}

impl Context<'_> {
    fn found(&self) -> Option<&Sts> {
        self.sts.as_ref().map(|v| &v.sts)
    }

    fn show(&self, lookups: &[Lookup], runs: &[PeerRun], failure: Option<&Report>) -> Exit {
        let code = exit_code(runs, failure);
        if self.opts.json {
            let mut out = String::new();
            self.json(lookups, runs, failure, &code).write(&mut out);
            println!("{out}");
        } else {
            self.text(lookups, runs, failure, &code);
        }
        code
    }

    /// Why the MTA-STS `enforce` policy drops this MX host (see [`PlanNote::Dropped`]).
    fn drop_reason(&self, run: &PeerRun) -> String {
        let sts = self.found();
        let domain = sts.map_or(String::new(), |s| s.domain.clone());
        let (id, mx) = sts
            .and_then(|s| s.active.as_ref())
            .map(|a| {
                let mx: Vec<String> = a.policy.mx.iter().map(|p| p.text()).collect();
                (a.id.clone(), mx.join(", "))
            })
            .unwrap_or_default();
        format!(
            "the enforce policy of {domain} (id {id}, mx: {mx}) does not list {}, and neither \
             DANE nor an override line in control/tlspolicy applies to it: a delivery never \
             connects to it (RFC 8461 section 4.1)",
            outsafe(&run.peer.name)
        )
    }

    /// The numbered list of addresses, with what a delivery does before connecting to each.
    fn address_list(&self, runs: &[PeerRun]) {
        println!("addresses, in the order qmail-remote would try them:");
        for (i, run) in runs.iter().enumerate() {
            if matches!(run.plan, PlanNote::Dropped) {
                println!(
                    "  {}. {}  not used: dropped by the MTA-STS enforce policy",
                    i + 1,
                    peer_text(&run.peer)
                );
                println!("     {}", self.drop_reason(run));
                continue;
            }
            println!(
                "  {}. {}  TLS policy: {} from {}{}",
                i + 1,
                peer_text(&run.peer),
                run.policy.level.name(),
                run.policy.source,
                if run.tcpto_skip {
                    "  (skipped: recent connect timeouts in queue/lock/tcpto)"
                } else {
                    ""
                }
            );
            match &run.plan {
                PlanNote::Connect => {}
                PlanNote::Stop => println!(
                    "     a delivery stops before this address: {} servers greeted and did not \
                 take the message (control/mxsessionlimit)",
                    self.cfg.mx_session_limit
                ),
                PlanNote::Refuse(r) => println!(
                    "     a delivery refuses it without connecting: {}",
                    report_text(letter_char(r.letter()), r.text()).trim_end()
                ),
                PlanNote::Dropped => {}
            }
        }
        if runs.iter().any(|r| !r.peer.relay && r.peer.pref > 0)
            && runs
                .windows(2)
                .any(|w| w[0].peer.pref == w[1].peer.pref && w[0].peer.name != w[1].peer.name)
        {
            println!("  (MX hosts of equal preference are shuffled for each delivery)");
        }
    }

    fn text(&self, lookups: &[Lookup], runs: &[PeerRun], failure: Option<&Report>, code: &Exit) {
        let cfg = self.cfg;
        println!("destination: {}", self.opts.dest);
        println!("qmail home: {}", self.home);
        println!("helohost: {}", outsafe(&cfg.helohost));
        println!("qmail-remote: {}", self.installed.text());
        println!(
            "timeouts: connect {} s, remote {} s",
            cfg.timeout_connect.as_secs(),
            cfg.timeout_remote.as_secs()
        );
        let src: Vec<String> = cfg.outgoing.iter().map(ToString::to_string).collect();
        println!(
            "source address: {}",
            if src.is_empty() {
                "chosen by the kernel (no control/outgoingip)".to_string()
            } else {
                format!("{} (control/outgoingip)", src.join(", "))
            }
        );
        let r = &self.route;
        if self.opts.sender.is_some() || control::exists("authsenders") {
            println!(
                "envelope sender: <{}>{}",
                r.sender,
                if self.opts.sender.is_some() {
                    ""
                } else {
                    " (control/authsenders routes by sender: give --sender)"
                }
            );
        }
        if let Some(n) = r.handed_over {
            println!(
                "control/authsenders line {n}: {} (this sender is routed by smtproutes)",
                masked_line("authsenders", n).unwrap_or_default()
            );
        }
        match r.kind {
            "authsenders" => println!(
                "route: control/authsenders line {}: {} (relay {}, no MX lookup)",
                r.line.unwrap_or(0),
                r.text.as_deref().unwrap_or("?"),
                r.relay
                    .as_ref()
                    .map_or("?".into(), |(h, p)| format!("{h} port {p}"))
            ),
            "smtproutes" => println!(
                "route: control/smtproutes line {}: {}{}",
                r.line.unwrap_or(0),
                r.text.as_deref().unwrap_or("?"),
                match &r.relay {
                    Some((h, p)) => format!(" (relay {h} port {p}, no MX lookup)"),
                    None => " (empty relay: MX lookup as usual)".into(),
                }
            ),
            "command line" => println!(
                "route: relay {} given on the command line (as an smtproutes entry would)",
                r.text.as_deref().unwrap_or("?")
            ),
            "literal" => println!("route: IP address literal (no smtproutes entry, no DNS)"),
            _ => println!("route: MX lookup (no smtproutes entry)"),
        }
        if let Some(user) = &r.user {
            println!(
                "credentials: user {user}, password not shown; a delivery logs in after \
                 STARTTLS and requires TLS it can verify"
            );
        }
        if !lookups.is_empty() {
            println!("DNS (resolver {}):", self.resolver.join(", "));
        }
        for l in lookups {
            let mut line = format!("  {} {}", l.qtype, outsafe(&l.name));
            for c in &l.cnames {
                line.push_str(&format!(" -> CNAME {}", outsafe(c)));
            }
            match &l.result {
                Ok(records) => {
                    line.push_str(&format!(": {}", records.join(", ")));
                    line.push_str(if l.ad {
                        " [DNSSEC: secure, AD=1]"
                    } else {
                        " [DNSSEC: not validated, AD=0]"
                    });
                }
                Err(e) => line.push_str(&format!(": {}", dns_error(e))),
            }
            println!("{line}");
        }
        if let Some(v) = &self.sts {
            v.text();
        }
        if failure.is_some() && !runs.is_empty() {
            // Every MX host dropped by MTA-STS: still say which and why.
            self.address_list(runs);
        }
        if let Some(f) = failure {
            println!("no address to try; qmail-remote would report:");
            for l in report_text(letter_char(f.letter()), f.text())
                .trim_end()
                .lines()
            {
                println!("  {l}");
            }
            println!("result: {}", exit_name(code));
            return;
        }
        self.address_list(runs);
        for run in runs.iter().filter(|r| !r.attempts.is_empty()) {
            println!();
            println!("peer {}", peer_text(&run.peer));
            println!(
                "  TLS policy: {} from {}; trust anchors: {}",
                run.policy.level.name(),
                run.policy.source,
                anchors_text(&run.policy.anchors)
            );
            if let Some(line) = sts::peer_text(run, self.found()) {
                println!("  {line}");
            }
            if let Some(line) = dane::dnssec_text(&run.peer) {
                println!("  {line}");
            }
            for line in dane::text(&run.dane, &run.peer, run.certs()) {
                println!("  {line}");
            }
            for a in &run.attempts {
                show_attempt(
                    a,
                    self.found(),
                    run.policy.dane().is_some(),
                    self.route.user.as_deref(),
                );
            }
        }
        let unprobed = runs
            .iter()
            .filter(|r| !r.tried && !r.tcpto_skip && matches!(r.plan, PlanNote::Connect))
            .count();
        if unprobed > 0 && self.opts.peer.is_none() {
            println!();
            println!(
                "{unprobed} address(es) not probed: a delivery would not get to them (--all \
                 probes every address)"
            );
        }
        println!();
        match delivery(runs, self.found()) {
            Delivery::MailFrom(ip) => println!("a delivery would send MAIL FROM to {ip}"),
            Delivery::Report(r) => {
                println!("a delivery would end with this report:");
                for l in r.trim_end().lines() {
                    println!("  {l}");
                }
            }
            Delivery::Unknown => {
                println!("a delivery: not known (an address it would try was not probed)")
            }
        }
        println!("result: {}", exit_name(code));
    }

    fn json(
        &self,
        lookups: &[Lookup],
        runs: &[PeerRun],
        failure: Option<&Report>,
        code: &Exit,
    ) -> Json {
        let cfg = self.cfg;
        let r = &self.route;
        let route = Json::Obj(vec![
            ("kind", Json::str(r.kind)),
            ("sender", Json::str(r.sender.clone())),
            (
                "authsenders_handover",
                r.handed_over.map_or(Json::Null, |n| Json::Num(n as i64)),
            ),
            ("user", Json::opt_str(r.user.clone())),
            ("line", r.line.map_or(Json::Null, |n| Json::Num(n as i64))),
            ("text", Json::opt_str(r.text.clone())),
            (
                "relay",
                Json::opt_str(r.relay.as_ref().map(|(h, _)| h.clone())),
            ),
            (
                "port",
                r.relay
                    .as_ref()
                    .map_or(Json::Null, |(_, p)| Json::Num(i64::from(*p))),
            ),
        ]);
        let dns = lookups
            .iter()
            .map(|l| {
                Json::Obj(vec![
                    ("name", Json::str(outsafe(&l.name))),
                    ("type", Json::str(l.qtype.clone())),
                    (
                        "cnames",
                        Json::Arr(l.cnames.iter().map(|c| Json::str(outsafe(c))).collect()),
                    ),
                    ("ad", Json::Bool(l.ad)),
                    (
                        "records",
                        Json::Arr(
                            l.result
                                .as_ref()
                                .map(|r| r.iter().map(|s| Json::str(s.clone())).collect())
                                .unwrap_or_default(),
                        ),
                    ),
                    (
                        "error",
                        Json::opt_str(l.result.as_ref().err().map(dns_error)),
                    ),
                ])
            })
            .collect();
        let peers = runs
            .iter()
            .map(|run| {
                Json::Obj(vec![
                    ("ip", Json::str(run.peer.ip.to_string())),
                    ("port", Json::Num(i64::from(run.peer.port))),
                    ("name", Json::str(outsafe(&run.peer.name))),
                    ("preference", Json::Num(i64::from(run.peer.pref))),
                    ("relay", Json::Bool(run.peer.relay)),
                    ("tcpto_skip", Json::Bool(run.tcpto_skip)),
                    (
                        "policy",
                        Json::Obj(vec![
                            ("level", Json::str(run.policy.level.name())),
                            ("source", Json::str(run.policy.source.clone())),
                            ("anchors", Json::str(anchors_text(&run.policy.anchors))),
                        ]),
                    ),
                    ("mta_sts", sts::peer_json(run, self.found())),
                    ("dnssec", dane::dnssec_json(&run.peer)),
                    ("dane", dane::json(&run.dane, &run.peer, run.certs())),
                    ("probed", Json::Bool(!run.attempts.is_empty())),
                    (
                        "plan",
                        Json::str(match run.plan {
                            PlanNote::Connect => "connect",
                            PlanNote::Stop => "stop",
                            PlanNote::Refuse(_) => "refuse",
                            PlanNote::Dropped => "mta-sts-drop",
                        }),
                    ),
                    (
                        "dropped_because",
                        Json::opt_str(
                            matches!(run.plan, PlanNote::Dropped).then(|| self.drop_reason(run)),
                        ),
                    ),
                    (
                        "refusal",
                        Json::opt_str(match &run.plan {
                            PlanNote::Refuse(r) => {
                                Some(report_text(letter_char(r.letter()), r.text()))
                            }
                            _ => None,
                        }),
                    ),
                    (
                        "attempts",
                        Json::Arr(
                            run.attempts
                                .iter()
                                .map(|a| attempt_json(a, self.found(), self.route.user.as_deref()))
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect();
        Json::Obj(vec![
            ("destination", Json::str(self.opts.dest.clone())),
            ("qmail_home", Json::str(self.home.clone())),
            ("helohost", Json::str(outsafe(&cfg.helohost))),
            ("qmail_remote", self.installed.json()),
            (
                "resolver",
                Json::Arr(self.resolver.iter().map(|s| Json::str(s.clone())).collect()),
            ),
            ("route", route),
            ("dns", Json::Arr(dns)),
            (
                "mta_sts",
                self.sts.as_ref().map_or(Json::Null, sts::View::json),
            ),
            (
                "route_failure",
                Json::opt_str(failure.map(|f| report_text(letter_char(f.letter()), f.text()))),
            ),
            ("peers", Json::Arr(peers)),
            (
                "delivery",
                match (failure, delivery(runs, self.found())) {
                    (Some(f), _) => Json::Obj(vec![
                        ("outcome", Json::str("report")),
                        ("ip", Json::Null),
                        (
                            "report",
                            Json::str(report_text(letter_char(f.letter()), f.text())),
                        ),
                    ]),
                    (None, Delivery::MailFrom(ip)) => Json::Obj(vec![
                        ("outcome", Json::str("mail-from")),
                        ("ip", Json::str(ip.to_string())),
                        ("report", Json::Null),
                    ]),
                    (None, Delivery::Report(r)) => Json::Obj(vec![
                        ("outcome", Json::str("report")),
                        ("ip", Json::Null),
                        ("report", Json::str(r)),
                    ]),
                    (None, Delivery::Unknown) => Json::Obj(vec![
                        ("outcome", Json::str("unknown")),
                        ("ip", Json::Null),
                        ("report", Json::Null),
                    ]),
                },
            ),
            ("status", Json::str(exit_name(code))),
            ("exit", Json::Num(*code as i64)),
        ])
    }
}

fn exit_name(code: &Exit) -> &'static str {
    match code {
        Exit::Ok => "OK",
        Exit::Warning => "WARNING",
        Exit::Critical => "CRITICAL",
        Exit::Unknown => "UNKNOWN",
    }
}

fn peer_text(p: &Peer) -> String {
    let name = if p.name.is_empty() {
        "no name".to_string()
    } else {
        outsafe(&p.name)
    };
    let why = if p.relay {
        "smtproutes relay".to_string()
    } else if p.name.is_empty() {
        "IP literal".to_string()
    } else {
        format!("MX {}", p.pref)
    };
    let ip = match p.ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    format!("{ip}:{} ({name}, {why})", p.port)
}

/// `dane`: the policy authenticates by TLSA records (whose verifier refuses at any level).
/// `user`: the user name of the route's credentials.
fn show_attempt(a: &Attempt, sts: Option<&Sts>, dane: bool, user: Option<&str>) {
    if let Some(why) = &a.plain_because {
        println!("  new connection without STARTTLS, as a delivery would ({why})");
    }
    match &a.connect {
        Err(e) => println!("  connect: failed: {e}"),
        Ok(t) => println!(
            "  connect: from {} in {} ms",
            a.source.map_or("?".into(), |s| s.ip().to_string()),
            t.as_millis()
        ),
    }
    if let Some(p) = &a.probe {
        if let Some(g) = &p.greeting {
            println!("  greeting:");
            reply_lines(g).iter().for_each(|l| println!("    {l}"));
        }
        for (i, e) in p.ehlo.iter().enumerate() {
            let when = if i == 0 { "" } else { " after STARTTLS" };
            println!("  EHLO reply{when}:");
            reply_lines(e).iter().for_each(|l| println!("    {l}"));
        }
        if let Some(s) = &p.session {
            println!("  TLS: {} with {}", s.version, s.cipher);
        }
        for (i, c) in p.certs.iter().enumerate() {
            show_cert(i, c);
        }
        if let Some(s) = &p.session {
            match &s.verified {
                Verified::Yes(by) => println!("  verification: verified as {} by {by}", s.name),
                Verified::Dane(how) => println!("  verification: verified by {how} for {}", s.name),
                Verified::No(why) => println!("  verification: failed: {why}"),
            }
            for (source, result) in &s.checks {
                match result {
                    Ok(by) if by == source => println!("    {source}: verified"),
                    Ok(by) => println!("    {source}: verified ({by})"),
                    Err(why) => println!("    {source}: {why}"),
                }
            }
        }
    }
    if let Some(p) = &a.probe
        && !p.ehlo.is_empty()
    {
        for line in auth::text(&auth::view(p, user), user) {
            println!("  {line}");
        }
    }
    let (state, report, line) = verdict(a, sts);
    if let Some(l) = &line {
        println!("  report line: {l}");
    }
    match state {
        "ready" => println!("  => a delivery would send MAIL FROM here"),
        "retry-plaintext" => println!(
            "  => {} (a delivery closes this connection and retries in plaintext)",
            report.unwrap_or_default()
        ),
        _ => {
            if a.probe.as_ref().is_some_and(|p| {
                p.certs.is_empty()
                    && matches!(p.outcome, ProbeOutcome::Next(Failure::TlsFailed { .. }, _))
            }) {
                if dane {
                    println!(
                        "  (no certificate to show: DANE refused the handshake, at any level)"
                    );
                } else {
                    println!(
                        "  (no certificate to show: the handshake was refused; --level may shows \
                         it)"
                    );
                }
            }
            println!(
                "  => a delivery would try the next address; if this one is the last, it reports:"
            );
            for l in report.unwrap_or_default().trim_end().lines() {
                println!("     {l}");
            }
        }
    }
}

fn cert_validity(c: &cert::CertInfo) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if now > c.not_after_unix {
        "EXPIRED"
    } else if now < c.not_before_unix {
        "NOT YET VALID"
    } else {
        "valid now"
    }
}

fn show_cert(i: usize, der: &[u8]) {
    match cert::parse(der) {
        Ok(c) => {
            println!("  certificate {i}:");
            println!("    subject: {}", c.subject);
            if !c.sans.is_empty() {
                println!("    names: {}", c.sans.join(", "));
            }
            println!("    issuer: {}", c.issuer);
            println!(
                "    valid: {} to {} ({})",
                c.not_before,
                c.not_after,
                cert_validity(&c)
            );
            println!("    SPKI SHA-256: {}", c.spki_sha256);
        }
        Err(e) => println!("  certificate {i}: cannot be shown ({e})"),
    }
}

fn cert_json(der: &[u8]) -> Json {
    match cert::parse(der) {
        Ok(c) => Json::Obj(vec![
            ("subject", Json::str(c.subject.clone())),
            (
                "names",
                Json::Arr(c.sans.iter().map(|s| Json::str(s.clone())).collect()),
            ),
            ("issuer", Json::str(c.issuer.clone())),
            ("not_before", Json::str(c.not_before.clone())),
            ("not_after", Json::str(c.not_after.clone())),
            ("validity", Json::str(cert_validity(&c))),
            ("spki_sha256", Json::str(c.spki_sha256.clone())),
        ]),
        Err(e) => Json::Obj(vec![("error", Json::str(e))]),
    }
}

fn attempt_json(a: &Attempt, sts: Option<&Sts>, user: Option<&str>) -> Json {
    let (state, report, line) = verdict(a, sts);
    let p = a.probe.as_ref();
    let tls = p.and_then(|p| p.session.as_ref()).map_or(Json::Null, |s| {
        let (ok, detail) = match &s.verified {
            Verified::Yes(by) | Verified::Dane(by) => (true, by.clone()),
            Verified::No(why) => (false, why.clone()),
        };
        Json::Obj(vec![
            ("version", Json::str(s.version.clone())),
            ("cipher", Json::str(s.cipher.clone())),
            ("verified", Json::Bool(ok)),
            ("dane", Json::Bool(matches!(s.verified, Verified::Dane(_)))),
            ("verified_as", Json::str(s.name.clone())),
            (if ok { "verified_by" } else { "error" }, Json::str(detail)),
            (
                "checks",
                Json::Arr(
                    s.checks
                        .iter()
                        .map(|(source, result)| {
                            Json::Obj(vec![
                                ("source", Json::str(source.clone())),
                                ("verified", Json::Bool(result.is_ok())),
                                ("error", Json::opt_str(result.clone().err())),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    });
    // STARTTLS is offered (or not) in the first EHLO reply, before any TLS.
    let caps = p.and_then(|p| p.ehlo.first()).map(Caps::parse);
    Json::Obj(vec![
        ("plaintext_because", Json::opt_str(a.plain_because.clone())),
        (
            "source",
            Json::opt_str(a.source.map(|s| s.ip().to_string())),
        ),
        (
            "connect_ms",
            a.connect
                .as_ref()
                .map_or(Json::Null, |d| Json::Num(d.as_millis() as i64)),
        ),
        (
            "connect_error",
            Json::opt_str(a.connect.as_ref().err().cloned()),
        ),
        (
            "greeting",
            p.and_then(|p| p.greeting.as_ref()).map_or(Json::Null, |r| {
                Json::Arr(reply_lines(r).into_iter().map(Json::Str).collect())
            }),
        ),
        (
            "ehlo",
            Json::Arr(p.map_or(Vec::new(), |p| {
                p.ehlo
                    .iter()
                    .map(|r| Json::Arr(reply_lines(r).into_iter().map(Json::Str).collect()))
                    .collect()
            })),
        ),
        (
            "starttls_offered",
            caps.map_or(Json::Null, |c| Json::Bool(c.starttls)),
        ),
        ("tls", tls),
        (
            "certificates",
            Json::Arr(p.map_or(Vec::new(), |p| {
                p.certs.iter().map(|c| cert_json(c)).collect()
            })),
        ),
        (
            "auth",
            p.filter(|p| !p.ehlo.is_empty())
                .map_or(Json::Null, |p| auth::json(&auth::view(p, user))),
        ),
        ("tls_line", Json::opt_str(line)),
        ("state", Json::str(state)),
        ("report", Json::opt_str(report)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            mask_credentials(b"a.example:relay:587|alice|s3cret|x"),
            "a.example:relay:587|alice|(password hidden)"
        );
        assert_eq!(mask_credentials(b"a:relay:25"), "a:relay:25");
    }

    /// A run for [`delivery`]: the address 192.0.2.N, with `plan` and `attempts`.
    fn run(n: u8, plan: PlanNote, attempts: Vec<Attempt>) -> PeerRun {
        let policy = Policy::public(Level::May, "default");
        PeerRun {
            peer: Peer {
                name: format!("mx{n}.example").into_bytes(),
                ip: IpAddr::from([192, 0, 2, n]),
                port: 25,
                pref: u32::from(n),
                relay: false,
                mx_ad: false,
                addr_ad: false,
                expanded: None,
            },
            without_sts: policy.clone(),
            policy,
            dane: dane::Dane::Override,
            tcpto_skip: false,
            plan,
            tried: !attempts.is_empty(),
            attempts,
        }
    }

    fn refused_connection() -> Attempt {
        Attempt {
            plain_because: None,
            retry_of: None,
            source: None,
            connect: Err("connection refused".into()),
            probe: None,
        }
    }

    #[test]
    fn a_delivery_keeps_the_last_report_when_a_later_address_cannot_be_reached() {
        let refusal = Failure::TlsFailed {
            ip: IpAddr::from([192, 0, 2, 1]),
            why: "it has no host name to verify".into(),
        }
        .report();
        let expected = report_text('Z', refusal.text());
        let runs = [
            run(1, PlanNote::Refuse(refusal), Vec::new()),
            run(2, PlanNote::Connect, vec![refused_connection()]),
        ];
        match delivery(&runs, None) {
            Delivery::Report(r) => assert_eq!(r, expected),
            _ => panic!("a report expected"),
        }
        // Nothing but connections that failed: qmail's "no connection".
        let runs = [run(1, PlanNote::Connect, vec![refused_connection()])];
        match delivery(&runs, None) {
            Delivery::Report(r) => assert!(r.starts_with("ZSorry, I wasn't able"), "{r}"),
            _ => panic!("a report expected"),
        }
        // An address a delivery would reach that was not probed (--peer): not known.
        let runs = [
            run(1, PlanNote::Connect, vec![refused_connection()]),
            run(2, PlanNote::Connect, Vec::new()),
        ];
        assert!(matches!(delivery(&runs, None), Delivery::Unknown));
    }

    #[test]
    fn relay_forms() {
        assert_eq!(
            relay_form("relay.example:587"),
            Some(("relay.example", 587))
        );
        assert_eq!(relay_form("[::1]:2525"), Some(("[::1]", 2525)));
        assert_eq!(relay_form("example.com"), None);
        assert_eq!(relay_form("[::1]"), None);
        assert_eq!(relay_form("::1"), None);
    }
}
