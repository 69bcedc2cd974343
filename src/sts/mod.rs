//! MTA-STS (RFC 8461) for the recipient domain: the TXT record ([`record`]), the policy file
//! ([`policy`]), the on-disk cache ([`cache`]) and the HTTPS fetch ([`fetch`]), put together
//! by [`discover`] once per delivery, before the first connection.
//!
//! The result, [`Sts`], is one value: the policy in force (if any) and one line for the
//! report. It decides nothing about TLS itself: `lib::deliver` drops the MX hosts an
//! `enforce` policy does not list and DANE does not protect ([`Sts::filter`]), and
//! `tls::policy` turns the policy into a per-peer [`crate::tls::StsVerdict`], where DANE
//! (RFC 8461 §2) and the admin's override lines (`destination:level!` in `control/tlspolicy`)
//! are weighed.

pub mod cache;
pub mod fetch;
pub mod policy;
pub mod record;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;

use crate::control::Config;
use crate::dns::{DnsError, Resolver};
use crate::failure::Failure;
use crate::report::Report;
use crate::route::Peer;
use crate::tls::{Level, Tls};
use cache::{Age, Cache, Cached, Entry, Failed};
pub use policy::{Mode, Policy};

/// A failed fetch is not tried again for the same domain and TXT id before this many seconds.
pub const BACKOFF: u64 = 300;
/// A cached policy is refreshed (when a delivery needs it) once it is older than half its
/// `max_age`, and at least once a day, so it does not run out during an outage (RFC 8461
/// §10.2). A failed refresh keeps the cached policy.
pub const REFRESH: u64 = 86_400;

/// Most MX host names a report lists.
const MAX_NAMED: usize = 5;

/// The policy that applies to this delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub id: String,
    pub policy: Policy,
}

/// What MTA-STS says for this delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sts {
    /// The recipient domain, lowercase.
    pub domain: String,
    /// An `enforce` or `testing` policy in force (never mode `none`).
    pub active: Option<Active>,
    /// The report line, `MTA-STS: ...`; `None` for a domain that publishes nothing.
    pub line: Option<String>,
}

impl Sts {
    /// The MTA-STS state for a delivery to `domain` over `peers`: nothing for `smtproutes`
    /// relays and address literals, nor when an override line (`domain:level!` or
    /// `:level!` in `control/tlspolicy`) decides for the domain; else [`discover`].
    pub fn for_delivery(cfg: &Config, tls: &Tls, domain: &[u8], peers: &[Peer]) -> Sts {
        Sts::traced(cfg, tls, domain, peers, CacheUse::Delivery).0
    }

    /// [`Sts::for_delivery`], with the [`Trace`] of the lookup or why there was none
    /// (`qremote-probe`; `cache` as for [`lookup`]).
    pub fn traced(
        cfg: &Config,
        tls: &Tls,
        domain: &[u8],
        peers: &[Peer],
        cache: CacheUse,
    ) -> (Sts, Result<Trace, Skipped>) {
        if !applies(peers) {
            return (Sts::default(), Err(Skipped::NoMx));
        }
        if let Some((level, what)) = tls.table.forced_domain(domain) {
            // An override says so in the TLS line of each session.
            return (Sts::default(), Err(Skipped::Override(level, what)));
        }
        let (sts, trace) = lookup(cfg, tls.provider(), domain, cache);
        (sts, Ok(trace))
    }

    /// In `enforce` mode, keeps only the peers whose MX name the policy lists, or which
    /// MTA-STS does not decide for (`exempt`: [`Tls::sts_exempt`], DANE or an override
    /// line). None left is a `Z`.
    pub fn filter(
        &self,
        peers: Vec<Peer>,
        exempt: impl Fn(&Peer) -> bool,
    ) -> Result<Vec<Peer>, Failure> {
        let (kept, dropped) = self.split(peers, exempt);
        if kept.is_empty() {
            return Err(self.no_mx(&dropped));
        }
        Ok(kept)
    }

