//! DNS wire format (RFC 1035 section 4, RFC 3596, RFC 6891, RFC 6698): the query encoder and a
//! bounded, panic-free response decoder. Every access to packet bytes goes through `get()` and
//! checked arithmetic; any inconsistency is [`Malformed`].

use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_MX: u16 = 15;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_TLSA: u16 = 52;
pub(crate) const CLASS_IN: u16 = 1;

pub(crate) const RCODE_NOERROR: u16 = 0;
pub(crate) const RCODE_FORMERR: u16 = 1;
pub(crate) const RCODE_SERVFAIL: u16 = 2;
pub(crate) const RCODE_NXDOMAIN: u16 = 3;
pub(crate) const RCODE_NOTIMP: u16 = 4;
pub(crate) const RCODE_REFUSED: u16 = 5;

pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const FLAG_TC: u16 = 0x0200;
pub(crate) const FLAG_RD: u16 = 0x0100;
#[cfg(test)]
pub(crate) const FLAG_RA: u16 = 0x0080;
pub(crate) const FLAG_AD: u16 = 0x0020;

/// Our advertised EDNS UDP payload size (DNS flag day 2020).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;
/// The DO bit in the OPT record's TTL field.
const EDNS_DO: u32 = 0x0000_8000;

/// Answer records kept from one message; more are checked for well-formedness but ignored.
pub(crate) const MAX_RRS: usize = 1000;
/// Longest name in wire form, final zero included (RFC 1035 3.1).
const MAX_NAME: usize = 255;
/// Most labels a 255-byte name can hold.
const MAX_LABELS: usize = 127;
const MAX_LABEL: usize = 63;
const HEADER_LEN: usize = 12;

/// The packet is not a well-formed DNS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A domain name in uncompressed wire form, final zero label included. Because length bytes are
/// at most 63 (below `'A'`), ASCII case-insensitive comparison of the wire form is exactly DNS
/// name comparison, and a label holding a `.` byte cannot be confused with two labels.
#[derive(Clone, Debug)]
pub(crate) struct Name(Vec<u8>);

impl Name {
    /// The root name.
    #[cfg(test)]
    pub(crate) fn root() -> Name {
        Name(vec![0])
    }

    /// Parses dotted text, one trailing dot tolerated; the empty string and `"."` are the root.
    /// `None` for an empty label, a label over 63 bytes or a name over 255 bytes.
    pub(crate) fn from_text(text: &[u8]) -> Option<Name> {
        let text = text.strip_suffix(b".").unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len().saturating_add(2));
        if !text.is_empty() {
            for label in text.split(|&b| b == b'.') {
                if label.is_empty() || label.len() > MAX_LABEL {
                    return None;
                }
                wire.push(u8::try_from(label.len()).ok()?);
                wire.extend_from_slice(label);
            }
        }
        wire.push(0);
        (wire.len() <= MAX_NAME).then_some(Name(wire))
    }

    pub(crate) fn wire(&self) -> &[u8] {
        &self.0
    }

    /// The labels joined by dots, without a trailing dot; the root is empty. Label bytes are
    /// passed through unchanged (the caller sanitises them).
    pub(crate) fn to_text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len());
        let mut rest: &[u8] = &self.0;
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            let (Some(label), Some(next)) = (tail.get(..len), tail.get(len..)) else {
                break;
            };
            if len == 0 {
                break;
            }
            if !out.is_empty() {
                out.push(b'.');
            }
            out.extend_from_slice(label);
            rest = next;
        }
        out
    }

    /// DNS name equality: ASCII case-insensitive.
    pub(crate) fn eq_ci(&self, other: &Name) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

