//! The MTA-STS part of the probe: what `qremote::sts::lookup` saw and did for the recipient
//! domain (TXT record, cache file, back-off, fetch, cache write, policy in force, MX hosts
//! dropped), and per peer what the policy did to its TLS level. Display only: every decision
//! is the library's, made as in a delivery.

use qremote::report::outsafe;
use qremote::route::Peer;
use qremote::sts::cache::{Age, Cached, DIR, Entry, file_name};
use qremote::sts::{CacheFile, Fetch, Skipped, Store, Sts, Trace, Txt};
use qremote::tls::StsVerdict;

use crate::json::Json;
use crate::{PeerRun, PlanNote};

/// The MTA-STS state of one probe.
pub struct View {
    /// The destination as routed (the recipient domain).
    pub domain: String,
    pub sts: Sts,
    pub trace: Result<Trace, Skipped>,
    /// The MX hosts an `enforce` policy drops (not listed, no override).
    pub dropped: Vec<Peer>,
}

/// A span of seconds for a reader: `45 s`, `12 min`, `11 h 59 min`, `3 d 4 h`.
fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `in 3 h 0 min` or `2 min ago`, from `now` to the Unix time `at`.
fn when(at: u64, now: u64) -> String {
    if at == now {
        "now".into()
    } else if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

fn live_id(trace: &Trace) -> Option<&str> {
    match &trace.txt {
        Txt::Published(id) => Some(id),
        _ => None,
    }
}

fn age_key(age: Age) -> &'static str {
    match age {
        Age::Fresh => "fresh",
        Age::Stale => "stale",
        Age::NewId => "new-id",
        Age::Expired => "expired",
    }
}

fn pattern_list(c: &Cached) -> Vec<String> {
    c.policy.mx.iter().map(|p| p.text()).collect()
}

fn dropped_text(p: &Peer) -> String {
    format!("{} ({})", outsafe(&p.name), p.ip)
}

fn skipped_text(s: &Skipped) -> String {
    match s {
        Skipped::NoMx => "not looked up: no MX is chosen for an smtproutes relay or an \
                          address literal"
            .into(),
        Skipped::Override(level, what) => format!(
            "not looked up: control/tlspolicy has an override line ({}!) for the {what}",
            level.name()
        ),
    }
}

impl View {
    fn file(&self) -> String {
        format!("{DIR}/{}", self.domain.to_ascii_lowercase())
    }

    fn cache_text(&self, t: &Trace) -> String {
        match &t.cache {
            CacheFile::Unusable(why) => format!("not usable: {why}"),
            CacheFile::Absent => "absent".into(),
            CacheFile::Corrupt(why) => {
                format!("corrupt: {why} (used as absent; a fetch replaces it)")
            }
            CacheFile::Found(Entry { cached, failed }) => {
                let mut parts = Vec::new();
                if let Some(c) = cached {
                    parts.push(format!(
                        "policy id {} fetched {}: {} (refresh due {}, expires {})",
                        c.id,
                        when(c.fetched, t.now),
                        c.age(live_id(t), t.now).name(),
                        when(c.refresh_at(), t.now),
                        when(c.expires(), t.now)
                    ));
                }
                if let Some(f) = failed {
                    parts.push(format!(
                        "last failed fetch {} for id {}",
                        when(f.at, t.now),
                        f.id
                    ));
                }
                parts.join("; ")
            }
        }
    }

    fn fetch_text(&self, t: &Trace) -> String {
        let url = format!(
            "https://mta-sts.{}/.well-known/mta-sts.txt",
            self.domain.to_ascii_lowercase()
        );
        match &t.fetch {
            Fetch::NoRecord => "none: no usable TXT record, so nothing to fetch".into(),
            Fetch::NotNeeded => "not needed: the cached policy is fresh for this id".into(),
            Fetch::BackedOff => format!(
                "not tried: the last attempt failed less than {} minutes ago (a delivery \
                 tries again {})",
                qremote::sts::BACKOFF / 60,
                when(t.backoff_until.unwrap_or(t.now), t.now)
            ),
            Fetch::Fetched => format!("fetched {url}, as a delivery would"),
            Fetch::Failed(why) => format!("{url}: {why}"),
        }
    }

