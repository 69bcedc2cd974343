//! The HTTP response of a policy host (src/sts/fetch.rs `parse_response`): the input as it
//! grows, as reads deliver it, then closed. The first byte chooses the read size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::sts::fetch::{MAX_BODY, Parse, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((&step, buf)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut end = 0;
    let mut done = None;
    while end < buf.len() && done.is_none() {
        end = (end + step).min(buf.len());
        if let Parse::Done(r) = parse_response(&buf[..end], false) {
            done = Some(r);
        }
    }
    let last = done.unwrap_or_else(|| match parse_response(buf, true) {
        Parse::Done(r) => r,
        Parse::More => Err("more after the end".into()),
    });
    if let Ok(body) = last {
        assert!(body.len() <= MAX_BODY, "body of {} bytes", body.len());
    }
});