/// Builds a query: RD=1, AD=1 (RFC 6840 5.7), one question of class IN, and with `edns` an OPT
/// record advertising [`EDNS_PAYLOAD`] with DO=1.
pub(crate) fn encode_query(id: u16, name: &Name, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.0.len() + 4 + 11);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&(FLAG_RD | FLAG_AD).to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    q.extend_from_slice(&u16::from(edns).to_be_bytes()); // ARCOUNT
    q.extend_from_slice(&name.0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    if edns {
        q.push(0); // root owner
        q.extend_from_slice(&TYPE_OPT.to_be_bytes());
        q.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        q.extend_from_slice(&EDNS_DO.to_be_bytes()); // extended RCODE 0, version 0, DO
        q.extend_from_slice(&0u16.to_be_bytes()); // RDLENGTH
    }
    q
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) id: u16,
    pub(crate) flags: u16,
    pub(crate) qdcount: u16,
    pub(crate) ancount: u16,
    pub(crate) nscount: u16,
    pub(crate) arcount: u16,
}

impl Header {
    pub(crate) fn qr(&self) -> bool {
        self.flags & FLAG_QR != 0
    }
    pub(crate) fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xF
    }
    pub(crate) fn tc(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
    pub(crate) fn ad(&self) -> bool {
        self.flags & FLAG_AD != 0
    }
    /// The 4-bit header RCODE (without the EDNS extension).
    pub(crate) fn rcode(&self) -> u16 {
        self.flags & 0xF
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Question {
    pub(crate) name: Name,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
}

/// The OPT pseudo-record of a response.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opt {
    pub(crate) payload: u16,
    pub(crate) version: u8,
    pub(crate) dnssec_ok: bool,
}

/// The decoded data of an answer record of a type we use (class IN only).
#[derive(Clone, Debug)]
pub(crate) enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        pref: u16,
        host: Name,
    },
    Cname(Name),
    Tlsa {
        usage: u8,
        selector: u8,
        matching: u8,
        data: Vec<u8>,
    },
    /// The character-strings of one TXT record, concatenated (RFC 7208 3.3, RFC 8461 3.1).
    Txt(Vec<u8>),
}

impl RData {
    pub(crate) fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Mx { .. } => TYPE_MX,
            RData::Cname(_) => TYPE_CNAME,
            RData::Tlsa { .. } => TYPE_TLSA,
            RData::Txt(_) => TYPE_TXT,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) owner: Name,
    pub(crate) data: RData,
}

/// A whole decoded response. Only answer records of the types in [`RData`] are kept.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub(crate) header: Header,
    /// Checked by the transport before the full decode; kept for tests and diagnostics.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) question: Option<Question>,
    pub(crate) answers: Vec<Record>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) opt: Option<Opt>,
    /// The full RCODE: the header's 4 bits extended by the OPT record's 8 (RFC 6891 6.1.3).
    pub(crate) rcode: u16,
}

impl Message {
    pub(crate) fn ad(&self) -> bool {
        self.header.ad()
    }
}

fn be16(msg: &[u8], pos: usize) -> Result<u16, Malformed> {
    let b = msg
        .get(pos..pos.checked_add(2).ok_or(Malformed)?)
        .ok_or(Malformed)?;
    match *b {
        [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(Malformed),
    }
}

fn be32(msg: &[u8], pos: usize) -> Result<u32, Malformed> {
    let b = msg
        .get(pos..pos.checked_add(4).ok_or(Malformed)?)
        .ok_or(Malformed)?;
    match *b {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(Malformed),
    }
}

/// Reads the possibly compressed name at `pos` into `out` (uncompressed wire form) and returns
/// the position just after it. Compression pointers must point before the start of the label
/// run that contains them, so every jump goes strictly backwards and loops are impossible; names
/// over 255 bytes or 127 labels and the reserved label types 01 and 10 are rejected.
pub(crate) fn read_name(msg: &[u8], pos: usize, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    out.clear();
    let mut p = pos;
    let mut run_start = pos;
    let mut end: Option<usize> = None;
    let mut labels = 0usize;
    loop {
        let len = *msg.get(p).ok_or(Malformed)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                out.push(0);
                if out.len() > MAX_NAME {
                    return Err(Malformed);
                }
                return match end {
                    Some(e) => Ok(e),
                    None => p.checked_add(1).ok_or(Malformed),
                };
            }
            0x00 => {
                let n = usize::from(len);
                let start = p.checked_add(1).ok_or(Malformed)?;
                let stop = start.checked_add(n).ok_or(Malformed)?;
                let label = msg.get(start..stop).ok_or(Malformed)?;
                labels = labels.checked_add(1).ok_or(Malformed)?;
                // The label, its length byte, and the final zero must still fit.
                if labels > MAX_LABELS || out.len().saturating_add(n).saturating_add(2) > MAX_NAME {
                    return Err(Malformed);
                }
                out.push(len);
                out.extend_from_slice(label);
                p = stop;
            }
            0xC0 => {
                let lo = *msg
                    .get(p.checked_add(1).ok_or(Malformed)?)
                    .ok_or(Malformed)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(lo);
                if target >= run_start {
                    return Err(Malformed);
                }
                if end.is_none() {
                    end = Some(p.checked_add(2).ok_or(Malformed)?);
                }
                run_start = target;
                p = target;
            }
            _ => return Err(Malformed),
        }
    }
}

