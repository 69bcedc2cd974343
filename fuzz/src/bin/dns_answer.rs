//! The resolver's handling of one response (src/dns/mod.rs, transport.rs): matching it to the
//! query, truncation, RCODEs, and following CNAMEs. The question asked is the one the response
//! carries (else a fixed name), so the fuzzer need not guess it.
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
    if let Verdict::Records(records) = answer(&qname, qtype, response) {
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
