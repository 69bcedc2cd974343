//! The per-destination TLS level: the levels (ordered like Postfix's), `control/tlspolicy`,
//! and the qmail-tls files (`tlshosts/`, `notlshosts/`, `exhaustivelist`), combined into one
//! [`Policy`] per peer. Every further source of a requirement (DANE, MTA-STS) joins here.

use crate::control;
use crate::failure::Failure;
use crate::route::Peer;

/// TLS security levels, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Never STARTTLS.
    None,
    /// Opportunistic: encrypt if offered, verify and report, deliver either way.
    May,
    /// TLS required, any certificate.
    Encrypt,
    /// TLS required, valid chain and host name.
    Verify,
}

impl Level {
    pub fn parse(s: &[u8]) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_slice() {
            b"none" => Level::None,
            b"may" => Level::May,
            b"encrypt" => Level::Encrypt,
            b"verify" => Level::Verify,
            _ => return None,
        })
    }

    pub fn required(self) -> bool {
        self >= Level::Encrypt
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
        }
    }
}

/// Where trust comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchors {
    /// webpki roots, then `control/tlsca` if present.
    Public,
    /// Only the CA certificates in this file (`control/tlshosts/<host>.pem`).
    File(String),
}

/// The decision for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub anchors: Anchors,
    /// What set the level, for reports ("default", "control/tlspolicy", a qmail-tls file).
    pub source: String,
}

/// One `control/tlspolicy` table: `key:level`, keys as in smtproutes.
pub struct Table(Vec<(Vec<u8>, Level)>);

impl Table {
    pub fn load() -> Result<Table, Failure> {
        let Some(data) = control::read_file("tlspolicy")? else {
            return Ok(Table(Vec::new()));
        };
        let mut entries = Vec::new();
        for (n, line) in control::lines(&data) {
            let line = line.trim_ascii();
            let Some(colon) = line.iter().rposition(|&b| b == b':') else {
                return Err(control::syntax(
                    "tlspolicy",
                    n,
                    "expected destination:level",
                ));
            };
            // The last colon: a key may be an IPv6 literal such as [2001:db8::1].
            let (key, rest) = line.split_at(colon);
            let level =
                Level::parse(rest.get(1..).unwrap_or_default().trim_ascii()).ok_or_else(|| {
                    control::syntax("tlspolicy", n, "level must be none, may, encrypt or verify")
                })?;
            entries.push((key.trim_ascii().to_ascii_lowercase(), level));
        }
        Ok(Table(entries))
    }

    /// The most specific entry for `name` (exact, then `.suffix` longest first); last line wins.
    fn lookup(&self, name: &[u8]) -> Option<Level> {
        if name.is_empty() {
            return None;
        }
        control::suffix_keys(name).iter().find_map(|k| self.get(k))
    }

    fn get(&self, key: &[u8]) -> Option<Level> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, l)| *l)
    }
}

impl Table {
    /// Decides the level for `peer` (reached for recipient domain `domain`). Explicit
    /// entries (a qmail-tls `.pem`, tlspolicy lines for the domain or the host) combine by
    /// taking the strongest, so nothing silently weakens a requirement. Without one,
    /// `notlshosts/<host>` or `tlshosts/exhaustivelist` mean none, else the `:level` default
    /// line, else `may`.
    pub fn policy(&self, peer: &Peer, domain: &[u8]) -> Policy {
        let name = String::from_utf8_lossy(&peer.name).into_owned();
        let key = if peer.name.is_empty() {
            format!("[{}]", peer.ip).into_bytes()
        } else {
            peer.name.clone()
        };
        let mut best: Option<Policy> = None;
        let mut consider = |p: Policy| {
            if best.as_ref().is_none_or(|b| p.level > b.level) {
                best = Some(p);
            }
        };
        let pem = format!("tlshosts/{name}.pem");
        if !name.is_empty() && !name.contains('/') && control::exists(&pem) {
            consider(Policy {
                level: Level::Verify,
                anchors: Anchors::File(format!("control/{pem}")),
                source: format!("control/{pem}"),
            });
        }
        for (k, what) in [(&domain.to_vec(), "domain"), (&key, "host")] {
            if let Some(level) = self.lookup(k) {
                consider(Policy {
                    level,
                    anchors: Anchors::Public,
                    source: format!("control/tlspolicy ({what})"),
                });
            }
        }
        if let Some(p) = best {
            return p;
        }
        let no = format!("notlshosts/{name}");
        if !name.is_empty() && !name.contains('/') && control::exists(&no) {
            return Policy {
                level: Level::None,
                anchors: Anchors::Public,
                source: format!("control/{no}"),
            };
        }
        if control::exists("tlshosts/exhaustivelist") {
            return Policy {
                level: Level::None,
                anchors: Anchors::Public,
                source: "control/tlshosts/exhaustivelist".into(),
            };
        }
        match self.get(b"") {
            Some(level) => Policy {
                level,
                anchors: Anchors::Public,
                source: "control/tlspolicy (default)".into(),
            },
            None => Policy {
                level: Level::May,
                anchors: Anchors::Public,
                source: "default".into(),
            },
        }
    }
}
