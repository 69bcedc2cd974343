//! Differential: the same bytes through our decoder (src/dns/wire.rs) and hickory-proto's. When
//! both read a message they must agree on what it says: ID, every header flag, the full RCODE,
//! the question, and the answer records of the types we decode (class IN: A, AAAA, MX, CNAME,
//! TLSA, TXT), in order, names compared byte for byte. Where only one side reads it, the difference
//! must be one listed in docs/RELIABILITY.md ("Where our decoder differs on purpose").
#![no_main]

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use libfuzzer_sys::fuzz_target;
use qremote::dns::fuzzing::{Decoded, Record, decode};

fn wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.iter() {
        out.push(u8::try_from(label.len()).expect("label over 255 bytes"));
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The kept answers as hickory reads them; `None` for a record of our types that it read as
/// the empty RDATA of an RFC 2136 update (we call that malformed).
fn answers(msg: &Message) -> Option<Vec<(Vec<u8>, Record)>> {
    let mut out = Vec::new();
    for r in msg.answers() {
        if r.dns_class() != DNSClass::IN {
            continue;
        }
        let kept = match r.data() {
            RData::A(a) => Record::A(a.0),
            RData::AAAA(a) => Record::Aaaa(a.0),
            RData::MX(mx) => Record::Mx {
                pref: mx.preference(),
                host: wire(mx.exchange()),
            },
            RData::CNAME(c) => Record::Cname(wire(&c.0)),
            RData::TLSA(t) => Record::Tlsa {
                usage: t.cert_usage().into(),
                selector: t.selector().into(),
                matching: t.matching().into(),
                data: t.cert_data().to_vec(),
            },
            RData::TXT(t) => Record::Txt(t.txt_data().concat()),
            RData::Update0(t) if ours(*t) => return None,
            _ if ours(r.record_type()) => return None,
            _ => continue,
        };
        out.push((wire(r.name()), kept));
    }
    out.truncate(1000);
    Some(out)
}

fn ours(t: RecordType) -> bool {
    matches!(
        t,
        RecordType::A
            | RecordType::AAAA
            | RecordType::MX
            | RecordType::CNAME
            | RecordType::TLSA
            | RecordType::TXT
    )
}

/// What hickory says, in our terms.
fn theirs(msg: &Message) -> Option<Decoded> {
    let h = msg.header();
    let mut flags = u16::from(u8::from(h.op_code())) << 11;
    for (set, bit) in [
        (
            h.message_type() == hickory_proto::op::MessageType::Response,
            0x8000,
        ),
        (h.authoritative(), 0x0400),
        (h.truncated(), 0x0200),
        (h.recursion_desired(), 0x0100),
        (h.recursion_available(), 0x0080),
        (h.authentic_data(), 0x0020),
        (h.checking_disabled(), 0x0010),
    ] {
        if set {
            flags |= bit;
        }
    }
    let rcode = u16::from(msg.response_code());
    flags |= rcode & 0xF;
    let question = match msg.queries() {
        [] => None,
        [q] => Some((
            wire(q.name()),
            u16::from(q.query_type()),
            u16::from(q.query_class()),
        )),
        _ => return None,
    };
    Some(Decoded {
        id: h.id(),
        flags,
        rcode,
        question,
        answers: answers(msg)?,
        edns: msg
            .extensions()
            .as_ref()
            .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
    })
}

fn without_z(mut d: Decoded) -> Decoded {
    // The Z bit (0x0040) is not kept by hickory; RFC 1035 says it must be zero, and neither we
    // nor hickory act on it.
    d.flags &= !0x0040;
    // hickory only keeps the payload it will honour (at least 512).
    d.edns = d.edns.map(|(p, v, dok)| (p.max(512), v, dok));
    d
}

fuzz_target!(|data: &[u8]| {
    let mine = decode(data);
    let other = Message::from_vec(data).ok();
    match (mine, other) {
        (Some(mine), Some(other)) => {
            let Some(theirs) = theirs(&other) else {
                return;
            };
            assert_eq!(without_z(mine), without_z(theirs), "decoders disagree");
        }
        (None, Some(other)) => {
            // We are stricter on purpose only where RELIABILITY.md says so; anything else
            // hickory reads and we refuse is a message we would wrongly call malformed.
            assert!(
                stricter_on_purpose(data, &other),
                "hickory reads a message we refuse: {other:?}"
            );
        }
        // We read what hickory refuses: hickory decodes every record of every section (SOA,
        // SVCB, ...) and we only check the lengths of those we do not use. Harmless.
        (Some(_), None) | (None, None) => {}
    }
});

/// The differences listed in docs/RELIABILITY.md.
fn stricter_on_purpose(data: &[u8], other: &Message) -> bool {
    // An answer of our types read by hickory as an empty update record.
    answers(other).is_none()
        // More than one question: hickory keeps them all; we only ever ask one.
        || other.queries().len() > 1
        // The difference is in the additional section, where we refuse an OPT record whose
        // owner is not the root or whose option list overruns it (RFC 6891 6.1.2: FORMERR);
        // hickory drops the options it cannot read.
        || (other.extensions().is_some() && decode(&without_additional(data)).is_some())
}

fn without_additional(data: &[u8]) -> Vec<u8> {
    let mut copy = data.to_vec();
    if let Some(arcount) = copy.get_mut(10..12) {
        arcount.copy_from_slice(&[0, 0]);
    }
    copy
}
