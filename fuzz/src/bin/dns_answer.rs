//! The resolver's handling of one response (src/dns/mod.rs, transport.rs): matching it to the
//! query, truncation, RCODEs, and following CNAMEs. The question asked is the one the response
//! carries (else a fixed name), so the fuzzer need not guess it. A verdict that decides
//! (records, NXDOMAIN, no data, a CNAME to follow) comes only from a response to the very
//! question asked: a mismatched or forged one could otherwise bounce mail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::dns::fuzzing::{QTYPES, Record, Verdict, answer, decode};

fn text(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        let Some(label) = tail.get(..usize::from(len)).filter(|_| len > 0) else {
            break;
        };
        if !out.is_empty() {
            out.push(b'.');
        }
        out.extend_from_slice(label);
        rest = &tail[usize::from(len)..];
    }
    out
}

/// A name the resolver can ask at all (else it answers NXDOMAIN without asking, as for an
/// empty label).
fn valid(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.is_empty()
        || (name
            .split(|&b| b == b'.')
            .all(|l| (1..=63).contains(&l.len()))
            && name.len() < 254)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, response)) = data.split_first() else {
        return;
    };
    let (qname, qtype) = match decode(response).and_then(|m| m.question) {
        Some((name, qtype, _)) if pick & 0x80 == 0 => (text(&name), qtype),
        _ => (
            b"mx.qremote.test".to_vec(),
            QTYPES[usize::from(pick) % QTYPES.len()],
        ),
    };
    let verdict = answer(&qname, qtype, response);
    if valid(&qname)
        && matches!(
            verdict,
            Verdict::Records(_) | Verdict::NxDomain | Verdict::NoData | Verdict::Requery(_)
        )
    {
        // A verdict that can bounce a message (NXDOMAIN, no data) or route it comes only from
        // a response to this very question: QR set, a standard query, the name (in any case),
        // the type and class IN.
        let msg = decode(response).expect("a verdict from a message we cannot read");
        assert!(msg.flags & 0x8000 != 0, "a query taken as a response");
        assert_eq!((msg.flags >> 11) & 0xF, 0, "opcode not QUERY");
        let (name, t, class) = msg.question.expect("a verdict without a question");
        assert!(
            text(&name).eq_ignore_ascii_case(&qname),
            "an answer to another name"
        );
        assert_eq!((t, class), (qtype, 1), "an answer to another type or class");
    }
    if let Verdict::Records(records) = verdict {
        assert!(!records.is_empty(), "records verdict without records");
        for r in &records {
            let t = match r {
                Record::A(_) => 1,
                Record::Cname(_) => 5,
                Record::Mx { .. } => 15,
                Record::Aaaa(_) => 28,
                Record::Tlsa { .. } => 52,
                Record::Txt(_) => 16,
            };
            assert_eq!(t, qtype, "record of another type returned");
        }
    }
});
