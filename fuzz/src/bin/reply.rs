//! SMTP replies (src/reply.rs): lines of any bytes, fed one at a time as the session reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::reply::{MAX_LINES, ReplyBuilder};
use qremote::report::MAX_SAID;

fuzz_target!(|data: &[u8]| {
    let mut builder = ReplyBuilder::default();
    let mut lines = 0usize;
    for line in data.split_inclusive(|&b| b == b'\n') {
        lines += 1;
        match builder.push_line(line) {
            Ok(None) => assert!(lines <= MAX_LINES),
            Ok(Some(reply)) => {
                assert!((100..600).contains(&reply.code), "code {}", reply.code);
                assert!(reply.text.len() <= MAX_SAID, "text over the cap");
                assert!(!reply.text.contains(&b'\r'), "CR kept in the text");
                assert!(reply.text.is_empty() || reply.text.ends_with(b"\n"));
                lines = 0;
            }
            // The session gives up on the connection: start over as a new one would.
            Err(_) => {
                builder = ReplyBuilder::default();
                lines = 0;
            }
        }
    }
});
