//! `control/smtproutes` (src/smtproutes.rs): parse any file, then look up every key it names
//! and a few hosts below them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::control::{lines, split_key};
use qremote::smtproutes::{Route, Routes};

fn check(route: &Route) {
    if let Route::Relay { host, port, .. } = route {
        assert!(*port != 0, "port 0");
        assert!(!host.is_empty(), "empty relay");
        assert!(
            !host.iter().any(|&b| b <= b' ' || b == 127),
            "white space or control bytes in the relay"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(routes) = Routes::parse(data) else {
        return;
    };
    for (_, line) in lines(data) {
        let Some((key, _)) = split_key(line.trim_ascii_start()) else {
            continue;
        };
        check(&routes.lookup(key));
        let mut below = b"x".to_vec();
        if !key.starts_with(b".") {
            below.push(b'.');
        }
        below.extend_from_slice(key);
        check(&routes.lookup(&below));
    }
    check(&routes.lookup(b"example.org"));
});