    /// [`Sts::filter`]'s choice: the peers kept, and those an `enforce` policy drops.
    pub fn split(
        &self,
        peers: Vec<Peer>,
        exempt: impl Fn(&Peer) -> bool,
    ) -> (Vec<Peer>, Vec<Peer>) {
        match &self.active {
            Some(active) if active.policy.mode == Mode::Enforce => peers
                .into_iter()
                .partition(|p| p.relay || active.policy.allows(&p.name) || exempt(p)),
            _ => (peers, Vec::new()),
        }
    }

    /// The failure when an `enforce` policy drops every MX host.
    pub fn no_mx(&self, dropped: &[Peer]) -> Failure {
        let mut hosts: Vec<String> = dropped
            .iter()
            .map(|p| crate::report::outsafe(&p.name))
            .collect();
        hosts.dedup();
        let more = hosts.len().saturating_sub(MAX_NAMED);
        hosts.truncate(MAX_NAMED);
        if more > 0 {
            hosts.push(format!("and {more} more"));
        }
        Failure::StsNoMx {
            domain: self.domain.clone(),
            hosts: hosts.join(", "),
        }
    }

    /// Adds the `MTA-STS:` line, if any, to the verdict.
    pub fn finish(&self, mut report: Report) -> Report {
        if let Some(line) = &self.line {
            report.push_line(line);
        }
        report
    }
}

/// Why a delivery does not look MTA-STS up ([`Sts::traced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// No MX is chosen: an `smtproutes` relay or an address literal.
    NoMx,
    /// An override line in `control/tlspolicy` decides for the domain (`domain:level!`,
    /// `"domain"`) or for everything (`:level!`, `"default"`).
    Override(Level, &'static str),
}

/// Does MTA-STS concern this delivery? Only for MX delivery to a domain name (not for
/// `smtproutes` relays or address literals, where no MX is chosen).
pub fn applies(peers: &[Peer]) -> bool {
    peers.iter().any(|p| !p.relay && !p.name.is_empty())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Looks up the domain's policy: TXT record, cache, fetch when needed, cache update. Never
/// fails: any problem means "no policy" (or the cached one) and a note in the report.
pub fn discover(cfg: &Config, provider: &Arc<CryptoProvider>, domain: &[u8]) -> Sts {
    lookup(cfg, provider, domain, CacheUse::Delivery).0
}

/// What [`lookup`] saw and did, step by step. A delivery reports only [`Sts::line`];
/// `qremote-probe` shows all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Unix seconds, when the lookup started.
    pub now: u64,
    pub txt: Txt,
    /// The cache file as read before any fetch.
    pub cache: CacheFile,
    /// A fetch for the published id failed less than [`BACKOFF`] seconds ago: none is tried
    /// before this Unix time.
    pub backoff_until: Option<u64>,
    pub fetch: Fetch,
    pub store: Store,
    /// The policy that applies, mode `none` included: fetched now if [`Trace::fetch`] is
    /// [`Fetch::Fetched`], else from the cache.
    pub in_force: Option<Cached>,
}

/// The `_mta-sts` TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Txt {
    /// A valid record, with its id.
    Published(String),
    /// No record (NXDOMAIN, NODATA, or no TXT string that starts `v=STSv1`).
    Absent,
    /// A record that cannot be used: why.
    Invalid(String),
    /// The lookup failed: why.
    Failed(String),
}

/// The domain's cache file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFile {
    /// The cache directory cannot be used: why.
    Unusable(String),
    /// No file (or, with the cache left unwritten, no directory).
    Absent,
    /// The file cannot be read or parsed: why. Used as if absent, and replaced by a fetch.
    Corrupt(String),
    Found(Entry),
}

/// Whether the policy was fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// No TXT record: nothing to fetch.
    NoRecord,
    /// The cached policy is fresh for the published id.
    NotNeeded,
    /// The last attempt failed too recently ([`Trace::backoff_until`]).
    BackedOff,
    Fetched,
    /// Why (also in the report line).
    Failed(String),
}