/// The header and the question (at most one) of a message, and the position after them.
pub(crate) fn parse_head(msg: &[u8]) -> Result<(Header, Option<Question>, usize), Malformed> {
    let header = Header {
        id: be16(msg, 0)?,
        flags: be16(msg, 2)?,
        qdcount: be16(msg, 4)?,
        ancount: be16(msg, 6)?,
        nscount: be16(msg, 8)?,
        arcount: be16(msg, 10)?,
    };
    let mut pos = HEADER_LEN;
    let question = match header.qdcount {
        0 => None,
        1 => {
            let mut name = Vec::new();
            pos = read_name(msg, pos, &mut name)?;
            let qtype = be16(msg, pos)?;
            let qclass = be16(msg, pos.checked_add(2).ok_or(Malformed)?)?;
            pos = pos.checked_add(4).ok_or(Malformed)?;
            Some(Question {
                name: Name(name),
                qtype,
                qclass,
            })
        }
        _ => return Err(Malformed),
    };
    Ok((header, question, pos))
}

/// The fixed part of a resource record; the owner name is left in the caller's buffer.
struct RrHead {
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata_start: usize,
    rdata_end: usize,
}

fn read_rr(msg: &[u8], pos: usize, owner: &mut Vec<u8>) -> Result<RrHead, Malformed> {
    let p = read_name(msg, pos, owner)?;
    let rtype = be16(msg, p)?;
    let class = be16(msg, p.checked_add(2).ok_or(Malformed)?)?;
    let ttl = be32(msg, p.checked_add(4).ok_or(Malformed)?)?;
    let rdlen = be16(msg, p.checked_add(8).ok_or(Malformed)?)?;
    let rdata_start = p.checked_add(10).ok_or(Malformed)?;
    let rdata_end = rdata_start
        .checked_add(usize::from(rdlen))
        .ok_or(Malformed)?;
    if rdata_end > msg.len() {
        return Err(Malformed);
    }
    Ok(RrHead {
        rtype,
        class,
        ttl,
        rdata_start,
        rdata_end,
    })
}

/// A name that must fill the RDATA from `start` exactly up to `end`.
fn rdata_name(msg: &[u8], start: usize, end: usize) -> Result<Name, Malformed> {
    // Reading from `msg[..end]` keeps the uncompressed part inside the RDATA; pointers go
    // backwards, so they stay inside too.
    let limited = msg.get(..end).ok_or(Malformed)?;
    let mut name = Vec::new();
    if read_name(limited, start, &mut name)? != end {
        return Err(Malformed);
    }
    Ok(Name(name))
}

