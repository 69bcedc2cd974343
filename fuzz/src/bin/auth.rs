//! The SMTP AUTH client exchange (src/auth.rs) driven by arbitrary server replies: the first
//! byte picks the mechanism, the rest is the server's side, line by line. Nothing may panic,
//! every line the client would send is one CRLF-terminated line, and every exchange ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::auth::{Credentials, Exchange, Mechanism, Step};
use qremote::reply::ReplyBuilder;

fn one_line(bytes: &[u8]) {
    let body = bytes
        .strip_suffix(b"\r\n")
        .expect("every line ends in CRLF");
    assert!(!body.contains(&b'\r') && !body.contains(&b'\n'));
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mech = [Mechanism::Login, Mechanism::Plain, Mechanism::CramMd5][usize::from(pick % 3)];
    let creds = Credentials::new(b"user@example.net", b"p:ss w|rd");
    let (mut exchange, first) = Exchange::start(mech, &creds);
    one_line(first.bytes());
    let mut builder = ReplyBuilder::default();
    let mut steps = 0;
    for line in rest.split_inclusive(|&b| b == b'\n') {
        let reply = match builder.push_line(line) {
            Ok(Some(reply)) => reply,
            Ok(None) => continue,
            Err(_) => return,
        };
        builder = ReplyBuilder::default();
        steps += 1;
        assert!(steps <= 4, "an exchange never takes more than four replies");
        match exchange.reply(&reply) {
            Step::Send(bytes) => one_line(bytes.bytes()),
            Step::Done | Step::Refused(_) | Step::Abort(_) => return,
        }
    }
});
