//! EHLO keywords (src/ehlo.rs) read from any reply the parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::ehlo::Caps;
use qremote::reply::ReplyBuilder;

fuzz_target!(|data: &[u8]| {
    let mut builder = ReplyBuilder::default();
    for line in data.split_inclusive(|&b| b == b'\n') {
        match builder.push_line(line) {
            Ok(Some(reply)) => {
                let caps = Caps::parse(&reply);
                // Keywords come only from lines after the first (the greeting name).
                if reply.lines().count() <= 1 {
                    assert_eq!(caps, Caps::default());
                }
            }
            Ok(None) => {}
            Err(_) => builder = ReplyBuilder::default(),
        }
    }
});
