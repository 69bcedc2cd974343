//! The per-destination TLS level: the levels (ordered like Postfix's), `control/tlspolicy`,
//! and the qmail-tls files (`tlshosts/`, `notlshosts/`, `exhaustivelist`), combined into one
//! [`Policy`] per peer. Every further source of a requirement (DANE, MTA-STS) joins here:
//! [`combine`] is where DANE's decision meets the rest.

use super::dane::{Dane, Decision};
use crate::control;
use crate::failure::Failure;
use crate::route::Peer;
use crate::sts::{self, Mode};

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
    /// TLS required, authenticated by the MX host's DNSSEC-signed TLSA records (RFC 7672).
    /// Only DNS sets it, never `control/tlspolicy`. It ranks above `verify` so that, by the
    /// strongest-wins rule, DANE takes precedence where it applies (RFC 8461 §2).
    Dane,
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
            Level::Dane => "dane",
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
    /// Only the MX host's usable TLSA records (level `Dane`).
    Dane(Dane),
}

/// The decision for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub anchors: Anchors,
    /// What set the level, for reports ("default", "control/tlspolicy", a qmail-tls file,
    /// "MTA-STS policy of <domain>").
    pub source: String,
    /// Said in the `TLS:` line after the session's own text, e.g. that an override was used.
    /// Empty or `; ...`.
    pub note: String,
    /// What the recipient domain's MTA-STS policy says about this peer, if it has one.
    pub sts: Option<StsVerdict>,
    /// Set when this peer must not be used at all: its TLSA lookup failed (SERVFAIL, bogus,
    /// timeout), so DANE may apply and cannot be checked (RFC 7672 2.1.1).
    pub refused: Option<Failure>,
}

impl Policy {
    /// `level`, set by `source`, with the public anchors (webpki roots and `control/tlsca`),
    /// no note, no MTA-STS verdict and no refusal: where most policies start.
    pub fn public(level: Level, source: impl Into<String>) -> Policy {
        Policy {
            level,
            anchors: Anchors::Public,
            source: source.into(),
            note: String::new(),
            sts: None,
            refused: None,
        }
    }

    /// The DANE requirement this policy carries, if DANE decided it.
    pub fn dane(&self) -> Option<&Dane> {
        match &self.anchors {
            Anchors::Dane(d) => Some(d),
            _ => None,
        }
    }
}

/// Joins the DANE decision to the policy of the other sources (`others`, from
/// [`Table::policy`] with MTA-STS) by the strongest-wins rule: usable TLSA records give level
/// `Dane` with the records as the only anchors (so DANE wins over MTA-STS, RFC 8461 §2, and
/// over `verify`); records that are all unusable give at least `Encrypt`; a failed lookup
/// refuses the peer. Override lines never get here ([`Table::forced`] is asked first).
pub fn combine(others: Policy, dane: Decision) -> Policy {
    match dane {
        Decision::None(note) => Policy {
            note: format!(
                "{}{}",
                others.note,
                note.map(|n| format!("; {n}")).unwrap_or_default()
            ),
            ..others
        },
        Decision::Usable(d) => Policy {
            level: Level::Dane,
            source: format!("DANE: TLSA records at {}", d.owner),
            anchors: Anchors::Dane(d),
            note: others.note,
            // DANE applies to this MX: MTA-STS has nothing more to say about it.
            sts: None,
            refused: None,
        },
        Decision::Unusable { owner, rrset } => {
            let what = format!(
                "{} at {owner}, none usable",
                super::dane::count(rrset.len())
            );
            if others.level < Level::Encrypt {
                Policy {
                    level: Level::Encrypt,
                    anchors: Anchors::Public,
                    source: format!("DANE: {what}"),
                    note: format!("{}; TLS required by DANE: {what}", others.note),
                    ..others
                }
            } else {
                Policy {
                    note: format!("{}; DANE: {what}", others.note),
                    ..others
                }
            }
        }
        Decision::Failed { owner, why } => Policy {
            refused: Some(Failure::TlsaLookup { owner, why }),
            ..others
        },
    }
}