    fn store_text(&self, t: &Trace) -> String {
        let file = self.file();
        match &t.store {
            Store::NotNeeded => "unchanged (nothing was fetched)".into(),
            Store::Written => {
                format!("{file} written, as a delivery writes it (--no-cache-write: left alone)")
            }
            Store::Skipped => format!("not written (--no-cache-write); a delivery writes {file}"),
            Store::NoDirectory => format!(
                "not written: there is no {DIR}/ directory, and the probe does not create one \
                 (a delivery does)"
            ),
            Store::Failed(why) => format!("failed: {why}"),
        }
    }

    /// The `MTA-STS` section of the text output.
    pub fn text(&self) {
        let t = match &self.trace {
            Err(s) => {
                println!("MTA-STS for {}:", self.domain);
                println!("  {}", skipped_text(s));
                return;
            }
            Ok(t) => t,
        };
        if t.txt == Txt::Absent && t.cache == CacheFile::Absent && self.sts.line.is_none() {
            // Most domains: one line.
            println!(
                "MTA-STS for {}: none (no _mta-sts TXT record, nothing cached; a delivery adds \
                 no MTA-STS line)",
                self.domain
            );
            return;
        }
        println!("MTA-STS for {}:", self.domain);
        let txt = match &t.txt {
            Txt::Published(id) => format!("v=STSv1, id {id}"),
            Txt::Absent => "none".into(),
            Txt::Invalid(why) | Txt::Failed(why) => why.clone(),
        };
        println!("  TXT _mta-sts.{}: {txt}", self.domain);
        println!("  cache {}: {}", self.file(), self.cache_text(t));
        println!("  fetch: {}", self.fetch_text(t));
        println!("  cache write: {}", self.store_text(t));
        match &t.in_force {
            Some(c) => println!(
                "  policy in force: mode {}, id {} ({}), max_age {} s ({}), mx: {}",
                c.policy.mode.name(),
                c.id,
                if t.fetch == Fetch::Fetched {
                    "fetched now"
                } else {
                    "from the cache"
                },
                c.policy.max_age,
                span(c.policy.max_age),
                if c.policy.mx.is_empty() {
                    "(none)".into()
                } else {
                    pattern_list(c).join(", ")
                }
            ),
            None => println!("  policy in force: none"),
        }
        if !self.dropped.is_empty() {
            let names: Vec<String> = self.dropped.iter().map(dropped_text).collect();
            println!(
                "  MX hosts the enforce policy drops (not listed): {}",
                names.join(", ")
            );
        }
        match &self.sts.line {
            Some(l) => println!("  report line: {l}"),
            None => println!("  report line: none (a delivery adds no MTA-STS line)"),
        }
    }

