//! The DANE part of the probe, per peer: the DNSSEC status the decision used (the MX answer
//! and the address answers), the TLSA RRset with each record's usability and the presented
//! certificates it matches, and the decision (usable, none usable, not applicable and why,
//! lookup failed, override). Display only: the decision is `Tls::dane_decision`, the same
//! cached lookup `Tls::policy` joins; usability and matching are `tls::dane`'s functions.

use qremote::dns::Tlsa;
use qremote::report::outsafe;
use qremote::route::Peer;
use qremote::tls::dane::{self, DANE_EE, DANE_TA, Decision, Match};

use crate::cert::hex;
use crate::json::Json;

/// DANE for one peer, decided before connecting.
pub enum Dane {
    /// An override line in `control/tlspolicy` decides: no TLSA lookup, as in a delivery.
    Override,
    Decided(Decision),
}

/// Most hex digits of association data shown in the text (a `3 0 0` record is a whole
/// certificate); JSON has all of them.
const SHOWN_HEX: usize = 64;

fn usage_name(u: u8) -> &'static str {
    match u {
        0 => "PKIX-TA",
        1 => "PKIX-EE",
        DANE_TA => "DANE-TA",
        DANE_EE => "DANE-EE",
        _ => "unknown usage",
    }
}

fn selector_name(s: u8) -> &'static str {
    match s {
        0 => "full certificate",
        1 => "public key",
        _ => "unknown selector",
    }
}

fn matching_name(m: u8) -> &'static str {
    match m {
        0 => "exact",
        1 => "SHA-256",
        2 => "SHA-512",
        _ => "unknown matching type",
    }
}

/// The certificates (by position in the presented chain) a usable record matches.
fn matches(t: &Tlsa, certs: &[Vec<u8>]) -> Vec<usize> {
    certs
        .iter()
        .enumerate()
        .filter(|(_, c)| dane::tlsa_matches(t.selector, t.matching, &t.data, c) == Match::Yes)
        .map(|(i, _)| i)
        .collect()
}

