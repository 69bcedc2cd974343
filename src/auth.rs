//! SMTP AUTH (RFC 4954), client side: the credentials from `control/smtproutes` or
//! `control/authsenders`, the choice of mechanism, and the exchange as a pure state machine
//! (a reply in, the bytes to send out), so that it can be tested and fuzzed without a socket.
//!
//! The session runs it only over TLS (see `session.rs`), sends exactly what [`Step::Send`]
//! holds, and reads exactly one reply per send: after a refusal nothing more is read, so a
//! 535 can never leave the process waiting for a reply that will not come.
//!
//! Secrets: the password, and every byte string that encodes it, live in [`Credentials`] and
//! [`Secret`], whose `Debug` output is redacted. No report or error text is built from them.

use std::fmt;

use hmac::{Hmac, Mac};
use md5::Md5;

use crate::base64;
use crate::reply::Reply;

/// A user name and password for one relay. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    pub fn new(user: &[u8], password: &[u8]) -> Credentials {
        Credentials {
            user: user.to_vec(),
            password: password.to_vec(),
        }
    }

    /// The user name, which reports may show.
    pub fn user(&self) -> &[u8] {
        &self.user
    }

    /// True if some line of an exchange with these credentials would exceed the
    /// [`MAX_RESPONSE_LINE`] octets a server must accept.
    pub fn too_long(&self) -> bool {
        let b64 = |n: usize| n.div_ceil(3) * 4 + 2;
        let plain = b64(self.user.len() + self.password.len() + 2);
        let login = b64(self.user.len().max(self.password.len()));
        let cram = b64(self.user.len() + 33);
        plain.max(login).max(cram) > MAX_RESPONSE_LINE
    }
}

/// RFC 4954 section 4: a server accepts client response lines of up to 12288 octets (the
/// base64 response and its CR LF), so an exchange never needs a longer one.
pub const MAX_RESPONSE_LINE: usize = 12288;

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Bytes that carry a credential on the wire. `Debug` shows only the length.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The supported mechanisms, weakest first: the derived order is the preference order.
///
/// CRAM-MD5 is preferred because the password itself never crosses the wire: at level
/// `encrypt` (an unverified certificate the admin accepted) a man in the middle learns a
/// challenge-response, not the password. PLAIN comes next as the standard mechanism
/// (RFC 4616, one round trip), and LOGIN (never standardised) last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Login,
    Plain,
    CramMd5,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    fn from_name(name: &[u8]) -> Option<Mechanism> {
        [Mechanism::Login, Mechanism::Plain, Mechanism::CramMd5]
            .into_iter()
            .find(|m| name.eq_ignore_ascii_case(m.name().as_bytes()))
    }
}

/// The strongest supported mechanism among those the server's `AUTH` keyword lists.
pub fn choose<'a>(offered: impl IntoIterator<Item = &'a [u8]>) -> Option<Mechanism> {
    offered.into_iter().filter_map(Mechanism::from_name).max()
}

/// RFC 5321 4.5.3.1.4: a command line fits in 512 octets. PLAIN's initial response is sent
/// on the AUTH line only when the line stays within that; otherwise after an empty 334.
const MAX_COMMAND: usize = 512;

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes, then read one reply and pass it to [`Exchange::reply`].
    Send(Secret),
    /// 235: authenticated.
    Done,
    /// The server refused (4xx or 5xx): the reply says why. Nothing more to send or read.
    Refused(Reply),
    /// The reply makes no sense at this point of the exchange. The session cancels with
    /// `*` (RFC 4954 section 4) and reads nothing more.
    Abort(&'static str),
}

/// Where the exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `AUTH PLAIN` without an initial response: waiting for the empty challenge.
    PlainChallenge,
    LoginUser,
    LoginPassword,
    CramChallenge,
    /// The last response is out: waiting for 235.
    Final,
    Finished,
}

/// One AUTH exchange. Created by [`Exchange::start`], fed each reply by [`Exchange::reply`].
#[derive(Debug)]
pub struct Exchange<'c> {
    creds: &'c Credentials,
    state: State,
    /// Every response sent so far that carries the password or a value derived from it, for
    /// [`Exchange::hide_secrets`].
    sent: Vec<Secret>,
}

fn line(payload: &[u8]) -> Secret {
    let mut out = Vec::with_capacity(payload.len() * 4 / 3 + 6);
    base64::encode_into(payload, &mut out);
    out.extend_from_slice(b"\r\n");
    Secret(out)
}