    pub fn json(&self) -> Json {
        let mut fields = vec![
            ("domain", Json::str(self.domain.clone())),
            ("looked_up", Json::Bool(self.trace.is_ok())),
        ];
        let t = match &self.trace {
            Err(s) => {
                let (why, level) = match s {
                    Skipped::NoMx => ("no-mx", Json::Null),
                    Skipped::Override(l, _) => ("override", Json::str(l.name())),
                };
                fields.push(("skipped", Json::str(why)));
                fields.push(("override_level", level));
                fields.push(("reason", Json::str(skipped_text(s))));
                return Json::Obj(fields);
            }
            Ok(t) => t,
        };
        let (txt_state, txt_error) = match &t.txt {
            Txt::Published(_) => ("published", None),
            Txt::Absent => ("absent", None),
            Txt::Invalid(why) => ("invalid", Some(why.clone())),
            Txt::Failed(why) => ("failed", Some(why.clone())),
        };
        fields.push((
            "txt",
            Json::Obj(vec![
                ("state", Json::str(txt_state)),
                ("id", Json::opt_str(live_id(t))),
                ("error", Json::opt_str(txt_error)),
            ]),
        ));
        fields.push(("cache", self.cache_json(t)));
        let (fetch, fetch_error) = match &t.fetch {
            Fetch::NoRecord => ("no-record", None),
            Fetch::NotNeeded => ("not-needed", None),
            Fetch::BackedOff => ("backed-off", None),
            Fetch::Fetched => ("fetched", None),
            Fetch::Failed(why) => ("failed", Some(why.clone())),
        };
        fields.push((
            "fetch",
            Json::Obj(vec![
                ("state", Json::str(fetch)),
                ("error", Json::opt_str(fetch_error)),
                ("backoff_until", unix(t.backoff_until)),
            ]),
        ));
        let (store, store_error) = match &t.store {
            Store::NotNeeded => ("not-needed", None),
            Store::Written => ("written", None),
            Store::Skipped => ("skipped", None),
            Store::NoDirectory => ("no-directory", None),
            Store::Failed(why) => ("failed", Some(why.clone())),
        };
        fields.push((
            "cache_write",
            Json::Obj(vec![
                ("state", Json::str(store)),
                ("error", Json::opt_str(store_error)),
            ]),
        ));
        fields.push((
            "policy",
            t.in_force.as_ref().map_or(Json::Null, |c| {
                Json::Obj(vec![
                    ("mode", Json::str(c.policy.mode.name())),
                    ("id", Json::str(c.id.clone())),
                    (
                        "origin",
                        Json::str(if t.fetch == Fetch::Fetched {
                            "fetched"
                        } else {
                            "cached"
                        }),
                    ),
                    ("max_age", unix(Some(c.policy.max_age))),
                    (
                        "mx",
                        Json::Arr(pattern_list(c).into_iter().map(Json::Str).collect()),
                    ),
                ])
            }),
        ));
        fields.push((
            "dropped",
            Json::Arr(
                self.dropped
                    .iter()
                    .map(|p| {
                        Json::Obj(vec![
                            ("name", Json::str(outsafe(&p.name))),
                            ("ip", Json::str(p.ip.to_string())),
                        ])
                    })
                    .collect(),
            ),
        ));
        fields.push(("line", Json::opt_str(self.sts.line.clone())));
        Json::Obj(fields)
    }

    fn cache_json(&self, t: &Trace) -> Json {
        let mut fields = vec![("file", Json::str(self.file()))];
        let (state, error, entry) = match &t.cache {
            CacheFile::Unusable(why) => ("unusable", Some(why.clone()), None),
            CacheFile::Absent => ("absent", None, None),
            CacheFile::Corrupt(why) => ("corrupt", Some(why.clone()), None),
            CacheFile::Found(e) => (
                e.cached
                    .as_ref()
                    .map_or("failure-only", |c| age_key(c.age(live_id(t), t.now))),
                None,
                Some(e),
            ),
        };
        fields.push(("state", Json::str(state)));
        fields.push(("error", Json::opt_str(error)));
        let cached = entry.and_then(|e| e.cached.as_ref());
        fields.push(("id", Json::opt_str(cached.map(|c| c.id.clone()))));
        fields.push(("fetched", unix(cached.map(|c| c.fetched))));
        fields.push(("refresh_at", unix(cached.map(Cached::refresh_at))));
        fields.push(("expires", unix(cached.map(Cached::expires))));
        let failed = entry.and_then(|e| e.failed.as_ref());
        fields.push((
            "last_failure",
            failed.map_or(Json::Null, |f| {
                Json::Obj(vec![
                    ("at", unix(Some(f.at))),
                    ("id", Json::str(f.id.clone())),
                ])
            }),
        ));
        Json::Obj(fields)
    }
}