fn decode_rdata(msg: &[u8], rr: &RrHead) -> Result<Option<RData>, Malformed> {
    if rr.class != CLASS_IN {
        return Ok(None);
    }
    let rdata = msg.get(rr.rdata_start..rr.rdata_end).ok_or(Malformed)?;
    Ok(Some(match rr.rtype {
        TYPE_A => RData::A(Ipv4Addr::from(
            <[u8; 4]>::try_from(rdata).map_err(|_| Malformed)?,
        )),
        TYPE_AAAA => RData::Aaaa(Ipv6Addr::from(
            <[u8; 16]>::try_from(rdata).map_err(|_| Malformed)?,
        )),
        TYPE_MX => RData::Mx {
            pref: be16(rdata, 0)?,
            host: rdata_name(
                msg,
                rr.rdata_start.checked_add(2).ok_or(Malformed)?,
                rr.rdata_end,
            )?,
        },
        TYPE_CNAME => RData::Cname(rdata_name(msg, rr.rdata_start, rr.rdata_end)?),
        TYPE_TLSA => match rdata {
            [usage, selector, matching, data @ ..] => RData::Tlsa {
                usage: *usage,
                selector: *selector,
                matching: *matching,
                data: data.to_vec(),
            },
            _ => return Err(Malformed),
        },
        TYPE_TXT => RData::Txt(txt_strings(rdata)?),
        _ => return Ok(None),
    }))
}

/// The character-strings of a TXT RDATA (each a length byte and that many bytes), joined.
fn txt_strings(mut rdata: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::with_capacity(rdata.len());
    while let [len, rest @ ..] = rdata {
        let (s, tail) = rest.split_at_checked(usize::from(*len)).ok_or(Malformed)?;
        out.extend_from_slice(s);
        rdata = tail;
    }
    Ok(out)
}

/// Checks the option list of an OPT record: a sequence of (code, length, data).
fn check_options(mut opts: &[u8]) -> Result<(), Malformed> {
    while !opts.is_empty() {
        let len = usize::from(be16(opts, 2)?);
        let next = len.checked_add(4).ok_or(Malformed)?;
        opts = opts.get(next..).ok_or(Malformed)?;
    }
    Ok(())
}

/// Decodes a whole message. Every section is walked and checked; answers of the types in
/// [`RData`] (class IN) are kept, up to [`MAX_RRS`]; the first OPT in the additional section
/// gives the EDNS data and the extended RCODE. Bytes after the last section are ignored.
pub(crate) fn parse(msg: &[u8]) -> Result<Message, Malformed> {
    let (header, question, mut pos) = parse_head(msg)?;
    let mut owner = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..header.ancount {
        let rr = read_rr(msg, pos, &mut owner)?;
        pos = rr.rdata_end;
        if let Some(data) = decode_rdata(msg, &rr)?
            && answers.len() < MAX_RRS
        {
            answers.push(Record {
                owner: Name(owner.clone()),
                data,
            });
        }
    }
    for _ in 0..header.nscount {
        pos = read_rr(msg, pos, &mut owner)?.rdata_end;
    }
    let mut opt = None;
    let mut ext_rcode = 0u16;
    for _ in 0..header.arcount {
        let rr = read_rr(msg, pos, &mut owner)?;
        pos = rr.rdata_end;
        if rr.rtype == TYPE_OPT && opt.is_none() {
            if owner.as_slice() != [0] {
                return Err(Malformed);
            }
            check_options(msg.get(rr.rdata_start..rr.rdata_end).ok_or(Malformed)?)?;
            let [ext, version, flags_hi, _] = rr.ttl.to_be_bytes();
            ext_rcode = u16::from(ext);
            opt = Some(Opt {
                payload: rr.class,
                version,
                dnssec_ok: flags_hi & 0x80 != 0,
            });
        }
    }
    Ok(Message {
        header,
        question,
        answers,
        opt,
        rcode: (ext_rcode << 4) | header.rcode(),
    })
}

/// A display name for an RCODE, for error texts.
pub(crate) fn rcode_name(rcode: u16) -> String {
    match rcode {
        RCODE_NOERROR => "NOERROR".into(),
        RCODE_FORMERR => "FORMERR".into(),
        RCODE_SERVFAIL => "SERVFAIL".into(),
        RCODE_NXDOMAIN => "NXDOMAIN".into(),
        RCODE_NOTIMP => "NOTIMP".into(),
        RCODE_REFUSED => "REFUSED".into(),
        16 => "BADVERS".into(),
        r => format!("RCODE {r}"),
    }
}