impl<'c> Exchange<'c> {
    /// The exchange for `mech`, and the AUTH command that opens it.
    pub fn start(mech: Mechanism, creds: &'c Credentials) -> (Exchange<'c>, Secret) {
        let mut sent = Vec::new();
        let (state, command) = match mech {
            Mechanism::Plain => {
                let mut command = b"AUTH PLAIN ".to_vec();
                base64::encode_into(&plain_response(creds), &mut command);
                command.extend_from_slice(b"\r\n");
                if command.len() <= MAX_COMMAND {
                    sent.push(Secret(plain_response(creds)));
                    (State::Final, command)
                } else {
                    (State::PlainChallenge, b"AUTH PLAIN\r\n".to_vec())
                }
            }
            Mechanism::Login => (State::LoginUser, b"AUTH LOGIN\r\n".to_vec()),
            Mechanism::CramMd5 => (State::CramChallenge, b"AUTH CRAM-MD5\r\n".to_vec()),
        };
        let exchange = Exchange { creds, state, sent };
        (exchange, Secret(command))
    }

    /// `reply` with every copy of the password, of a response sent in this exchange, or of
    /// their base64 forms replaced by `(hidden)`: some relays echo what they got into their
    /// refusal, and the refusal goes into the report. Pass the whole reply (read with
    /// `ReplyBuilder::whole`) and cap it afterwards, so that no secret is cut in two first.
    pub fn hide_secrets(&self, reply: &Reply) -> Reply {
        let raw = std::iter::once(self.creds.password.as_slice())
            .chain(self.sent.iter().map(Secret::bytes));
        let mut needles: Vec<Vec<u8>> = raw
            .flat_map(|r| {
                // Unpadded too, so that an echo with its `=` dropped is caught as well.
                let b64 = base64::encode(r);
                let unpadded = b64.strip_suffix(b"==").or(b64.strip_suffix(b"="));
                let unpadded = unpadded.map(<[u8]>::to_vec).unwrap_or_default();
                [r.to_vec(), b64, unpadded]
            })
            .filter(|n| !n.is_empty())
            .collect();
        // Longest first: a base64 form may contain a shorter needle by chance.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut text = reply.text.clone();
        for needle in &needles {
            text = replace_all(&text, needle, b"(hidden)");
        }
        Reply {
            code: reply.code,
            text,
        }
    }

    /// The next step after the server's `reply`.
    pub fn reply(&mut self, reply: &Reply) -> Step {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if state == State::Finished {
            return Step::Abort("the exchange was already over");
        }
        if reply.code >= 400 {
            return Step::Refused(reply.clone());
        }
        if state == State::Final {
            return match reply.code {
                235 => Step::Done,
                334 => Step::Abort("the server asked for more than the mechanism sends"),
                _ => Step::Abort("the server did not answer with 235 or an error"),
            };
        }
        if reply.code != 334 {
            return Step::Abort("the server did not answer with 334 or an error");
        }
        let (next, payload) = match state {
            State::PlainChallenge => (State::Final, plain_response(self.creds)),
            State::LoginUser => (State::LoginPassword, self.creds.user.clone()),
            State::LoginPassword => (State::Final, self.creds.password.clone()),
            State::CramChallenge => {
                let text = reply.lines().next().unwrap_or_default().trim_ascii();
                let Some(challenge) = base64::decode(text).filter(|c| !c.is_empty()) else {
                    return Step::Abort("the CRAM-MD5 challenge is not base64");
                };
                let digest = cram_md5_digest(self.creds, &challenge);
                let mut response = self.creds.user.clone();
                response.push(b' ');
                response.extend_from_slice(&digest);
                // The digest alone, too: with the challenge it allows a dictionary attack.
                self.sent.push(Secret(digest));
                (State::Final, response)
            }
            State::Final | State::Finished => return Step::Abort("internal state"),
        };
        if state != State::LoginUser {
            self.sent.push(Secret(payload.clone()));
        }
        self.state = next;
        Step::Send(line(&payload))
    }
}

/// RFC 4616: authzid NUL authcid NUL password. The authorization identity is left empty
/// ("act as myself"): servers that refuse a non-empty one exist, none refuse an empty one.
fn plain_response(creds: &Credentials) -> Vec<u8> {
    [
        b"\0",
        creds.user.as_slice(),
        b"\0",
        creds.password.as_slice(),
    ]
    .concat()
}

