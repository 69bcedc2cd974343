//! Codec tests on hand-built packets, fuzzing, and the resolver against fake servers on
//! 127.0.0.1 (UDP and TCP, in threads).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::wire::*;
use super::*;

// ---------- builders ----------

/// Uncompressed wire form of dotted text.
fn w(text: &str) -> Vec<u8> {
    Name::from_text(text.as_bytes()).unwrap().wire().to_vec()
}

fn name(text: &str) -> Name {
    Name::from_text(text.as_bytes()).unwrap()
}

fn mx_rdata(pref: u16, host: &[u8]) -> Vec<u8> {
    let mut r = pref.to_be_bytes().to_vec();
    r.extend_from_slice(host);
    r
}

/// A response under construction. Records must be added section by section, in order.
struct Resp {
    buf: Vec<u8>,
    counts: [u16; 4],
}

impl Resp {
    fn new(id: u16, flags: u16) -> Resp {
        let mut buf = id.to_be_bytes().to_vec();
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Resp {
            buf,
            counts: [0; 4],
        }
    }

    /// A response to `query`: same ID and question, QR, RD, RA, and `rcode` plus `flags`.
    fn to(query: &[u8], rcode: u16, flags: u16) -> Resp {
        let (h, _, end) = parse_head(query).unwrap();
        let mut r = Resp::new(h.id, FLAG_QR | FLAG_RD | FLAG_RA | flags | rcode);
        r.buf.extend_from_slice(&query[12..end]);
        r.counts[0] = 1;
        r
    }

