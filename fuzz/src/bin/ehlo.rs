//! EHLO keywords (src/ehlo.rs) read from any reply the parser accepts, built as the session
//! builds an EHLO reply (`ReplyBuilder::whole`: every line, not the 5,000 bytes a report
//! keeps). Invariants: a one-line reply offers nothing; a line after the first that is exactly
//! `STARTTLS` or `PIPELINING` (any case), wherever it comes in the reply, is seen (issue 7: a
//! long first line once hid STARTTLS).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::ehlo::Caps;
use qremote::reply::ReplyBuilder;

/// The keyword text of a raw reply line: after the code and separator, without the line end
/// (a stray CR in a line is dropped, as the reply parser drops it).
fn keyword(raw: &[u8]) -> Vec<u8> {
    let line: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    line.get(4..).unwrap_or_default().to_vec()
}

fuzz_target!(|data: &[u8]| {
    let mut builder = ReplyBuilder::whole();
    let mut raw_lines: Vec<&[u8]> = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        raw_lines.push(line);
        match builder.push_line(line) {
            Ok(Some(reply)) => {
                let caps = Caps::parse(&reply);
                // Keywords come only from lines after the first (the greeting name).
                if reply.lines().count() <= 1 {
                    assert_eq!(caps, Caps::default());
                }
                for raw in raw_lines.iter().skip(1) {
                    let k = keyword(raw);
                    if k.eq_ignore_ascii_case(b"STARTTLS") {
                        assert!(caps.starttls, "STARTTLS offered but not seen");
                    }
                    if k.eq_ignore_ascii_case(b"PIPELINING") {
                        assert!(caps.pipelining, "PIPELINING offered but not seen");
                    }
                }
                raw_lines.clear();
            }
            Ok(None) => {}
            Err(_) => {
                builder = ReplyBuilder::whole();
                raw_lines.clear();
            }
        }
    }
});