/// What became of the cache file after a fetch attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// Nothing was fetched, so nothing to write.
    NotNeeded,
    Written,
    /// The caller asked not to write ([`CacheUse::ReadOnly`]).
    Skipped,
    /// There is no cache directory, and the caller does not create one
    /// ([`CacheUse::Existing`]).
    NoDirectory,
    /// Why not (also in the report line).
    Failed(String),
}

/// How [`lookup`] uses the cache directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Create `mtasts/` when missing, write after each fetch: what a delivery does.
    Delivery,
    /// Write after each fetch, but only into an existing `mtasts/`: `qremote-probe`, often
    /// run as root, must not make a directory the delivery user cannot write to.
    Existing,
    /// Read only (`qremote-probe --no-cache-write`): the next delivery sees the cache as it was.
    ReadOnly,
}

/// [`discover`], also returning its [`Trace`].
pub fn lookup(
    cfg: &Config,
    provider: &Arc<CryptoProvider>,
    domain: &[u8],
    use_cache: CacheUse,
) -> (Sts, Trace) {
    let t = now();
    let mut trace = Trace {
        now: t,
        txt: Txt::Absent,
        cache: CacheFile::Absent,
        backoff_until: None,
        fetch: Fetch::NoRecord,
        store: Store::NotNeeded,
        in_force: None,
    };
    let Some(name) = cache::file_name(domain) else {
        // Not a plain DNS name: no policy can be published for it.
        return (Sts::default(), trace);
    };
    // Cache problems are reported only for a domain that has MTA-STS: a missing cache
    // directory must not add a line to every other delivery.
    let mut cache_note = None;
    let opened = match use_cache {
        CacheUse::Delivery => Cache::open().map(Some),
        CacheUse::Existing | CacheUse::ReadOnly => Cache::open_existing(),
    };
    let cache = opened
        .map_err(|e| {
            cache_note = Some(format!("cache not used: {e}"));
            trace.cache = CacheFile::Unusable(e);
        })
        .ok()
        .flatten();
    let entry = cache.as_ref().and_then(|c| match c.load(&name) {
        Ok(found) => {
            trace.cache = found.clone().map_or(CacheFile::Absent, CacheFile::Found);
            found
        }
        Err(e) => {
            cache_note = Some(format!("cache not used: {e}"));
            trace.cache = CacheFile::Corrupt(e);
            None
        }
    });
    let mut entry = entry.unwrap_or_default();
    let Ok(mut dns) = Resolver::from_config() else {
        return (Sts::default(), trace);
    };
    let mut notes = Vec::new();
    trace.txt = match dns.txt(format!("_mta-sts.{name}").as_bytes()) {
        Ok(records) => match record::select(&records) {
            Ok(r) => Txt::Published(r.id),
            Err(record::RecordError::None) => Txt::Absent,
            Err(e) => Txt::Invalid(e.describe()),
        },
        Err(DnsError::NxDomain | DnsError::NoData) => Txt::Absent,
        Err(DnsError::Temporary(why)) => Txt::Failed(format!("TXT lookup failed ({why})")),
    };
    let live = match &trace.txt {
        Txt::Published(id) => Some(id.clone()),
        Txt::Invalid(why) | Txt::Failed(why) => {
            notes.push(why.clone());
            None
        }
        Txt::Absent => None,
    };
    let valid = entry
        .cached
        .clone()
        .filter(|c| c.age(live.as_deref(), t) != Age::Expired);
    if live.is_some() || valid.is_some() {
        notes.extend(cache_note);
    }
    if trace.txt == Txt::Absent && valid.is_some() {
        notes.push("no TXT record now, the cached policy applies until it expires".into());
    }
    if let Some(id) = &live {
        trace.backoff_until = entry
            .failed
            .as_ref()
            .filter(|f| &f.id == id && t.saturating_sub(f.at) < BACKOFF)
            .map(|f| f.at.saturating_add(BACKOFF));
        trace.fetch = if valid
            .as_ref()
            .is_some_and(|c| c.age(Some(id), t) == Age::Fresh)
        {
            // The common case: nothing to fetch.
            Fetch::NotNeeded
        } else if trace.backoff_until.is_some() {
            notes.push(format!(
                "not fetched: the last attempt failed less than {} minutes ago",
                BACKOFF / 60
            ));
            Fetch::BackedOff
        } else {
            let (fetch, new) = match fetch_policy(cfg, provider, &mut dns, &name) {
                Ok((text, policy)) => (
                    Fetch::Fetched,
                    Entry {
                        cached: Some(Cached {
                            id: id.clone(),
                            fetched: t,
                            text,
                            policy,
                        }),
                        failed: None,
                    },
                ),
                Err(why) => {
                    notes.push(why.clone());
                    let failed = Failed {
                        at: t,
                        id: id.clone(),
                    };
                    (
                        Fetch::Failed(why),
                        Entry {
                            cached: entry.cached,
                            failed: Some(failed),
                        },
                    )
                }
            };
            entry = new;
            trace.store = match &cache {
                _ if use_cache == CacheUse::ReadOnly => Store::Skipped,
                None if trace.cache == CacheFile::Absent => Store::NoDirectory,
                None => Store::Failed("the cache directory cannot be used".into()),
                Some(c) => match c.store(&name, &entry) {
                    Ok(()) => Store::Written,
                    Err(e) => {
                        notes.push(format!("cache not updated: {e}"));
                        Store::Failed(e)
                    }
                },
            };
            fetch
        };
    }
    // A fresh fetch, else an unexpired cached policy, whatever DNS said (RFC 8461 §5.1).
    let (in_force, origin) = if trace.fetch == Fetch::Fetched {
        (entry.cached, "fetched")
    } else {
        (valid, "cached")
    };
    trace.in_force.clone_from(&in_force);
    let sts = summarize(name, live.is_some(), in_force, origin, notes);
    (sts, trace)
}