/// RFC 2195: HMAC-MD5(password, challenge) in lowercase hex; the response is the user name,
/// a space, and this.
fn cram_md5_digest(creds: &Credentials, challenge: &[u8]) -> Vec<u8> {
    hmac_md5(&creds.password, challenge)
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

/// `text` with every occurrence of `needle` (not empty) replaced by `with`.
fn replace_all(text: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = rest.get(needle.len()..).unwrap_or_default();
        } else if let Some((&b, tail)) = rest.split_first() {
            out.push(b);
            rest = tail;
        }
    }
    out
}

pub fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length (RFC 2104 hashes long ones), so this cannot fail.
    let Ok(mut mac) = <Hmac<Md5> as Mac>::new_from_slice(key) else {
        return [0; 16];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: &str) -> Reply {
        Reply::parse_for_test(s.as_bytes())
    }

    fn sent(step: Step) -> Vec<u8> {
        match step {
            Step::Send(s) => s.0,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn strongest_offered_wins_in_any_order() {
        let pick = |s: &str| choose(s.split(' ').map(str::as_bytes));
        assert_eq!(pick("LOGIN PLAIN"), Some(Mechanism::Plain));
        assert_eq!(pick("plain login cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(pick("LOGIN"), Some(Mechanism::Login));
        assert_eq!(pick("GSSAPI XOAUTH2 SCRAM-SHA-256"), None);
        // Sagredo bug 4: "L" inside "PLAIN" is not LOGIN.
        assert_eq!(pick("PLAIN"), Some(Mechanism::Plain));
    }

    #[test]
    fn plain_with_initial_response() {
        let c = Credentials::new(b"tim", b"tanstaaftanstaaf");
        let (mut x, first) = Exchange::start(Mechanism::Plain, &c);
        assert_eq!(first.0, b"AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n");
        assert!(matches!(x.reply(&reply("235 2.7.0 ok\r\n")), Step::Done));
        assert!(matches!(x.reply(&reply("235 again\r\n")), Step::Abort(_)));
    }

    #[test]
    fn plain_too_long_for_one_line_waits_for_334() {
        let c = Credentials::new(b"u", &[b'p'; 600]);
        let (mut x, first) = Exchange::start(Mechanism::Plain, &c);
        assert_eq!(first.0, b"AUTH PLAIN\r\n");
        let resp = sent(x.reply(&reply("334 \r\n")));
        assert_eq!(
            base64::decode(resp.strip_suffix(b"\r\n").unwrap()).unwrap(),
            plain_response(&c)
        );
        assert!(matches!(x.reply(&reply("235 ok\r\n")), Step::Done));
    }

    #[test]
    fn login_three_steps() {
        let c = Credentials::new(b"user", b"pa:ss word");
        let (mut x, first) = Exchange::start(Mechanism::Login, &c);
        assert_eq!(first.0, b"AUTH LOGIN\r\n");
        assert_eq!(
            sent(x.reply(&reply("334 VXNlcm5hbWU6\r\n"))),
            b"dXNlcg==\r\n"
        );
        assert_eq!(
            sent(x.reply(&reply("334 UGFzc3dvcmQ6\r\n"))),
            b"cGE6c3Mgd29yZA==\r\n"
        );
        assert!(matches!(x.reply(&reply("235 ok\r\n")), Step::Done));
    }

    #[test]
    fn cram_md5_rfc2195_example() {
        let c = Credentials::new(b"tim", b"tanstaaftanstaaf");
        let (mut x, first) = Exchange::start(Mechanism::CramMd5, &c);
        assert_eq!(first.0, b"AUTH CRAM-MD5\r\n");
        let resp = sent(x.reply(&reply(
            "334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n",
        )));
        assert_eq!(
            resp,
            b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n".to_vec()
        );
        assert!(matches!(x.reply(&reply("235 ok\r\n")), Step::Done));
    }

    #[test]
    fn refusal_at_every_step_ends_the_exchange() {
        let c = Credentials::new(b"u", b"p");
        for mech in [Mechanism::Login, Mechanism::Plain, Mechanism::CramMd5] {
            for code in [
                "454 4.7.0 later",
                "535 5.7.8 bad",
                "534 5.7.9 weak",
                "538 5.7.11 tls",
            ] {
                let (mut x, _) = Exchange::start(mech, &c);
                match x.reply(&reply(&format!("{code}\r\n"))) {
                    Step::Refused(r) => assert_eq!(r.code.to_string(), code[..3]),
                    other => panic!("{mech:?} {code}: {other:?}"),
                }
                assert!(matches!(x.reply(&reply("235 ok\r\n")), Step::Abort(_)));
            }
        }
    }

    #[test]
    fn nonsense_replies_abort() {
        let c = Credentials::new(b"u", b"p");
        let (mut x, _) = Exchange::start(Mechanism::CramMd5, &c);
        assert!(matches!(
            x.reply(&reply("334 not*base64\r\n")),
            Step::Abort(_)
        ));
        let (mut x, _) = Exchange::start(Mechanism::Login, &c);
        assert!(matches!(x.reply(&reply("250 what\r\n")), Step::Abort(_)));
        let (mut x, _) = Exchange::start(Mechanism::Plain, &c);
        assert!(matches!(x.reply(&reply("334 more?\r\n")), Step::Abort(_)));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new(b"user", b"hunter2");
        let (x, first) = Exchange::start(Mechanism::Plain, &c);
        for text in [format!("{c:?}"), format!("{x:?}"), format!("{first:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("aHVudGVyMg"), "{text}");
            assert!(!text.contains("AHVzZXIAaHVudGVyMg"), "{text}");
        }
    }

    #[test]
    fn echoed_secrets_are_hidden_from_the_refusal() {
        let c = Credentials::new(b"user", b"hunter2");
        let (mut x, _) = Exchange::start(Mechanism::Plain, &c);
        let r = reply("535 5.7.8 no: AHVzZXIAaHVudGVyMg== hunter2 AHVzZXIAaHVudGVyMg user\r\n");
        assert!(matches!(x.reply(&r), Step::Refused(_)));
        assert_eq!(
            x.hide_secrets(&r).text,
            b"535 5.7.8 no: (hidden) (hidden) (hidden) user\n"
        );
        let (mut x, _) = Exchange::start(Mechanism::Login, &c);
        x.reply(&reply("334 VXNlcm5hbWU6\r\n"));
        x.reply(&reply("334 UGFzc3dvcmQ6\r\n"));
        let r = reply("535 dXNlcg== aHVudGVyMg== failed\r\n");
        assert_eq!(x.hide_secrets(&r).text, b"535 dXNlcg== (hidden) failed\n");
        let (mut x, _) = Exchange::start(Mechanism::CramMd5, &c);
        let Step::Send(resp) = x.reply(&reply("334 PDE+\r\n")) else {
            panic!("no response");
        };
        let resp = String::from_utf8(resp.0).unwrap();
        let decoded = base64::decode(resp.trim().as_bytes()).unwrap();
        let digest = String::from_utf8(decoded[5..].to_vec()).unwrap();
        let r = reply(&format!("535 {} {digest}\r\n", resp.trim()));
        let hidden = String::from_utf8(x.hide_secrets(&r).text).unwrap();
        assert_eq!(hidden, "535 (hidden) (hidden)\n");
        assert!(!hidden.contains(&digest[..8]), "{hidden}");
    }

    #[test]
    fn credentials_longer_than_a_response_line_are_too_long() {
        let fits = Credentials::new(b"u", &[b'p'; 9000]);
        assert!(!fits.too_long());
        assert!(Credentials::new(b"u", &[b'p'; 9300]).too_long());
        assert!(Credentials::new(&[b'u'; 9300], b"p").too_long());
        // The longest that fits really gives lines of at most 12288 octets.
        let (mut x, first) = Exchange::start(Mechanism::Plain, &fits);
        assert_eq!(first.0, b"AUTH PLAIN\r\n");
        assert!(sent(x.reply(&reply("334 \r\n"))).len() <= MAX_RESPONSE_LINE);
    }

    /// Fuzz-style: random replies in random order never panic, and every exchange ends
    /// within a few steps.
    #[test]
    fn arbitrary_replies_never_panic() {
        let c = Credentials::new(b"user", b"secret");
        let codes = [235u16, 250, 334, 354, 421, 454, 501, 535];
        let texts: [&[u8]; 5] = [b"", b"PDE+", b"@@@", b"dGVzdA==", b"334 334"];
        let mut seed = crate::route::random_u64() | 1;
        for _ in 0..2000 {
            let mech =
                [Mechanism::Login, Mechanism::Plain, Mechanism::CramMd5][(seed % 3) as usize];
            let (mut x, _) = Exchange::start(mech, &c);
            for _ in 0..6 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let code = codes[(seed % codes.len() as u64) as usize];
                let text = texts[((seed >> 8) % texts.len() as u64) as usize];
                let r = Reply {
                    code,
                    text: [format!("{code} ").as_bytes(), text, b"\n"].concat(),
                };
                if !matches!(x.reply(&r), Step::Send(_)) {
                    break;
                }
            }
        }
    }
}