/// Gives a cache file the probe just wrote the owner and group of the cache directory, so
/// that a probe run as root leaves a file the delivery user (`qmailr`) can read. Without
/// root, chown fails and the file stays the caller's: deliveries that cannot read it fetch
/// the policy and replace the file, as for a corrupt one.
pub fn give_to_cache_owner(domain: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let Some(name) = file_name(domain) else {
        return;
    };
    if let Ok(dir) = std::fs::metadata(DIR) {
        let file = std::path::Path::new(DIR).join(name);
        // lchown: the directory belongs to the delivery user, who could have put a symlink
        // there since the rename; chown would follow it and hand its target over (as root).
        let _ = std::os::unix::fs::lchown(file, Some(dir.uid()), Some(dir.gid()));
    }
}

fn unix(t: Option<u64>) -> Json {
    t.map_or(Json::Null, |t| {
        Json::Num(i64::try_from(t).unwrap_or(i64::MAX))
    })
}

/// What the MTA-STS policy did to this peer's level, as one line; `None` when the domain
/// has no policy in force or none applies to the peer.
pub fn peer_text(run: &PeerRun, sts: Option<&Sts>) -> Option<String> {
    let (p, w) = (&run.policy, &run.without_sts);
    let effect = if p.level != w.level || p.source != w.source {
        format!(
            "level {} from {} (without the policy: {} from {})",
            p.level.name(),
            p.source,
            w.level.name(),
            w.source
        )
    } else {
        format!("level unchanged: {} from {}", p.level.name(), p.source)
    };
    let active = sts.and_then(|s| s.active.as_ref())?;
    Some(match p.sts {
        Some(StsVerdict::Enforce) => {
            format!("MTA-STS: the enforce policy lists this MX: {effect}")
        }
        Some(StsVerdict::Testing { listed }) => format!(
            "MTA-STS: the {} policy {} this MX: {effect}; the TLS line says what enforce \
             would have done",
            active.policy.mode.name(),
            if listed { "lists" } else { "does not list" }
        ),
        None if run.peer.relay || run.peer.name.is_empty() => return None,
        None if p.dane().is_some() => format!(
            "MTA-STS: not applied: DANE applies to this MX (RFC 8461 section 2){}",
            if active.policy.allows(&run.peer.name) {
                ""
            } else {
                "; kept although the policy does not list it"
            }
        ),
        None => format!(
            "MTA-STS: not consulted for this MX (override line in control/tlspolicy{})",
            if active.policy.allows(&run.peer.name) {
                ""
            } else {
                "; kept although the enforce policy does not list it"
            }
        ),
    })
}

pub fn peer_json(run: &PeerRun, sts: Option<&Sts>) -> Json {
    if sts.and_then(|s| s.active.as_ref()).is_none() {
        return Json::Null;
    }
    let (p, w) = (&run.policy, &run.without_sts);
    let (verdict, listed) = match p.sts {
        _ if matches!(run.plan, PlanNote::Dropped) => ("dropped", Json::Bool(false)),
        Some(StsVerdict::Enforce) => ("enforce", Json::Bool(true)),
        Some(StsVerdict::Testing { listed }) => ("testing", Json::Bool(listed)),
        None if p.dane().is_some() => ("dane", Json::Null),
        None => ("not-consulted", Json::Null),
    };
    Json::Obj(vec![
        ("verdict", Json::str(verdict)),
        ("listed", listed),
        (
            "changed",
            Json::Bool(p.level != w.level || p.source != w.source),
        ),
        ("level_without", Json::str(w.level.name())),
        ("source_without", Json::str(w.source.clone())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(12 * 60 + 5), "12 min");
        assert_eq!(span(43_140), "11 h 59 min");
        assert_eq!(span(86_400 * 3 + 3600 * 4 + 7), "3 d 4 h");
        assert_eq!(when(100, 40), "in 1 min");
        assert_eq!(when(40, 100), "1 min ago");
        assert_eq!(when(40, 40), "now");
    }
}