/// The recipient domain's MTA-STS policy (RFC 8461 §4), applied to one peer. A value of its
/// own so that the merge with DANE (where DANE applies to an MX, DANE wins, §2) stays one
/// visible decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StsVerdict {
    /// Mode `enforce`, and the MX is listed: TLS with a certificate valid for the MX name
    /// under the public anchors is required (a source of level `verify`). An MX the policy
    /// does not list gets here only when DANE applies to it (`Tls::sts_exempt` kept it), and
    /// then [`combine`] drops this verdict: DANE decides alone.
    Enforce,
    /// Mode `testing`: nothing changes; the `TLS:` line says what `enforce` would have done.
    /// `listed`: the MX matches a pattern of the policy.
    Testing { listed: bool },
}

/// One `control/tlspolicy` line: the level, and whether it ends in `!` (an override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    level: Level,
    force: bool,
}

/// One `control/tlspolicy` table: `key:level` or `key:level!`, keys as in smtproutes.
pub struct Table(Vec<(Vec<u8>, Entry)>);

/// What a `TLS:` line says when an override line decided.
const OVERRIDE_NOTE: &str = "; DANE and MTA-STS not consulted: override in control/tlspolicy";

impl Table {
    pub fn load() -> Result<Table, Failure> {
        match control::read_file("tlspolicy")? {
            Some(data) => Table::parse(&data),
            None => Ok(Table(Vec::new())),
        }
    }

    /// Parses the contents of `control/tlspolicy`.
    pub fn parse(data: &[u8]) -> Result<Table, Failure> {
        let mut entries = Vec::new();
        for (n, line) in control::lines(data) {
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
            let word = rest.get(1..).unwrap_or_default().trim_ascii();
            let (word, force) = match word.strip_suffix(b"!") {
                Some(w) => (w, true),
                None => (word, false),
            };
            let level = Level::parse(word).ok_or_else(|| {
                control::syntax(
                    "tlspolicy",
                    n,
                    "level must be none, may, encrypt or verify, optionally followed by !",
                )
            })?;
            entries.push((
                key.trim_ascii().to_ascii_lowercase(),
                Entry { level, force },
            ));
        }
        Ok(Table(entries))
    }

    /// The most specific entry for `name` (exact, then `.suffix` longest first); last line wins.
    fn lookup(&self, name: &[u8]) -> Option<Entry> {
        if name.is_empty() {
            return None;
        }
        control::suffix_keys(name).iter().find_map(|k| self.get(k))
    }

    fn get(&self, key: &[u8]) -> Option<Entry> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, e)| *e)
    }

    /// The key of `peer` in the table: its name, or `[ip]` for a literal.
    fn key(peer: &Peer) -> Vec<u8> {
        if peer.name.is_empty() {
            format!("[{}]", peer.ip).into_bytes()
        } else {
            peer.name.clone()
        }
    }

    /// An override (`level!`) for the host, the recipient domain or everything (`:level!`),
    /// in that order: it decides alone, and no published requirement (DANE, MTA-STS) counts.
    pub fn forced(&self, peer: &Peer, domain: &[u8]) -> Option<Policy> {
        let host = self.lookup(&Table::key(peer)).filter(|e| e.force);
        host.map(|e| (e.level, "host"))
            .or_else(|| self.forced_domain(domain))
            .map(|(level, what)| Policy {
                note: OVERRIDE_NOTE.into(),
                ..Policy::public(level, format!("control/tlspolicy ({what}, override)"))
            })
    }

    /// The policy for a relay that gets SMTP AUTH credentials: at least `verify`, so that a
    /// password only goes to the relay it is meant for. An admin who wrote a lower level for
    /// this relay in `control/tlspolicy` (a private relay with a self-signed certificate)
    /// gets `encrypt`: the password may go to an unverified peer, never in plaintext.
    pub fn with_credentials(&self, policy: Policy, peer: &Peer) -> Policy {
        let explicit_lower = self
            .lookup(&Table::key(peer))
            .is_some_and(|e| e.level < Level::Verify);
        let floor = if explicit_lower {
            Level::Encrypt
        } else {
            Level::Verify
        };
        if policy.level >= floor {
            return policy;
        }
        Policy {
            level: floor,
            source: format!(
                "SMTP AUTH credentials, instead of {} from {}",
                policy.level.name(),
                policy.source
            ),
            ..policy
        }
    }

    /// An override for the recipient domain or everything: then the domain's MTA-STS policy
    /// is not even looked up.
    pub fn forced_domain(&self, domain: &[u8]) -> Option<(Level, &'static str)> {
        [(self.lookup(domain), "domain"), (self.get(b""), "default")]
            .into_iter()
            .find_map(|(e, what)| e.filter(|e| e.force).map(|e| (e.level, what)))
    }
}

