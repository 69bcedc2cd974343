//! Entry points for the fuzz targets in `fuzz/` (docs/RELIABILITY.md). The decoder and the
//! resolver's answer handling stay crate-private; these functions run exactly that code on
//! arbitrary bytes and return what it decided, in owned public types. Nothing in the delivery
//! path calls them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::transport::Query;
use super::wire::{self, Name, RData};
use super::{Chase, DnsError, chase};
use crate::failure::Failure;

/// The query types the resolver asks.
pub const QTYPES: [u16; 4] = [
    wire::TYPE_A,
    wire::TYPE_AAAA,
    wire::TYPE_MX,
    wire::TYPE_TLSA,
];

/// What a response says, as our decoder reads it. Names are in uncompressed wire form with the
/// case as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub id: u16,
    /// The 16 flag bits: QR, opcode, AA, TC, RD, RA, Z, AD, CD and the 4-bit RCODE.
    pub flags: u16,
    /// The full RCODE, extended by the OPT record (RFC 6891 6.1.3).
    pub rcode: u16,
    /// Name, type, class.
    pub question: Option<(Vec<u8>, u16, u16)>,
    /// Answer records of class IN and a type we decode, in order, at most 1000.
    pub answers: Vec<(Vec<u8>, Record)>,
    /// The first OPT record: payload size, version, DO bit.
    pub edns: Option<(u16, u8, bool)>,
}

/// The data of one kept answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        pref: u16,
        host: Vec<u8>,
    },
    Cname(Vec<u8>),
    Tlsa {
        usage: u8,
        selector: u8,
        matching: u8,
        data: Vec<u8>,
    },
    /// The character-strings, concatenated.
    Txt(Vec<u8>),
}

fn record(data: &RData) -> Record {
    match data {
        RData::A(a) => Record::A(*a),
        RData::Aaaa(a) => Record::Aaaa(*a),
        RData::Mx { pref, host } => Record::Mx {
            pref: *pref,
            host: host.wire().to_vec(),
        },
        RData::Cname(n) => Record::Cname(n.wire().to_vec()),
        RData::Tlsa {
            usage,
            selector,
            matching,
            data,
        } => Record::Tlsa {
            usage: *usage,
            selector: *selector,
            matching: *matching,
            data: data.clone(),
        },
        RData::Txt(t) => Record::Txt(t.clone()),
    }
}

/// Decodes one message; `None` where the resolver would count it as malformed.
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    let msg = wire::parse(bytes).ok()?;
    Some(Decoded {
        id: msg.header.id,
        flags: msg.header.flags,
        rcode: msg.rcode,
        question: msg
            .question
            .as_ref()
            .map(|q| (q.name.wire().to_vec(), q.qtype, q.qclass)),
        answers: msg
            .answers
            .iter()
            .map(|r| (r.owner.wire().to_vec(), record(&r.data)))
            .collect(),
        edns: msg.opt.map(|o| (o.payload, o.version, o.dnssec_ok)),
    })
}

/// What the resolver does with one response to its query for `qname` and `qtype`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not an answer to this query (ID, QR, opcode or question differ): UDP waits for another.
    Ignored,
    /// TC=1: the query is repeated over TCP.
    Truncated,
    Malformed,
    /// An RCODE other than NOERROR and NXDOMAIN: the next server is tried.
    Rcode(u16),
    /// The records of `qtype` found, following CNAMEs from `qname`.
    Records(Vec<Record>),
    NxDomain,
    NoData,
    /// The chain of CNAMEs ends at this name without records here: it is asked next.
    Requery(Vec<u8>),
    /// A CNAME loop or a chain too long.
    Temporary(String),
}

/// Runs the resolver's checks and answer handling on `response` as if it were the reply to a
/// query for `qname`/`qtype` with the response's own ID (any other ID is simply ignored).
pub fn answer(qname: &[u8], qtype: u16, response: &[u8]) -> Verdict {
    let Some(name) = Name::from_text(qname) else {
        return Verdict::NxDomain;
    };
    let Ok((header, question, _)) = wire::parse_head(response) else {
        return Verdict::Ignored;
    };
    let query = Query {
        id: header.id,
        name: &name,
        qtype,
        bytes: &[],
    };
    if !query.matches(&header, question.as_ref()) {
        return Verdict::Ignored;
    }
    if header.tc() {
        return Verdict::Truncated;
    }
    let Ok(msg) = wire::parse(response) else {
        return Verdict::Malformed;
    };
    if !matches!(msg.rcode, wire::RCODE_NOERROR | wire::RCODE_NXDOMAIN) {
        return Verdict::Rcode(msg.rcode);
    }
    let mut chain = vec![name];
    match chase(&msg, &mut chain, qtype) {
        Ok(Chase::Records(r)) => Verdict::Records(r.iter().map(record).collect()),
        Ok(Chase::NxDomain) | Err(DnsError::NxDomain) => Verdict::NxDomain,
        Ok(Chase::NoData) | Err(DnsError::NoData) => Verdict::NoData,
        Ok(Chase::Requery) => {
            Verdict::Requery(chain.last().map(|n| n.wire().to_vec()).unwrap_or_default())
        }
        Err(DnsError::Temporary(why)) => Verdict::Temporary(why),
    }
}

/// `control/nameservers`.
pub fn nameservers(data: &[u8]) -> Result<Vec<SocketAddr>, Failure> {
    super::parse_nameservers(data)
}

/// `$DNSCACHEIP`.
pub fn dnscacheip(value: &[u8]) -> Vec<SocketAddr> {
    super::parse_dnscacheip(value)
}

/// `/etc/resolv.conf`: servers, `timeout:` and `attempts:`.
pub fn resolv_conf(data: &[u8]) -> (Vec<SocketAddr>, Option<Duration>, Option<u32>) {
    let c = super::parse_resolv_conf(data);
    (c.servers, c.timeout, c.attempts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// ID 7, QR RD RA, question mx.qremote.test A, one answer 127.0.0.25 (compressed owner).
    fn response() -> Vec<u8> {
        let mut m = vec![0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x02mx\x07qremote\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 25]);
        m
    }

    #[test]
    fn entry_points_run_the_resolver_code() {
        let m = response();
        let a = Record::A(Ipv4Addr::new(127, 0, 0, 25));
        assert_eq!(
            answer(b"MX.qremote.test.", wire::TYPE_A, &m),
            Verdict::Records(vec![a.clone()])
        );
        assert_eq!(answer(b"other.test", wire::TYPE_A, &m), Verdict::Ignored);
        assert_eq!(
            answer(b"mx.qremote.test", wire::TYPE_MX, &m),
            Verdict::Ignored
        );
        let d = decode(&m).unwrap();
        assert_eq!(
            d.answers,
            vec![(b"\x02mx\x07qremote\x04test\x00".to_vec(), a)]
        );
        assert_eq!((d.id, d.rcode, d.edns), (7, 0, None));
        assert!(decode(&m[..m.len() - 1]).is_none());
    }
}
