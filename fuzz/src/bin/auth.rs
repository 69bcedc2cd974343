//! The SMTP AUTH client exchange (src/auth.rs) driven by arbitrary server replies: the first
//! byte picks the mechanism, the rest is the server's side, line by line. Nothing may panic,
//! every line the client would send is one CRLF-terminated line, every exchange ends, and a
//! refusal cleaned by `hide_secrets` holds no password, whatever the server echoed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::auth::{Credentials, Exchange, Mechanism, Step};
use qremote::reply::ReplyBuilder;

const PASSWORD: &[u8] = b"p:ss w|rd";

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
    let creds = Credentials::new(b"user@example.net", PASSWORD);
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
            Step::Refused(reply) => {
                let text = exchange.hide_secrets(&reply).text;
                assert!(!text.windows(PASSWORD.len()).any(|w| w == PASSWORD));
                return;
            }
            Step::Done | Step::Abort(_) => return,
        }
    }
});
