//! A record of the lookups made on this thread, for `qremote-probe`: each question with the
//! CNAME chain followed, whether every answer used had the AD bit, and what came back. Off
//! unless [`start`] was called, so qmail-remote pays one thread-local check per lookup.

use std::cell::RefCell;

use super::DnsError;
use super::wire::{Name, RData, TYPE_A, TYPE_AAAA, TYPE_MX, TYPE_TLSA, TYPE_TXT};
use crate::report::outsafe;

/// One lookup as the resolver made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The name asked for, as given.
    pub name: Vec<u8>,
    /// `MX`, `A`, `AAAA`, `TLSA` (or the number).
    pub qtype: String,
    /// The CNAME targets followed, in order (empty when the name had none).
    pub cnames: Vec<Vec<u8>>,
    /// Every answer used had AD=1 (DNSSEC-validated by the resolver).
    pub ad: bool,
    /// The records, in presentation form (`10 mx.example`, `192.0.2.1`), or why none.
    pub result: Result<Vec<String>, DnsError>,
}

thread_local! {
    static LOG: RefCell<Option<Vec<Lookup>>> = const { RefCell::new(None) };
}

/// Starts recording on this thread (clearing an earlier record).
pub fn start() {
    LOG.with(|l| *l.borrow_mut() = Some(Vec::new()));
}

/// The lookups recorded since the last [`start`] or [`take`]; recording goes on.
pub fn take() -> Vec<Lookup> {
    LOG.with(|l| l.borrow_mut().as_mut().map(std::mem::take))
        .unwrap_or_default()
}

pub(super) fn record(
    name: &[u8],
    qtype: u16,
    chain: &[Name],
    result: &Result<(Vec<RData>, bool), DnsError>,
) {
    LOG.with(|l| {
        let mut log = l.borrow_mut();
        let Some(log) = log.as_mut() else { return };
        log.push(Lookup {
            name: name.to_vec(),
            qtype: match qtype {
                TYPE_MX => "MX".into(),
                TYPE_A => "A".into(),
                TYPE_AAAA => "AAAA".into(),
                TYPE_TLSA => "TLSA".into(),
                TYPE_TXT => "TXT".into(),
                other => other.to_string(),
            },
            // The first name of the chain is the one asked for.
            cnames: chain.iter().skip(1).map(Name::to_text).collect(),
            ad: result.as_ref().is_ok_and(|(_, ad)| *ad),
            result: result
                .as_ref()
                .map(|(records, _)| records.iter().map(show).collect())
                .map_err(Clone::clone),
        });
    });
}

fn show(r: &RData) -> String {
    match r {
        RData::A(a) => a.to_string(),
        RData::Aaaa(a) => a.to_string(),
        // Names are any bytes on the wire: shown as qmail shows hosts, so that no escape
        // sequence from a zone reaches the admin's terminal.
        RData::Mx { pref, host } => {
            let host = host.to_text();
            let host = if host.is_empty() { b".".to_vec() } else { host };
            format!("{pref} {}", outsafe(&host))
        }
        RData::Cname(n) => outsafe(&n.to_text()),
        RData::Tlsa {
            usage,
            selector,
            matching,
            data,
        } => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("{usage} {selector} {matching} {hex}")
        }
        // Quoted, spaces kept (a TXT record is text), `"` and `\` escaped, and bytes outside
        // printable ASCII as '?'.
        RData::Txt(t) => {
            let text: String = t
                .iter()
                .map(|&b| match b {
                    b'"' | b'\\' => format!("\\{}", b as char),
                    b' '..=b'~' => (b as char).to_string(),
                    _ => "?".into(),
                })
                .collect();
            format!("\"{text}\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_bytes_are_shown_safely() {
        let host = Name::from_text(b"mx\x1b[2J.example").unwrap_or_else(Name::root);
        assert_eq!(
            show(&RData::Mx {
                pref: 10,
                host: host.clone()
            }),
            "10 mx?[2J.example"
        );
        assert_eq!(show(&RData::Cname(host)), "mx?[2J.example");
    }

    #[test]
    fn txt_is_shown_as_text() {
        assert_eq!(
            show(&RData::Txt(b"v=STSv1; id=\"1\"\\\x07".to_vec())),
            "\"v=STSv1; id=\\\"1\\\"\\\\?\""
        );
    }
}
