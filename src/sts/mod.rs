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
use crate::tls::Tls;
use cache::{Cache, Cached, Entry, Failed};
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
        if !applies(peers) || tls.table.forced_domain(domain).is_some() {
            // An override says so in the TLS line of each session.
            return Sts::default();
        }
        discover(cfg, tls.provider(), domain)
    }

    /// In `enforce` mode, keeps only the peers whose MX name the policy lists, or which
    /// MTA-STS does not decide for (`exempt`: [`Tls::sts_exempt`], DANE or an override
    /// line). None left is a `Z`.
    pub fn filter(
        &self,
        peers: Vec<Peer>,
        exempt: impl Fn(&Peer) -> bool,
    ) -> Result<Vec<Peer>, Failure> {
        let Some(active) = &self.active else {
            return Ok(peers);
        };
        if active.policy.mode != Mode::Enforce {
            return Ok(peers);
        }
        let (kept, dropped): (Vec<Peer>, Vec<Peer>) = peers
            .into_iter()
            .partition(|p| p.relay || active.policy.allows(&p.name) || exempt(p));
        if kept.is_empty() {
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
            return Err(Failure::StsNoMx {
                domain: self.domain.clone(),
                hosts: hosts.join(", "),
            });
        }
        Ok(kept)
    }

    /// Adds the `MTA-STS:` line, if any, to the verdict.
    pub fn finish(&self, mut report: Report) -> Report {
        if let Some(line) = &self.line {
            report.push_line(line);
        }
        report
    }
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
    let Some(name) = cache::file_name(domain) else {
        // Not a plain DNS name: no policy can be published for it.
        return Sts::default();
    };
    // Cache problems are reported only for a domain that has MTA-STS: a missing cache
    // directory must not add a line to every other delivery.
    let mut cache_note = None;
    let cache = Cache::open()
        .map_err(|e| cache_note = Some(format!("cache not used: {e}")))
        .ok();
    let entry = cache.as_ref().and_then(|c| {
        c.load(&name)
            .map_err(|e| cache_note = Some(format!("cache not used: {e}")))
            .ok()
            .flatten()
    });
    let mut entry = entry.unwrap_or_default();
    let t = now();
    let Ok(mut dns) = Resolver::from_config() else {
        return Sts::default();
    };
    let mut notes = Vec::new();
    let mut absent = false;
    let live = match dns.txt(format!("_mta-sts.{name}").as_bytes()) {
        Ok(records) => match record::select(&records) {
            Ok(r) => Some(r.id),
            Err(record::RecordError::None) => {
                absent = true;
                None
            }
            Err(e) => {
                notes.push(e.describe());
                None
            }
        },
        Err(DnsError::NxDomain | DnsError::NoData) => {
            absent = true;
            None
        }
        Err(DnsError::Temporary(why)) => {
            notes.push(format!("TXT lookup failed ({why})"));
            None
        }
    };
    let valid = entry.cached.clone().filter(|c| c.expires() > t);
    if live.is_some() || valid.is_some() {
        notes.extend(cache_note);
    }
    if absent && valid.is_some() {
        notes.push("no TXT record now, the cached policy applies until it expires".into());
    }
    let mut fetched_now = false;
    if let Some(id) = &live {
        // A fetch time in the future (a clock set back) never counts as fresh.
        let fresh = valid.as_ref().is_some_and(|c| {
            &c.id == id && c.fetched <= t && t - c.fetched < (c.policy.max_age / 2).min(REFRESH)
        });
        let backed_off = entry
            .failed
            .as_ref()
            .is_some_and(|f| &f.id == id && t.saturating_sub(f.at) < BACKOFF);
        if fresh {
            // The common case: nothing to fetch.
        } else if backed_off {
            notes.push(format!(
                "not fetched: the last attempt failed less than {} minutes ago",
                BACKOFF / 60
            ));
        } else {
            let fetched = fetch_policy(cfg, provider, &mut dns, &name);
            entry = match fetched {
                Ok((text, policy)) => {
                    fetched_now = true;
                    Entry {
                        cached: Some(Cached {
                            id: id.clone(),
                            fetched: t,
                            text,
                            policy,
                        }),
                        failed: None,
                    }
                }
                Err(why) => {
                    notes.push(why);
                    Entry {
                        cached: entry.cached,
                        failed: Some(Failed {
                            at: t,
                            id: id.clone(),
                        }),
                    }
                }
            };
            if let Some(c) = &cache
                && let Err(e) = c.store(&name, &entry)
            {
                notes.push(format!("cache not updated: {e}"));
            }
        }
    }
    // A fresh fetch, else an unexpired cached policy, whatever DNS said (RFC 8461 §5.1).
    let (in_force, origin) = if fetched_now {
        (entry.cached, "fetched")
    } else {
        (valid, "cached")
    };
    summarize(name, live.is_some(), in_force, origin, notes)
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
