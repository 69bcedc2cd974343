//! `control/authsenders` (src/authsenders.rs): parse any file, then look up a sender (the bytes
//! after the first NUL, else every key of the file with a local part put in front). A relay
//! found is well formed, and the line said to decide is one of the file's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::authsenders::AuthSenders;
use qremote::control::{lines, split_key};
use qremote::smtproutes::Route;

fn check(senders: &AuthSenders, sender: &[u8], last_line: usize) {
    let found = senders.lookup(sender);
    let line = senders.matched_line(sender);
    if let Some(Route::Relay { host, port, .. }) = &found {
        assert!(*port != 0, "port 0");
        assert!(!host.is_empty(), "empty relay");
        assert!(line.is_some(), "a relay without the line that chose it");
    }
    assert!(found.is_none() || line.is_some());
    assert!(
        line.is_none_or(|n| (1..=last_line).contains(&n)),
        "line {line:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let (file, sender) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(senders) = AuthSenders::parse(file) else {
        return;
    };
    let last_line = lines(file).map(|(n, _)| n).max().unwrap_or(0);
    if let Some(sender) = sender {
        check(&senders, sender, last_line);
    }
    for (_, line) in lines(file) {
        if let Some((key, _)) = split_key(line.trim_ascii_start()) {
            check(&senders, &[b"someone", key].concat(), last_line);
        }
    }
    check(&senders, b"", last_line);
});
