//! The DNS message decoder (src/dns/wire.rs): any bytes, every name it returns well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::dns::fuzzing::{Record, decode};

/// Uncompressed wire form: labels of 1..=63 bytes, a final zero, 255 bytes at most.
fn check_name(wire: &[u8]) {
    assert!(wire.len() <= 255, "name of {} bytes", wire.len());
    let mut rest = wire;
    loop {
        let (&len, tail) = rest.split_first().expect("name without its final zero");
        if len == 0 {
            assert!(tail.is_empty(), "bytes after the final zero");
            return;
        }
        assert!(len <= 63, "label of {len} bytes");
        rest = tail.get(usize::from(len)..).expect("label past the end");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode(data) else { return };
    assert!(msg.answers.len() <= 1000);
    assert_eq!(msg.rcode & 0xF, msg.flags & 0xF);
    if let Some((name, _, _)) = &msg.question {
        check_name(name);
    }
    for (owner, record) in &msg.answers {
        check_name(owner);
        match record {
            Record::Mx { host, .. } | Record::Cname(host) => check_name(host),
            Record::A(_) | Record::Aaaa(_) | Record::Tlsa { .. } | Record::Txt(_) => {}
        }
    }
});