    fn question(mut self, qname: &[u8], qtype: u16) -> Resp {
        self.buf.extend_from_slice(qname);
        self.buf.extend_from_slice(&qtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.counts[0] += 1;
        self
    }

    /// Adds a record to `section` (1 answer, 2 authority, 3 additional); `owner` is raw wire
    /// bytes (may hold pointers).
    fn rr_class(
        mut self,
        section: usize,
        owner: &[u8],
        rtype: u16,
        class: u16,
        rdata: &[u8],
    ) -> Resp {
        self.buf.extend_from_slice(owner);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        self.buf.extend_from_slice(&300u32.to_be_bytes());
        self.buf
            .extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        self.buf.extend_from_slice(rdata);
        self.counts[section] += 1;
        self
    }

    fn an(self, owner: &[u8], rtype: u16, rdata: &[u8]) -> Resp {
        self.rr_class(1, owner, rtype, CLASS_IN, rdata)
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn build(mut self) -> Vec<u8> {
        for (i, c) in self.counts.iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }
}

/// A response exercising every section: question, CNAME, compressed MX, an authority record of
/// another type, and OPT.
fn rich_response() -> Vec<u8> {
    // Question name at offset 12.
    let r = Resp::new(0xBEEF, FLAG_QR | FLAG_RD | FLAG_RA | FLAG_AD)
        .question(&w("example.com"), TYPE_MX);
    // example.com CNAME mail.example.net
    let cname_target_off = r.len() + 12;
    let r = r.an(&[0xC0, 12], TYPE_CNAME, &w("mail.example.net"));
    // mail.example.net (pointer to the CNAME target) MX 10 mx1.<pointer to mail.example.net>
    let mut host = vec![3, b'm', b'x', b'1', 0xC0, cname_target_off as u8];
    let mut rdata = 10u16.to_be_bytes().to_vec();
    rdata.append(&mut host);
    let r = r.an(&[0xC0, cname_target_off as u8], TYPE_MX, &rdata);
    // Authority: an SOA-typed record with opaque data, skipped.
    let r = r.rr_class(2, &[0xC0, 12], 6, CLASS_IN, &[1, 2, 3, 4, 5]);
    // Additional: OPT with one option (code 10, 2 bytes), extended rcode 0, DO.
    let r = r.rr_class(3, &[0], TYPE_OPT, 1232, &[0, 10, 0, 2, 0xAA, 0xBB]);
    r.build()
}

fn chain_of(names: &[&str]) -> Vec<Name> {
    names.iter().map(|n| name(n)).collect()
}

// ---------- codec ----------

#[test]
fn query_encodes_and_decodes_back() {
    let q = encode_query(0x1234, &name("Example.COM."), TYPE_MX, true);
    let m = parse(&q).unwrap();
    assert_eq!(m.header.id, 0x1234);
    assert!(!m.header.qr());
    assert_eq!(m.header.flags, FLAG_RD | FLAG_AD);
    assert_eq!(
        (
            m.header.qdcount,
            m.header.ancount,
            m.header.nscount,
            m.header.arcount
        ),
        (1, 0, 0, 1)
    );
    let question = m.question.unwrap();
    assert!(question.name.eq_ci(&name("example.com")));
    assert_eq!(question.name.to_text(), b"Example.COM");
    assert_eq!((question.qtype, question.qclass), (TYPE_MX, CLASS_IN));
    assert_eq!(
        m.opt,
        Some(Opt {
            payload: 1232,
            version: 0,
            dnssec_ok: true
        })
    );
    assert!(m.answers.is_empty());

    let q = encode_query(7, &name("a.b"), TYPE_AAAA, false);
    let m = parse(&q).unwrap();
    assert_eq!(m.header.arcount, 0);
    assert!(m.opt.is_none());
    assert_eq!(q.len(), 12 + 5 + 4);
}

#[test]
fn names_from_text() {
    assert_eq!(name("").wire(), &[0]);
    assert_eq!(name(".").wire(), &[0]);
    assert_eq!(name("a.").wire(), &[1, b'a', 0]);
    assert_eq!(name("a.").to_text(), b"a");
    assert_eq!(Name::root().to_text(), b"");
    for bad in ["a..b", ".a", "a..", &"x".repeat(64)] {
        assert!(Name::from_text(bad.as_bytes()).is_none(), "{bad}");
    }
    assert!(Name::from_text("x".repeat(63).as_bytes()).is_some());
    // 4 labels of 63 = 4 * 64 + 1 = 257 bytes; 3 of 63 and one of 61 = 255.
    let l63 = "x".repeat(63);
    let too_long = format!("{l63}.{l63}.{l63}.{l63}");
    assert!(Name::from_text(too_long.as_bytes()).is_none());
    let max = format!("{l63}.{l63}.{l63}.{}", "y".repeat(61));
    assert_eq!(Name::from_text(max.as_bytes()).unwrap().wire().len(), 255);
    // Case-insensitive equality; non-ASCII bytes and dots inside labels kept.
    assert!(name("MX.Example").eq_ci(&name("mx.example")));
    let odd = parse_name_at(&[3, b'a', b'.', 0xFF, 0], 0).unwrap();
    assert_eq!(odd.to_text(), b"a.\xFF");
    assert!(!odd.eq_ci(&name("a.\u{FF}")));
}

fn parse_name_at(msg: &[u8], pos: usize) -> Result<Name, Malformed> {
    let mut out = Vec::new();
    read_name(msg, pos, &mut out)?;
    Ok(wire_name(out))
}

/// Makes a `Name` from uncompressed wire bytes by parsing them as a question.
fn wire_name(wire: Vec<u8>) -> Name {
    let mut pkt = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(&wire);
    pkt.extend_from_slice(&[0, 1, 0, 1]);
    parse_head(&pkt).unwrap().1.unwrap().name
}

#[test]
fn compression_pointers_decode() {
    let pkt = rich_response();
    let m = parse(&pkt).unwrap();
    assert_eq!(m.header.id, 0xBEEF);
    assert!(m.ad());
    assert_eq!(m.rcode, RCODE_NOERROR);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[0].owner.to_text(), b"example.com");
    match &m.answers[0].data {
        RData::Cname(t) => assert_eq!(t.to_text(), b"mail.example.net"),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.answers[1].owner.to_text(), b"mail.example.net");
    match &m.answers[1].data {
        RData::Mx { pref, host } => {
            assert_eq!(*pref, 10);
            assert_eq!(host.to_text(), b"mx1.mail.example.net");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.opt,
        Some(Opt {
            payload: 1232,
            version: 0,
            dnssec_ok: false
        })
    );
    // Nested pointers: c -> b -> a.
    let msg = [
        1, b'a', 0, // 0: "a"
        1, b'b', 0xC0, 0, // 3: "b.a"
        1, b'c', 0xC0, 3, // 7: "c.b.a"
    ];
    assert_eq!(parse_name_at(&msg, 7).unwrap().to_text(), b"c.b.a");
    let mut out = Vec::new();
    assert_eq!(read_name(&msg, 7, &mut out), Ok(11));
}

#[test]
fn pointer_loops_and_bad_names_rejected() {
    let mut out = Vec::new();
    // Pointer to itself.
    assert_eq!(read_name(&[0xC0, 0], 0, &mut out), Err(Malformed));
    // Label then a pointer back into the same run (backwards, but a loop).
    assert_eq!(read_name(&[1, b'x', 0xC0, 0], 0, &mut out), Err(Malformed));
    // Forward pointer.
    assert_eq!(read_name(&[0xC0, 2, 0], 0, &mut out), Err(Malformed));
    // Two names pointing at each other.
    let msg = [1, b'a', 0xC0, 4, 1, b'b', 0xC0, 0];
    assert_eq!(read_name(&msg, 4, &mut out), Err(Malformed));
    assert_eq!(read_name(&msg, 0, &mut out), Err(Malformed));
    // Reserved label types 01 and 10.
    assert_eq!(read_name(&[0x41, 0], 0, &mut out), Err(Malformed));
    assert_eq!(read_name(&[0x81, 0], 0, &mut out), Err(Malformed));
    // Pointer missing its second byte; label running off the end; no final zero.
    assert_eq!(read_name(&[0, 0xC0], 1, &mut out), Err(Malformed));
    assert_eq!(read_name(&[5, b'a'], 0, &mut out), Err(Malformed));
    assert_eq!(read_name(&[1, b'a'], 0, &mut out), Err(Malformed));
    // 257 bytes uncompressed.
    let mut long = Vec::new();
    for _ in 0..4 {
        long.push(63);
        long.extend_from_slice(&[b'x'; 63]);
    }
    long.push(0);
    assert_eq!(read_name(&long, 0, &mut out), Err(Malformed));
    // Over 255 bytes through pointers: each name adds 63 bytes to the previous one.
    let mut msg = vec![63];
    msg.extend_from_slice(&[b'x'; 63]);
    msg.push(0);
    let mut prev = 0u16;
    for _ in 0..4 {
        let here = u16::try_from(msg.len()).unwrap();
        msg.push(63);
        msg.extend_from_slice(&[b'y'; 63]);
        msg.extend_from_slice(&(0xC000 | prev).to_be_bytes());
        prev = here;
    }
    assert_eq!(read_name(&msg, usize::from(prev), &mut out), Err(Malformed));
    // 127 one-byte labels fit exactly.
    let mut many = Vec::new();
    for _ in 0..127 {
        many.extend_from_slice(&[1, b'z']);
    }
    many.push(0);
    assert_eq!(read_name(&many, 0, &mut out), Ok(255));
    assert_eq!(out.len(), 255);
}

#[test]
fn every_truncation_is_an_error() {
    let pkt = rich_response();
    assert!(parse(&pkt).is_ok());
    for len in 0..pkt.len() {
        assert!(parse(&pkt[..len]).is_err(), "prefix of {len} bytes parsed");
    }
}

#[test]
fn bad_rdata_is_malformed() {
    let base = || Resp::new(1, FLAG_QR).question(&w("x"), TYPE_A);
    // A with 5 bytes, AAAA with 15, MX name not filling RDATA, TLSA under 3 bytes.
    let cases = [
        base().an(&w("x"), TYPE_A, &[1, 2, 3, 4, 5]).build(),
        base().an(&w("x"), TYPE_AAAA, &[0; 15]).build(),
        base().an(&w("x"), TYPE_MX, &[0, 1, 0, 0]).build(),
        base().an(&w("x"), TYPE_MX, &[0]).build(),
        base().an(&w("x"), TYPE_CNAME, &[2, b'a']).build(),
        base().an(&w("x"), TYPE_TLSA, &[3, 1]).build(),
        // OPT with a non-root owner, and with a bad option list.
        base().rr_class(3, &w("x"), TYPE_OPT, 1232, &[]).build(),
        base()
            .rr_class(3, &[0], TYPE_OPT, 1232, &[0, 1, 0, 9])
            .build(),
        // RDLENGTH beyond the packet.
        {
            let mut p = base().an(&w("x"), TYPE_A, &[1, 2, 3, 4]).build();
            let n = p.len();
            p[n - 5] = 9;
            p
        },
        // Two questions.
        base().question(&w("y"), TYPE_A).build(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(parse(c).is_err(), "case {i}");
    }
    // Other classes and unknown types are skipped, whatever their data.
    let ok = base()
        .rr_class(1, &w("x"), TYPE_A, 3, &[1, 2])
        .an(&w("x"), 99, b"\x03spf")
        .an(&w("x"), TYPE_A, &[192, 0, 2, 1])
        .build();
    let m = parse(&ok).unwrap();
    assert_eq!(m.answers.len(), 1);
    assert!(matches!(m.answers[0].data, RData::A(a) if a == Ipv4Addr::new(192, 0, 2, 1)));
}

#[test]
fn null_mx_aaaa_tlsa_and_extended_rcode() {
    let pkt = Resp::new(1, FLAG_QR)
        .question(&w("x"), TYPE_MX)
        .an(&[0xC0, 12], TYPE_MX, &mx_rdata(0, &[0]))
        .an(
            &w("x"),
            TYPE_AAAA,
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        )
        .an(&w("x"), TYPE_TLSA, &[3, 1, 1, 0xAB, 0xCD])
        .rr_class(3, &[0], TYPE_OPT, 512, &[])
        .build();
    // Extended RCODE 1 (BADVERS = 16) in the OPT TTL.
    let mut pkt = pkt;
    let n = pkt.len();
    pkt[n - 6] = 1;
    let m = parse(&pkt).unwrap();
    assert_eq!(m.rcode, 16);
    match &m.answers[0].data {
        RData::Mx { pref: 0, host } => assert_eq!(host.to_text(), b""),
        other => panic!("{other:?}"),
    }
    match &m.answers[1].data {
        RData::Aaaa(a) => assert_eq!(a.to_string(), "2001:db8::1"),
        other => panic!("{other:?}"),
    }
    match &m.answers[2].data {
        RData::Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data,
        } => assert_eq!(data, &[0xAB, 0xCD]),
        other => panic!("{other:?}"),
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn exercise(pkt: &[u8]) {
    let _ = parse_head(pkt);
    if let Ok(m) = parse(pkt) {
        for qtype in [TYPE_MX, TYPE_A] {
            let mut chain = vec![name("example.com")];
            let _ = chase(&m, &mut chain, qtype);
            assert!(chain.len() <= MAX_CNAME + 1);
        }
        for r in &m.answers {
            assert!(r.owner.wire().len() <= 255);
            let _ = r.owner.to_text();
        }
    }
}

#[test]
fn fuzz_random_packets_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut pkt = Vec::new();
    for i in 0..20_000 {
        pkt.clear();
        let len = rng.below(600);
        // Half the packets get a plausible header with small counts to get past it.
        for _ in 0..len {
            pkt.push(rng.next() as u8);
        }
        if i % 2 == 0 && pkt.len() >= 12 {
            for c in 0..4 {
                pkt[4 + 2 * c] = 0;
                pkt[5 + 2 * c] = (rng.below(4)) as u8;
            }
            pkt[5] = 1;
        }
        exercise(&pkt);
    }
    // Mutations of a valid packet reach deeper.
    let base = rich_response();
    for _ in 0..20_000 {
        pkt.clear();
        pkt.extend_from_slice(&base);
        for _ in 0..=rng.below(4) {
            let at = rng.below(pkt.len());
            pkt[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            pkt.truncate(rng.below(base.len()));
        }
        exercise(&pkt);
    }
}

// ---------- CNAME chasing and result combination ----------

fn msg(rcode: u16, answers: &[(&str, RData)]) -> Message {
    let mut r =
        Resp::new(1, FLAG_QR | rcode).question(&w(answers.first().map_or("q", |a| a.0)), TYPE_MX);
    for (owner, data) in answers {
        let (t, rd) = match data {
            RData::Cname(n) => (TYPE_CNAME, n.wire().to_vec()),
            RData::Mx { pref, host } => (TYPE_MX, mx_rdata(*pref, host.wire())),
            RData::A(a) => (TYPE_A, a.octets().to_vec()),
            _ => unreachable!(),
        };
        r = r.an(&w(owner), t, &rd);
    }
    parse(&r.build()).unwrap()
}

fn cname(t: &str) -> RData {
    RData::Cname(name(t))
}
fn mx(pref: u16, h: &str) -> RData {
    RData::Mx {
        pref,
        host: name(h),
    }
}

#[test]
fn chase_follows_chain_case_insensitively() {
    let m = msg(
        RCODE_NOERROR,
        &[
            ("example.com", cname("A.example.net")),
            ("a.EXAMPLE.net", cname("b.example.org")),
            ("b.example.org", mx(10, "mx1.b.example.org")),
            ("unrelated.test", mx(5, "evil.test")),
            ("B.example.org", mx(20, "mx2.b.example.org")),
        ],
    );
    let mut chain = chain_of(&["example.com"]);
    match chase(&m, &mut chain, TYPE_MX).unwrap() {
        Chase::Records(r) => {
            let hosts: Vec<_> = r
                .iter()
                .map(|d| match d {
                    RData::Mx { pref, host } => (*pref, host.to_text()),
                    _ => panic!(),
                })
                .collect();
            assert_eq!(
                hosts,
                vec![
                    (10, b"mx1.b.example.org".to_vec()),
                    (20, b"mx2.b.example.org".to_vec())
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(chain.len(), 3);
    // Records owned by an earlier name of the chain are tolerated.
    let m = msg(
        RCODE_NOERROR,
        &[("x.test", cname("y.test")), ("x.test", mx(1, "m.test"))],
    );
    let mut chain = chain_of(&["x.test"]);
    assert!(matches!(chase(&m, &mut chain, TYPE_MX), Ok(Chase::Records(r)) if r.len() == 1));
}

#[test]
fn chase_outcomes() {
    // Chain without final records: re-query the end.
    let m = msg(RCODE_NOERROR, &[("x.test", cname("y.test"))]);
    let mut chain = chain_of(&["x.test"]);
    assert!(matches!(chase(&m, &mut chain, TYPE_MX), Ok(Chase::Requery)));
    assert_eq!(chain.last().unwrap().to_text(), b"y.test");
    // NXDOMAIN of the target.
    let m = msg(RCODE_NXDOMAIN, &[("x.test", cname("y.test"))]);
    let mut chain = chain_of(&["x.test"]);
    assert!(matches!(
        chase(&m, &mut chain, TYPE_MX),
        Ok(Chase::NxDomain)
    ));
    // NODATA: no chain, no records (records of another type do not count).
    let m = msg(RCODE_NOERROR, &[("x.test", RData::A(Ipv4Addr::LOCALHOST))]);
    let mut chain = chain_of(&["x.test"]);
    assert!(matches!(chase(&m, &mut chain, TYPE_MX), Ok(Chase::NoData)));
    // Loop.
    let m = msg(
        RCODE_NOERROR,
        &[("a.test", cname("b.test")), ("b.test", cname("A.TEST"))],
    );
    let mut chain = chain_of(&["a.test"]);
    assert_eq!(
        chase(&m, &mut chain, TYPE_MX).unwrap_err(),
        DnsError::Temporary("CNAME loop".into())
    );
    // 8 hops are fine, 9 are not.
    for (hops, ok) in [(8, true), (9, false)] {
        let names: Vec<String> = (0..=hops).map(|i| format!("n{i}.test")).collect();
        let mut answers: Vec<(&str, RData)> = (0..hops)
            .map(|i| (names[i].as_str(), cname(&names[i + 1])))
            .collect();
        answers.push((names[hops].as_str(), mx(1, "m.test")));
        let m = msg(RCODE_NOERROR, &answers);
        let mut chain = chain_of(&["n0.test"]);
        let r = chase(&m, &mut chain, TYPE_MX);
        if ok {
            assert!(matches!(r, Ok(Chase::Records(_))), "{hops}: {r:?}");
        } else {
            assert_eq!(
                r.unwrap_err(),
                DnsError::Temporary("CNAME chain too long".into())
            );
        }
    }
}

#[test]
fn ips_combination_rules() {
    let a = |ip: [u8; 4]| Ok((vec![RData::A(Ipv4Addr::from(ip))], true));
    let temp = || Err(DnsError::Temporary("timed out".into()));
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        combine_ips(vec![a([192, 0, 2, 1]), Ok((vec![RData::Aaaa(v6)], false))]),
        Ok((vec![IpAddr::from([192, 0, 2, 1]), IpAddr::V6(v6)], false))
    );
    assert_eq!(
        combine_ips(vec![a([192, 0, 2, 1]), temp()]),
        Ok((vec![IpAddr::from([192, 0, 2, 1])], true))
    );
    assert_eq!(
        combine_ips(vec![Err(DnsError::NxDomain), temp()]),
        Err(DnsError::Temporary("timed out".into()))
    );
    assert_eq!(
        combine_ips(vec![temp(), Err(DnsError::NxDomain)]),
        Err(DnsError::Temporary("timed out".into()))
    );
    assert_eq!(
        combine_ips(vec![Err(DnsError::NoData), Err(DnsError::NxDomain)]),
        Err(DnsError::NxDomain)
    );
    assert_eq!(
        combine_ips(vec![Err(DnsError::NoData), Err(DnsError::NoData)]),
        Err(DnsError::NoData)
    );
    assert_eq!(combine_ips(vec![]), Err(DnsError::NoData));
}

// ---------- configuration ----------

#[test]
fn dnscacheip_parsing() {
    let got = parse_dnscacheip(b" 127.0.0.1 ,::1,,10.0.0.1\t192.0.2.9 junk 1.2.3.4:53 ");
    let want: Vec<SocketAddr> = ["127.0.0.1:53", "[::1]:53", "10.0.0.1:53", "192.0.2.9:53"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    assert!(parse_dnscacheip(b"").is_empty());
}

#[test]
fn nameservers_file_parsing() {
    let got =
        parse_nameservers(b"# ours\n127.0.0.1\n\n1.2.3.4:5353\n::1\n[::1]:5353 \r\n").unwrap();
    let want: Vec<SocketAddr> = ["127.0.0.1:53", "1.2.3.4:5353", "[::1]:53", "[::1]:5353"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    for (data, line) in [
        (&b"127.0.0.1\nnot-an-ip\n"[..], 2),
        (b"1.2.3.4:0\n", 1),
        (b"\n\n::1:53:\n", 3),
    ] {
        match parse_nameservers(data) {
            Err(Failure::ControlSyntax {
                file: "nameservers",
                line: l,
                ..
            }) => assert_eq!(l, line),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn resolv_conf_parsing() {
    let conf = parse_resolv_conf(
        b"# generated\nsearch example.com\nnameserver 10.0.0.1 # main\n; old\n\
          nameserver fe80::1%7\nnameserver bogus\n  nameserver\t::1\nnameserver 10.0.0.4\n\
          options ndots:2 timeout:1 attempts:9\n",
    );
    let want: Vec<SocketAddr> = vec![
        "10.0.0.1:53".parse().unwrap(),
        SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 7)),
        "[::1]:53".parse().unwrap(),
    ];
    assert_eq!(conf.servers, want);
    assert_eq!(conf.timeout, Some(Duration::from_secs(1)));
    assert_eq!(conf.attempts, Some(5));
    assert_eq!(parse_resolv_conf(b""), ResolvConf::default());
    let conf = parse_resolv_conf(b"options timeout:0 attempts:0\noptions timeout:99\n");
    assert_eq!(conf.timeout, Some(Duration::from_secs(30)));
    assert_eq!(conf.attempts, Some(1));
}

#[test]
fn random_ids_vary() {
    let mut r = Resolver::new(vec![], Duration::from_millis(10), 1);
    let ids: std::collections::HashSet<u16> = (0..100).map(|_| r.next_id()).collect();
    assert!(ids.len() > 90);
    assert_eq!(
        r.mx(b"x.test"),
        Err(DnsError::Temporary("no nameservers configured".into()))
    );
}

// ---------- against fake servers ----------

const T: Duration = Duration::from_millis(200);

/// A UDP server on 127.0.0.1 answering up to `n` queries with the datagrams `handler` returns.
fn udp_server<F>(n: usize, mut handler: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
{
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let Ok((len, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            for d in handler(&buf[..len]) {
                sock.send_to(&d, peer).unwrap();
            }
        }
    });
    (addr, h)
}

fn question_of(query: &[u8]) -> (Header, Question) {
    let (h, q, _) = parse_head(query).unwrap();
    (h, q.unwrap())
}

fn one(server: SocketAddr) -> Resolver {
    Resolver::new(vec![server], T, 1)
}

#[test]
fn net_truncated_udp_retries_over_tcp() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (len, peer) = sock.recv_from(&mut buf).unwrap();
        assert!(parse(&buf[..len]).unwrap().opt.is_some());
        sock.send_to(&Resp::to(&buf[..len], 0, FLAG_TC).build(), peer)
            .unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut prefix = [0u8; 2];
        conn.read_exact(&mut prefix).unwrap();
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        conn.read_exact(&mut query).unwrap();
        let mut r = Resp::to(&query, 0, 0);
        for i in 0..40u16 {
            let host = w(&format!("mx-{i:02}.a-rather-long-mail-host-name.example"));
            r = r.an(&[0xC0, 12], TYPE_MX, &mx_rdata(i, &host));
        }
        let answer = r.build();
        assert!(answer.len() > 512);
        let mut framed = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        // Written in two pieces to exercise reassembly.
        conn.write_all(&framed[..100]).unwrap();
        conn.flush().unwrap();
        conn.write_all(&framed[100..]).unwrap();
    });
    let got = one(addr).mx(b"big.example.").unwrap();
    assert_eq!(got.len(), 40);
    assert_eq!(
        got[39],
        Mx {
            pref: 39,
            host: b"mx-39.a-rather-long-mail-host-name.example".to_vec()
        }
    );
    h.join().unwrap();
}

#[test]
fn net_ignores_datagrams_that_do_not_match() {
    let (addr, h) = udp_server(1, |q| {
        let good = Resp::to(q, 0, 0)
            .an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 7])
            .build();
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        let mut not_response = good.clone();
        not_response[2] &= 0x7F;
        let wrong_question = Resp::new(u16::from_be_bytes([q[0], q[1]]), FLAG_QR)
            .question(&w("other.test"), TYPE_A)
            .an(&w("other.test"), TYPE_A, &[192, 0, 2, 66])
            .build();
        let wrong_type = Resp::new(u16::from_be_bytes([q[0], q[1]]), FLAG_QR)
            .question(&w("host.test"), TYPE_AAAA)
            .build();
        vec![
            wrong_id,
            not_response,
            wrong_question,
            wrong_type,
            b"junk".to_vec(),
            good,
        ]
    });
    assert_eq!(
        one(addr).ips(b"HOST.test", true, false),
        Ok(vec![IpAddr::from([192, 0, 2, 7])])
    );
    h.join().unwrap();
}

#[test]
fn net_servfail_then_next_server() {
    let (bad, h1) = udp_server(1, |q| vec![Resp::to(q, RCODE_SERVFAIL, 0).build()]);
    let (good, h2) = udp_server(1, |q| {
        vec![
            Resp::to(q, 0, 0)
                .an(&[0xC0, 12], TYPE_MX, &mx_rdata(5, &w("mx.test")))
                .build(),
        ]
    });
    let mut r = Resolver::new(vec![bad, good], T, 1);
    assert_eq!(
        r.mx(b"x.test"),
        Ok(vec![Mx {
            pref: 5,
            host: b"mx.test".to_vec()
        }])
    );
    h1.join().unwrap();
    h2.join().unwrap();
}

#[test]
fn net_all_fail_is_temporary() {
    // Two rounds over one server: REFUSED then SERVFAIL; the first RCODE is reported.
    let mut n = 0;
    let (addr, h) = udp_server(2, move |q| {
        n += 1;
        let rcode = if n == 1 {
            RCODE_REFUSED
        } else {
            RCODE_SERVFAIL
        };
        vec![Resp::to(q, rcode, 0).build()]
    });
    let mut r = Resolver::new(vec![addr], T, 2);
    assert_eq!(
        r.mx(b"x.test"),
        Err(DnsError::Temporary("REFUSED from 127.0.0.1".into()))
    );
    h.join().unwrap();
    // A server that answers nonsense with the right ID and question.
    let (addr, h) = udp_server(1, |q| {
        let mut p = Resp::to(q, 0, 0).build();
        p[7] = 1; // one answer that is not there
        vec![p]
    });
    assert_eq!(
        one(addr).mx(b"x.test"),
        Err(DnsError::Temporary(
            "malformed answer from 127.0.0.1".into()
        ))
    );
    h.join().unwrap();
}

#[test]
fn net_timeout_is_temporary() {
    let (addr, h) = udp_server(1, |_| vec![]);
    let start = Instant::now();
    assert_eq!(
        one(addr).mx(b"x.test"),
        Err(DnsError::Temporary("timed out".into()))
    );
    let took = start.elapsed();
    assert!(took >= T && took < Duration::from_secs(3), "{took:?}");
    h.join().unwrap();
}

#[test]
fn net_closed_port_then_next_server() {
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (good, h) = udp_server(1, |q| {
        vec![
            Resp::to(q, 0, 0)
                .an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 1])
                .build(),
        ]
    });
    let mut r = Resolver::new(vec![closed, good], T, 1);
    assert_eq!(
        r.ips(b"x.test", true, false),
        Ok(vec![IpAddr::from([192, 0, 2, 1])])
    );
    h.join().unwrap();
    // Alone, the closed port gives a network error, not a timeout.
    match Resolver::new(vec![closed], T, 1).mx(b"x.test") {
        Err(DnsError::Temporary(t)) => assert!(t.contains("127.0.0.1"), "{t}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn net_nxdomain_and_nodata() {
    let (addr, h) = udp_server(1, |q| vec![Resp::to(q, RCODE_NXDOMAIN, 0).build()]);
    assert_eq!(one(addr).mx(b"nx.test"), Err(DnsError::NxDomain));
    h.join().unwrap();
    let (addr, h) = udp_server(1, |q| {
        vec![
            Resp::to(q, 0, 0)
                .an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 1])
                .build(),
        ]
    });
    assert_eq!(one(addr).mx(b"nodata.test"), Err(DnsError::NoData));
    h.join().unwrap();
    // NXDOMAIN at the end of a CNAME chain.
    let (addr, h) = udp_server(1, |q| {
        vec![
            Resp::to(q, RCODE_NXDOMAIN, 0)
                .an(&[0xC0, 12], TYPE_CNAME, &w("gone.test"))
                .build(),
        ]
    });
    assert_eq!(one(addr).mx(b"alias.test"), Err(DnsError::NxDomain));
    h.join().unwrap();
    // An impossible name is NXDOMAIN without a query.
    assert_eq!(one(addr).mx(b"a..b"), Err(DnsError::NxDomain));
}

#[test]
fn net_formerr_to_edns_retries_without() {
    let (addr, h) = udp_server(2, |q| {
        let m = parse(q).unwrap();
        if m.opt.is_some() {
            vec![Resp::to(q, RCODE_FORMERR, 0).build()]
        } else {
            vec![
                Resp::to(q, 0, 0)
                    .an(&[0xC0, 12], TYPE_MX, &mx_rdata(0, &[0]))
                    .build(),
            ]
        }
    });
    // The null MX comes back with an empty host.
    assert_eq!(
        one(addr).mx(b"nullmx.test"),
        Ok(vec![Mx {
            pref: 0,
            host: vec![]
        }])
    );
    h.join().unwrap();
}

#[test]
fn net_cname_target_requeried() {
    let (addr, h) = udp_server(2, |q| {
        let (_, question) = question_of(q);
        assert_eq!(question.qtype, TYPE_MX);
        match question.name.to_text().as_slice() {
            b"alias.test" => vec![
                Resp::to(q, 0, 0)
                    .an(&[0xC0, 12], TYPE_CNAME, &w("real.test"))
                    .build(),
            ],
            b"real.test" => vec![
                Resp::to(q, 0, FLAG_AD)
                    .an(&[0xC0, 12], TYPE_MX, &mx_rdata(10, &w("mx.real.test")))
                    .build(),
            ],
            other => panic!("{other:?}"),
        }
    });
    // AD only on the second answer: the combined answer is not authenticated.
    assert_eq!(
        one(addr).mx_ad(b"alias.test"),
        Ok((
            vec![Mx {
                pref: 10,
                host: b"mx.real.test".to_vec()
            }],
            false
        ))
    );
    h.join().unwrap();
}

#[test]
fn net_endless_cname_chain_stops() {
    let (addr, h) = udp_server(9, |q| {
        let (_, question) = question_of(q);
        let text = String::from_utf8(question.name.to_text()).unwrap();
        let n: u32 = text[1..text.len() - 5].parse().unwrap();
        vec![
            Resp::to(q, 0, 0)
                .an(&[0xC0, 12], TYPE_CNAME, &w(&format!("n{}.test", n + 1)))
                .build(),
        ]
    });
    assert_eq!(
        one(addr).mx(b"n0.test"),
        Err(DnsError::Temporary("CNAME chain too long".into()))
    );
    h.join().unwrap();
}

#[test]
fn net_ips_and_tlsa() {
    let (addr, h) = udp_server(2, |q| {
        let (_, question) = question_of(q);
        match question.qtype {
            TYPE_A => vec![
                Resp::to(q, 0, 0)
                    .an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 1])
                    .an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 2])
                    .build(),
            ],
            _ => vec![Resp::to(q, RCODE_SERVFAIL, 0).build()],
        }
    });
    assert_eq!(
        one(addr).ips(b"h.test", true, true),
        Ok(vec![
            IpAddr::from([192, 0, 2, 1]),
            IpAddr::from([192, 0, 2, 2])
        ])
    );
    h.join().unwrap();

    let (addr, h) = udp_server(2, |q| {
        let (_, question) = question_of(q);
        match question.qtype {
            TYPE_AAAA => vec![
                Resp::to(q, 0, 0)
                    .an(&[0xC0, 12], TYPE_AAAA, &Ipv6Addr::LOCALHOST.octets())
                    .build(),
            ],
            _ => vec![Resp::to(q, 0, 0).build()],
        }
    });
    assert_eq!(
        one(addr).ips(b"h.test", true, true),
        Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
    );
    h.join().unwrap();

    let (addr, h) = udp_server(1, |q| {
        let (_, question) = question_of(q);
        assert_eq!(question.qtype, TYPE_TLSA);
        assert_eq!(question.name.to_text(), b"_25._tcp.mx.test");
        let (header, _) = question_of(q);
        assert!(header.ad());
        vec![
            Resp::to(q, 0, FLAG_AD)
                .an(&[0xC0, 12], TYPE_TLSA, &[3, 1, 1, 1, 2, 3])
                .an(&[0xC0, 12], TYPE_TLSA, &[2, 0, 0])
                .build(),
        ]
    });
    assert_eq!(
        one(addr).tlsa(b"_25._tcp.mx.test"),
        Ok((
            vec![
                Tlsa {
                    usage: 3,
                    selector: 1,
                    matching: 1,
                    data: vec![1, 2, 3]
                },
                Tlsa {
                    usage: 2,
                    selector: 0,
                    matching: 0,
                    data: vec![]
                }
            ],
            true
        ))
    );
    h.join().unwrap();
}