impl Table {
    /// Decides the level for `peer` (reached for recipient domain `domain`). Explicit
    /// entries (a qmail-tls `.pem`, tlspolicy lines for the domain or the host) combine by
    /// taking the strongest, so nothing silently weakens a requirement. Without one,
    /// `notlshosts/<host>` or `tlshosts/exhaustivelist` mean none, else the `:level` default
    /// line, else `may`. An MTA-STS `enforce` policy (`sts`) for a listed MX is an explicit
    /// source of `verify` with public anchors. Override lines are not consulted here: see
    /// [`Table::forced`], which the caller asks first.
    pub fn policy(&self, peer: &Peer, domain: &[u8], sts: Option<&sts::Active>) -> Policy {
        // No MX was chosen for a relay or an address literal: MTA-STS has nothing to say.
        let mx = !peer.relay && !peer.name.is_empty();
        let verdict = sts.filter(|_| mx).map(|a| match a.policy.mode {
            Mode::Enforce => StsVerdict::Enforce,
            Mode::Testing | Mode::None => StsVerdict::Testing {
                listed: a.policy.allows(&peer.name),
            },
        });
        let enforce = (verdict == Some(StsVerdict::Enforce)).then(|| {
            Policy::public(
                Level::Verify,
                format!("MTA-STS policy of {}", String::from_utf8_lossy(domain)),
            )
        });
        let mut p = self.decide(peer, domain, enforce);
        p.sts = verdict;
        p
    }

