//! The MTA-STS policy file (src/sts/policy.rs) and its mx patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::sts::policy::{MAX_AGE_LIMIT, Mode, parse_policy};

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = parse_policy(data) else {
        return;
    };
    assert!(policy.max_age <= MAX_AGE_LIMIT);
    assert!(
        policy.mode == Mode::None || !policy.mx.is_empty(),
        "no mx outside mode none"
    );
    for p in &policy.mx {
        let text = p.text();
        // A pattern without a wildcard is a host name, and matches itself in any case.
        if !text.starts_with("*.") {
            assert!(
                policy.allows(text.as_bytes()),
                "{text} does not match itself"
            );
            assert!(policy.allows(text.to_ascii_uppercase().as_bytes()));
        }
    }
    for line in data.split(|&b| b == b'\n') {
        let _ = policy.allows(line);
    }
});