/// Fetches and parses the policy; the error is the reason for the report.
fn fetch_policy(
    cfg: &Config,
    provider: &Arc<CryptoProvider>,
    dns: &mut Resolver,
    name: &str,
) -> Result<(Vec<u8>, Policy), String> {
    let host = format!("mta-sts.{name}");
    let ips = dns
        .ips(
            host.as_bytes(),
            cfg.addr_pref.wants_v4(),
            cfg.addr_pref.wants_v6(),
        )
        .map_err(|e| match e {
            DnsError::Temporary(why) => {
                format!("policy fetch failed: cannot resolve {host} ({why})")
            }
            _ => format!("policy fetch failed: {host} has no address"),
        })?;
    let ips = crate::route::order(ips, cfg.addr_pref);
    let text =
        fetch::fetch(cfg, provider, name, &ips).map_err(|e| format!("policy fetch failed: {e}"))?;
    let policy = policy::parse_policy(&text).map_err(|e| format!("invalid policy: {e}"))?;
    Ok((text, policy))
}

fn summarize(
    domain: String,
    published: bool,
    in_force: Option<Cached>,
    origin: &str,
    notes: Vec<String>,
) -> Sts {
    let extra = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    let (active, line) = match in_force {
        Some(c) if c.policy.mode == Mode::None => (
            None,
            Some(format!(
                "MTA-STS: the policy of {domain} has mode none (id {}, {origin}{extra}).",
                c.id
            )),
        ),
        Some(c) => {
            let line = format!(
                "MTA-STS: {} policy of {domain} (id {}, {origin}{extra}).",
                c.policy.mode.name(),
                c.id
            );
            (
                Some(Active {
                    id: c.id,
                    policy: c.policy,
                }),
                Some(line),
            )
        }
        None if published || !notes.is_empty() => (
            None,
            Some(format!(
                "MTA-STS: no policy for {domain}: {}.",
                if notes.is_empty() {
                    "none in force".to_string()
                } else {
                    notes.join("; ")
                }
            )),
        ),
        None => (None, None),
    };
    Sts {
        domain,
        active,
        line,
    }
}