    fn decide(&self, peer: &Peer, domain: &[u8], sts: Option<Policy>) -> Policy {
        let name = String::from_utf8_lossy(&peer.name).into_owned();
        let key = Table::key(peer);
        let mut best: Option<Policy> = None;
        let mut consider = |p: Policy| {
            if best.as_ref().is_none_or(|b| p.level > b.level) {
                best = Some(p);
            }
        };
        let pem = format!("tlshosts/{name}.pem");
        if !name.is_empty() && !name.contains('/') && control::exists(&pem) {
            consider(Policy {
                anchors: Anchors::File(format!("control/{pem}")),
                ..Policy::public(Level::Verify, format!("control/{pem}"))
            });
        }
        for (k, what) in [(&domain.to_vec(), "domain"), (&key, "host")] {
            if let Some(Entry { level, .. }) = self.lookup(k) {
                consider(Policy::public(level, format!("control/tlspolicy ({what})")));
            }
        }
        if let Some(p) = sts {
            consider(p);
        }
        if let Some(p) = best {
            return p;
        }
        let no = format!("notlshosts/{name}");
        if !name.is_empty() && !name.contains('/') && control::exists(&no) {
            return Policy::public(Level::None, format!("control/{no}"));
        }
        if control::exists("tlshosts/exhaustivelist") {
            return Policy::public(Level::None, "control/tlshosts/exhaustivelist");
        }
        match self.get(b"") {
            Some(Entry { level, .. }) => Policy::public(level, "control/tlspolicy (default)"),
            None => Policy::public(Level::May, "default"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sts::{Active, policy::parse_policy};

    fn table(text: &str) -> Table {
        Table::parse(text.as_bytes()).unwrap()
    }

    fn peer(name: &str) -> Peer {
        Peer {
            name: name.as_bytes().to_vec(),
            ip: [192, 0, 2, 1].into(),
            port: 25,
            pref: 10,
            relay: false,
            mx_ad: true,
            addr_ad: true,
            expanded: None,
        }
    }

    fn active(mode: &str) -> Active {
        let text = format!("version: STSv1\nmode: {mode}\nmx: mx.example\nmax_age: 86400\n");
        Active {
            id: "1".into(),
            policy: parse_policy(text.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn enforce_is_an_explicit_verify_source() {
        let t = table(":none\n");
        let p = t.policy(&peer("mx.example"), b"example", Some(&active("enforce")));
        assert_eq!((p.level, &p.anchors), (Level::Verify, &Anchors::Public));
        assert_eq!(p.source, "MTA-STS policy of example");
        assert_eq!(p.sts, Some(StsVerdict::Enforce));
        // A verify line keeps its own source; a weaker line cannot lower it.
        let t = table("example:verify\nmx.example:may\n");
        let p = t.policy(&peer("mx.example"), b"example", Some(&active("enforce")));
        assert_eq!(
            (p.level, p.source.as_str()),
            (Level::Verify, "control/tlspolicy (domain)")
        );
        // testing changes nothing.
        let p = table("").policy(&peer("other.example"), b"example", Some(&active("testing")));
        assert_eq!(p.level, Level::May);
        assert_eq!(p.sts, Some(StsVerdict::Testing { listed: false }));
    }

    #[test]
    fn override_lines_decide_alone() {
        let t = table("example:verify\n.example:may!\n:encrypt\n");
        let p = t.forced(&peer("mx.example"), b"example").unwrap();
        assert_eq!(p.level, Level::May);
        assert_eq!(p.source, "control/tlspolicy (host, override)");
        assert_eq!(p.note, OVERRIDE_NOTE);
        assert!(t.forced(&peer("mx.other"), b"other").is_none());
        assert_eq!(t.forced_domain(b"example"), None);
        assert_eq!(t.forced_domain(b"a.example"), Some((Level::May, "domain")));
        let t = table(":may!\n");
        let p = t.forced(&peer("mx.other"), b"other").unwrap();
        assert_eq!(p.source, "control/tlspolicy (default, override)");
    }

    fn admin(level: Level) -> Policy {
        Policy {
            sts: Some(StsVerdict::Enforce),
            ..Policy::public(level, "admin")
        }
    }

    fn ee() -> crate::dns::Tlsa {
        crate::dns::Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0; 32],
        }
    }

    fn usable() -> Decision {
        Decision::Usable(Dane {
            base: "mx.example".into(),
            owner: "_25._tcp.mx.example".into(),
            records: vec![ee()],
            rrset: vec![ee()],
            names: vec!["mx.example".into()],
        })
    }

    #[test]
    fn usable_tlsa_wins_over_every_admin_level_and_mta_sts() {
        for level in [Level::None, Level::May, Level::Encrypt, Level::Verify] {
            let p = combine(admin(level), usable());
            assert_eq!(p.level, Level::Dane);
            assert!(p.dane().is_some());
            assert_eq!(p.sts, None);
        }
    }

    #[test]
    fn unusable_tlsa_means_at_least_encrypt() {
        let unusable = || Decision::Unusable {
            owner: "_25._tcp.mx.example".into(),
            rrset: vec![
                crate::dns::Tlsa { usage: 1, ..ee() },
                crate::dns::Tlsa { usage: 0, ..ee() },
            ],
        };
        let p = combine(admin(Level::May), unusable());
        assert_eq!((p.level, p.anchors), (Level::Encrypt, Anchors::Public));
        assert!(p.note.contains("none usable"), "{}", p.note);
        let p = combine(admin(Level::Verify), unusable());
        assert_eq!((p.level, p.source.as_str()), (Level::Verify, "admin"));
    }

    #[test]
    fn no_dane_keeps_the_policy_with_its_note_and_a_failed_lookup_refuses() {
        let p = combine(admin(Level::May), Decision::None(Some("why".into())));
        assert_eq!((p.level, p.note.as_str()), (Level::May, "; why"));
        let failed = Decision::Failed {
            owner: "o".into(),
            why: "w".into(),
        };
        let p = combine(admin(Level::May), failed);
        assert_eq!(
            p.refused,
            Some(Failure::TlsaLookup {
                owner: "o".into(),
                why: "w".into()
            })
        );
    }

    #[test]
    fn dane_is_the_strongest_level_and_not_a_tlspolicy_word() {
        assert!(Level::Dane > Level::Verify);
        assert_eq!(Level::parse(b"dane"), None);
    }
}