#[test]
fn txt_strings_are_joined_and_bounded() {
    let pkt = Resp::new(1, FLAG_QR)
        .question(&w("x"), TYPE_TXT)
        .an(&[0xC0, 12], TYPE_TXT, b"\x07v=STSv1\x05; id=\x011")
        .an(&[0xC0, 12], TYPE_TXT, b"")
        .build();
    let m = parse(&pkt).unwrap();
    match &m.answers[0].data {
        RData::Txt(t) => assert_eq!(t, b"v=STSv1; id=1"),
        other => panic!("{other:?}"),
    }
    match &m.answers[1].data {
        RData::Txt(t) => assert!(t.is_empty()),
        other => panic!("{other:?}"),
    }
    // A length byte that runs past the RDATA.
    let bad = Resp::new(1, FLAG_QR)
        .question(&w("x"), TYPE_TXT)
        .an(&[0xC0, 12], TYPE_TXT, b"\x09short")
        .build();
    assert!(parse(&bad).is_err());
}

#[test]
fn net_expanded_name_of_an_alias() {
    let (addr, h) = udp_server(2, |q| {
        let (_, question) = question_of(q);
        assert_eq!(question.qtype, TYPE_A);
        let r = Resp::to(q, 0, FLAG_AD);
        match question.name.to_text().as_slice() {
            b"alias.test" => vec![
                r.an(&[0xC0, 12], TYPE_CNAME, &w("real.test"))
                    .an(&w("real.test"), TYPE_A, &[192, 0, 2, 1])
                    .build(),
            ],
            b"Real.TEST" => vec![r.an(&[0xC0, 12], TYPE_A, &[192, 0, 2, 1]).build()],
            other => panic!("{other:?}"),
        }
    });
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut r = one(addr);
    // The first candidate TLSA base domain of RFC 7672 2.2.3.
    assert_eq!(
        r.ips_expanded(b"alias.test", true, false),
        Ok(Addresses {
            ips: vec![ip],
            ad: true,
            expanded: Some(b"real.test".to_vec())
        })
    );
    // Not an alias (the name compares without case): nothing expanded.
    assert_eq!(
        r.ips_expanded(b"Real.TEST", true, false),
        Ok(Addresses {
            ips: vec![ip],
            ad: true,
            expanded: None
        })
    );
    h.join().unwrap();
}