fn record_text(t: &Tlsa, certs: Option<&[Vec<u8>]>) -> String {
    let data = hex(&t.data);
    let shown = if data.len() > SHOWN_HEX {
        format!("{}... ({} bytes)", &data[..SHOWN_HEX], t.data.len())
    } else {
        data
    };
    let head = format!("{} {} {} {shown}", t.usage, t.selector, t.matching);
    match dane::unusable(t) {
        Some(why) => format!("{head}: unusable: {why}"),
        None => {
            let what = format!(
                "{head}: usable ({}, {}, {})",
                usage_name(t.usage),
                selector_name(t.selector),
                matching_name(t.matching)
            );
            match certs {
                None => what,
                Some(certs) => match matches(t, certs).as_slice() {
                    [] => format!("{what}; matches no certificate presented"),
                    found => format!(
                        "{what}; matches certificate {}",
                        found
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            }
        }
    }
}

fn ad(secure: bool) -> &'static str {
    if secure {
        "secure (AD=1)"
    } else {
        "not validated (AD=0)"
    }
}

/// The DNSSEC status of the answers that chose this peer, as the DANE decision used it.
pub fn dnssec_text(peer: &Peer) -> Option<String> {
    if peer.name.is_empty() {
        return None;
    }
    let chosen = if peer.relay {
        "name from control/smtproutes".to_string()
    } else {
        format!("MX answer {}", ad(peer.mx_ad))
    };
    let via = peer
        .expanded
        .as_ref()
        .map(|e| format!(", through a CNAME to {}", outsafe(e)))
        .unwrap_or_default();
    Some(format!(
        "DNSSEC: {chosen}; addresses {}{via}",
        ad(peer.addr_ad)
    ))
}

/// Why no TLSA record was used for this peer.
fn none_reason(peer: &Peer, note: Option<&str>) -> String {
    dane::inapplicable(peer).map_or_else(
        || match note {
            Some(n) => n.to_string(),
            None => format!(
                "no DNSSEC-validated TLSA records for {} (see the TLSA lookups above)",
                outsafe(&peer.name)
            ),
        },
        str::to_string,
    )
}

/// The DANE lines of one peer; `certs` is the chain the probe was presented, if any.
pub fn text(d: &Dane, peer: &Peer, certs: Option<&[Vec<u8>]>) -> Vec<String> {
    let decision = match d {
        Dane::Override => {
            return vec![
                "DANE: not consulted: an override line in control/tlspolicy decides".into(),
            ];
        }
        Dane::Decided(decision) => decision,
    };
    let (head, rrset) = match decision {
        Decision::None(note) => (
            format!("DANE: not used: {}", none_reason(peer, note.as_deref())),
            &[][..],
        ),
        Decision::Usable(d) => (
            format!(
                "DANE: {} usable of {} TLSA records at {} (DNSSEC-secure); TLS required, \
                 authenticated by these records only{}",
                d.records.len(),
                d.rrset.len(),
                d.owner,
                if d.records.iter().any(|t| t.usage == DANE_TA) {
                    format!(
                        "; names a DANE-TA chain may be issued for: {}",
                        d.names.join(", ")
                    )
                } else {
                    String::new()
                }
            ),
            d.rrset.as_slice(),
        ),
        Decision::Unusable { owner, rrset } => (
            format!(
                "DANE: {} at {owner} (DNSSEC-secure), none usable: TLS required \
                 (at least encrypt), not authenticated by DANE",
                qremote::tls::dane::count(rrset.len())
            ),
            rrset.as_slice(),
        ),
        Decision::Failed { owner, why } => (
            format!(
                "DANE: the TLSA lookup at {owner} failed ({why}): a delivery does not use this MX"
            ),
            &[][..],
        ),
    };
    let mut out = vec![head];
    out.extend(rrset.iter().map(|t| format!("  {}", record_text(t, certs))));
    out
}

pub fn json(d: &Dane, peer: &Peer, certs: Option<&[Vec<u8>]>) -> Json {
    let (state, reason, owner, names, rrset): (_, Option<String>, _, &[String], &[Tlsa]) = match d {
        Dane::Override => ("override", None, None, &[], &[]),
        Dane::Decided(Decision::None(note)) => (
            "none",
            Some(none_reason(peer, note.as_deref())),
            None,
            &[],
            &[],
        ),
        Dane::Decided(Decision::Usable(d)) => (
            "usable",
            None,
            Some(d.owner.clone()),
            d.names.as_slice(),
            d.rrset.as_slice(),
        ),
        Dane::Decided(Decision::Unusable { owner, rrset }) => {
            ("unusable", None, Some(owner.clone()), &[], rrset.as_slice())
        }
        Dane::Decided(Decision::Failed { owner, why }) => {
            ("failed", Some(why.clone()), Some(owner.clone()), &[], &[])
        }
    };
    let records = rrset
        .iter()
        .map(|t| {
            let why = dane::unusable(t);
            Json::Obj(vec![
                ("usage", Json::Num(i64::from(t.usage))),
                ("selector", Json::Num(i64::from(t.selector))),
                ("matching", Json::Num(i64::from(t.matching))),
                ("data", Json::str(hex(&t.data))),
                ("usable", Json::Bool(why.is_none())),
                ("unusable_because", Json::opt_str(why)),
                (
                    "matches",
                    match (why, certs) {
                        (None, Some(certs)) => Json::Arr(
                            matches(t, certs)
                                .into_iter()
                                .map(|i| Json::Num(i as i64))
                                .collect(),
                        ),
                        _ => Json::Null,
                    },
                ),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("state", Json::str(state)),
        ("reason", Json::opt_str(reason)),
        ("owner", Json::opt_str(owner)),
        (
            "names",
            Json::Arr(names.iter().map(|n| Json::str(n.clone())).collect()),
        ),
        ("records", Json::Arr(records)),
    ])
}

pub fn dnssec_json(peer: &Peer) -> Json {
    Json::Obj(vec![
        ("mx_ad", Json::Bool(peer.mx_ad)),
        ("addr_ad", Json::Bool(peer.addr_ad)),
        (
            "expanded",
            Json::opt_str(peer.expanded.as_ref().map(|e| outsafe(e))),
        ),
    ])
}
