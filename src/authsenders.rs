//! `control/authsenders`, read as sagredo's qmail (qmail-authentication) reads it: routes chosen
//! by the envelope sender, consulted before smtproutes, usually with credentials:
//!
//! ```text
//! sender:relay[:port][|user|password]
//! ```
//!
//! The key is everything before the first colon. For a sender `first.last@mail.example.com`
//! the keys tried, in this order, are every tail of the address that starts at its beginning,
//! at the `@`, or at a dot (`first.last@mail.example.com`, `.last@mail.example.com`,
//! `@mail.example.com`, `.example.com`, `.com`), then the empty key (every sender, the
//! bounce sender `<>` included). Keys match without regard to case; when a key appears twice
//! the last line wins. The first key found decides:
//!
//! * `key:relay...` sends through that relay; smtproutes is not consulted. Without
//!   `|user|password` the relay is used without AUTH (as in sagredo).
//! * `key:` (nothing after the colon) means "this sender is not an authenticated sender":
//!   smtproutes decides as if the file had no entry, and less specific keys are not tried.
//!
//! Differences from sagredo, all refusals of lines sagredo misreads: a line without a colon
//! (sagredo's man page shows `@example.com|user|password`, which its code silently ignores)
//! is a syntax error, and so are the credential errors of [`crate::smtproutes`].

use std::collections::HashMap;

use crate::control::{lines, split_key, syntax};
use crate::failure::Failure;
use crate::smtproutes::{Route, parse_value};

#[derive(Default)]
pub struct AuthSenders {
    /// Key to route, and the line it came from (the last line of a repeated key).
    map: HashMap<Vec<u8>, (Route, usize)>,
}

impl AuthSenders {
    pub fn parse(data: &[u8]) -> Result<AuthSenders, Failure> {
        let mut map = HashMap::new();
        for (n, line) in lines(data) {
            let line = line.trim_ascii_start();
            // An indented comment is a comment too: refusing it would defer every delivery
            // for a line that asks for nothing.
            if line.starts_with(b"#") {
                continue;
            }
            let Some((key, value)) = split_key(line) else {
                return Err(syntax(
                    "authsenders",
                    n,
                    "no colon (write sender:relay:port|user|password)",
                ));
            };
            let route = parse_value(value).map_err(|what| syntax("authsenders", n, what))?;
            map.insert(key.to_ascii_lowercase(), (route, n));
        }
        Ok(AuthSenders { map })
    }

    /// True if any line has credentials.
    pub fn has_credentials(&self) -> bool {
        self.map.values().any(|(r, _)| r.credentials().is_some())
    }

    /// The relay for envelope sender `sender`, or `None` when smtproutes decides.
    pub fn lookup(&self, sender: &[u8]) -> Option<Route> {
        match self.entry(sender)? {
            (Route::Mx, _) => None,
            (relay @ Route::Relay { .. }, _) => Some(relay.clone()),
        }
    }

    /// The line whose key decides for `sender` (a relay, or `key:` handing over to
    /// smtproutes), for `qremote-probe`.
    pub fn matched_line(&self, sender: &[u8]) -> Option<usize> {
        self.entry(sender).map(|(_, n)| *n)
    }

    fn entry(&self, sender: &[u8]) -> Option<&(Route, usize)> {
        if self.map.is_empty() {
            return None;
        }
        let sender = sender.to_ascii_lowercase();
        let starts = (0..=sender.len())
            .filter(|&i| i == 0 || i == sender.len() || matches!(sender.get(i), Some(b'.' | b'@')));
        starts
            .filter_map(|i| sender.get(i..))
            .find_map(|key| self.map.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credentials;

    fn relay(host: &str, user: Option<&str>) -> Option<Route> {
        Some(Route::Relay {
            host: host.as_bytes().to_vec(),
            port: 587,
            auth: user.map(|u| Credentials::new(u.as_bytes(), b"pw")),
        })
    }

    #[test]
    fn sagredo_key_order() {
        let a = AuthSenders::parse(
            b"first.last@mail.example.com:full:587|full|pw\n\
              .last@mail.example.com:localdot:587|ld|pw\n\
              @mail.example.com:at:587|at|pw\n\
              .example.com:dot:587|dot|pw\n\
              :default:587|def|pw\n",
        )
        .unwrap();
        assert_eq!(
            a.lookup(b"First.Last@MAIL.example.com"),
            relay("full", Some("full"))
        );
        assert_eq!(
            a.lookup(b"x.last@mail.example.com"),
            relay("localdot", Some("ld"))
        );
        assert_eq!(a.lookup(b"y@mail.example.com"), relay("at", Some("at")));
        assert_eq!(a.lookup(b"y@sub.example.com"), relay("dot", Some("dot")));
        assert_eq!(a.lookup(b"y@other.org"), relay("default", Some("def")));
        assert_eq!(a.lookup(b""), relay("default", Some("def")));
    }

    #[test]
    fn empty_entry_hands_over_to_smtproutes_and_stops_the_search() {
        let a = AuthSenders::parse(b"noauth@example.com:\n@example.com:r:587|u|pw\n").unwrap();
        assert_eq!(a.lookup(b"noauth@example.com"), None);
        assert_eq!(a.lookup(b"other@example.com"), relay("r", Some("u")));
        assert_eq!(a.lookup(b"x@elsewhere.org"), None);
        assert_eq!(AuthSenders::default().lookup(b"x@y"), None);
        assert_eq!(a.matched_line(b"noauth@example.com"), Some(1));
        assert_eq!(a.matched_line(b"other@example.com"), Some(2));
        assert_eq!(a.matched_line(b"x@elsewhere.org"), None);
    }

    #[test]
    fn relay_without_credentials_and_last_line_wins() {
        let a = AuthSenders::parse(b"@a.org:one:587|u|pw\n@A.org:two:587\n").unwrap();
        assert_eq!(a.lookup(b"x@a.org"), relay("two", None));
        assert_eq!(a.matched_line(b"x@a.org"), Some(2));
    }

    #[test]
    fn indented_comments_are_comments() {
        let a =
            AuthSenders::parse(b"  # the provider\n\t# note: old\n@a.org:r:587|u|pw\n").unwrap();
        assert_eq!(a.lookup(b"x@a.org"), relay("r", Some("u")));
        assert_eq!(a.matched_line(b"x@a.org"), Some(3));
    }

    #[test]
    fn lines_sagredo_would_misread_are_errors() {
        for bad in [
            &b"@example.com|generic|passwd\n"[..],
            b"x@y:relay|user\n",
            b"x@y:|user|pw\n",
        ] {
            assert!(
                matches!(
                    AuthSenders::parse(bad),
                    Err(Failure::ControlSyntax {
                        file: "authsenders",
                        line: 1,
                        ..
                    })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
