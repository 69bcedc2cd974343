//! The body encoder (src/encode.rs), with the input split into chunks at fuzzer-chosen sizes as
//! reads split it. Invariants: what is sent, un-stuffed as a server reads DATA, equals the input
//! with every line end (CR LF, LF, bare CR) made CR LF; the only end-of-data is the last line;
//! the chunking does not matter; `scan` agrees on partial lines and never under-states SIZE.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::encode::{Encoder, scan};

/// The input with every line end made CR LF (a CR LF pair is one line end).
fn crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// What a receiving server stores: the lines up to the lone `.`, each leading dot removed.
/// Panics if the data is not a well-formed DATA stream.
fn unstuff(sent: &[u8]) -> Vec<u8> {
    let body = sent.strip_suffix(b".\r\n").expect("no final dot");
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a line without CR LF");
        let line = &rest[..end];
        assert!(!line.contains(&b'\n'), "bare LF sent");
        assert!(!line.contains(&b'\r'), "bare CR sent");
        assert!(line != b".", "end of data before the end");
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
        rest = &rest[end + 2..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut encoder = Encoder::default();
    let mut sent = Vec::new();
    for chunk in input.chunks(step) {
        encoder.encode(chunk, &mut sent);
    }
    encoder.finish(&mut sent);

    let mut whole = Vec::new();
    let mut one = Encoder::default();
    one.encode(input, &mut whole);
    one.finish(&mut whole);
    assert_eq!(sent, whole, "the result depends on the chunking");

    let s = scan(input).expect("reading a slice cannot fail");
    let partial = !matches!(input.last(), None | Some(b'\n' | b'\r'));
    assert_eq!(s.partial, partial);
    if partial {
        // Refused before DATA; the encoder still never glues the dot to the last line.
        return;
    }
    let expected = crlf(input);
    assert_eq!(unstuff(&sent), expected, "the message changed in transit");
    assert_eq!(s.eight_bit, !input.is_ascii());
    // RFC 1870: the message as sent, every line end a CR LF, without the stuffed dots. (Found
    // by this target before issue 7's fix: input `CR` gave SIZE=1 for 2 bytes sent.)
    assert_eq!(s.size, expected.len() as u64, "SIZE is not the size sent");
});
