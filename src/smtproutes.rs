//! `control/smtproutes` with qmail's rules: `domain:relay[:port]`, the key is everything before
//! the first colon, lookup is case-insensitive and tries the whole host, then every suffix that
//! starts at a dot (longest first), then the empty key (the default route). An empty relay means
//! "use MX as usual". When a key appears twice the last line wins. The port is read as stock's
//! `scan_ulong` reads it: its leading digits, whatever follows (`relay:25 # comment`).
//! Differences from stock, all safer: a port without digits, 0 or over 65535 is a syntax error
//! instead of a connection to port 0 (or to the port modulo 65536), leading white space is not
//! part of the key, and IPv6 literals (`[2001:db8::1]:2525`) are understood.
//!
//! SMTP AUTH credentials follow sagredo's qmail: `relay:port|user|password`. The first `|` ends
//! the relay, the second ends the user name, and the password is all the rest (it may hold
//! `|`, `:` and spaces, but not trailing white space, which qmail strips from every line).

use std::collections::HashMap;

use crate::auth::Credentials;
use crate::control::{lines, number_prefix, split_key, suffix_keys, syntax};
use crate::failure::Failure;

/// What smtproutes says about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No entry, or an entry with an empty relay: MX lookup as usual, port 25.
    Mx,
    /// Send to this relay (a name or a `[literal]`/bare IP), A/AAAA lookup only, and log in
    /// with `auth` if set.
    Relay {
        host: Vec<u8>,
        port: u16,
        auth: Option<Credentials>,
    },
}

impl Route {
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Route::Relay { auth, .. } => auth.as_ref(),
            Route::Mx => None,
        }
    }
}

#[derive(Default)]
pub struct Routes {
    map: HashMap<Vec<u8>, Route>,
    /// The line each key was last set on, for `qremote-probe`.
    lines: HashMap<Vec<u8>, usize>,
}

impl Routes {
    pub fn parse(data: &[u8]) -> Result<Routes, Failure> {
        let mut map = HashMap::new();
        let mut line_of = HashMap::new();
        for (n, line) in lines(data) {
            let line = line.trim_ascii_start();
            let Some((key, value)) = split_key(line) else {
                continue;
            };
            let route = parse_value(value).map_err(|what| syntax("smtproutes", n, what))?;
            map.insert(key.to_ascii_lowercase(), route);
            line_of.insert(key.to_ascii_lowercase(), n);
        }
        Ok(Routes {
            map,
            lines: line_of,
        })
    }

    /// True if any line has credentials.
    pub fn has_credentials(&self) -> bool {
        self.map.values().any(|r| r.credentials().is_some())
    }

    /// The route for `host` (argv[1], the recipient domain).
    pub fn lookup(&self, host: &[u8]) -> Route {
        self.entry(host)
            .map_or(Route::Mx, |(_, route)| route.clone())
    }

    /// The key and line number of the entry [`Routes::lookup`] uses for `host`, if any.
    pub fn matched_line(&self, host: &[u8]) -> Option<(Vec<u8>, usize)> {
        let (key, _) = self.entry(host)?;
        Some((key.clone(), self.lines.get(key).copied().unwrap_or(0)))
    }

    fn entry(&self, host: &[u8]) -> Option<(&Vec<u8>, &Route)> {
        if self.map.is_empty() {
            return None;
        }
        suffix_keys(host)
            .into_iter()
            .chain(std::iter::once(Vec::new()))
            .find_map(|k| self.map.get_key_value(&k))
    }
}

/// Splits sagredo's `relay:port|user|password` into the relay part and the credentials.
/// Unlike sagredo, half-written credentials are errors rather than "no AUTH": an admin who
/// wrote a `|` asked for authentication, and the mail must not go out without it.
fn split_credentials(value: &[u8]) -> Result<(&[u8], Option<Credentials>), &'static str> {
    let Some(bar) = value.iter().position(|&b| b == b'|') else {
        return Ok((value, None));
    };
    let (relay, rest) = value.split_at(bar);
    let rest = rest.get(1..).unwrap_or_default();
    let Some(bar) = rest.iter().position(|&b| b == b'|') else {
        return Err("a user name without a password (write relay:port|user|password)");
    };
    let (user, password) = rest.split_at(bar);
    let password = password.get(1..).unwrap_or_default();
    if user.is_empty() || password.is_empty() {
        return Err("empty user name or password");
    }
    if user.contains(&0) || password.contains(&0) {
        return Err("NUL byte in the user name or password");
    }
    if relay.trim_ascii().is_empty() {
        return Err("credentials without a relay (they are never sent to an MX)");
    }
    let creds = Credentials::new(user, password);
    if creds.too_long() {
        return Err("user name and password too long for SMTP AUTH (RFC 4954: 12288 octets)");
    }
    Ok((relay.trim_ascii_end(), Some(creds)))
}

/// Parses the part after the key: `relay[:port][|user|password]`, or empty for MX.
pub(crate) fn parse_value(value: &[u8]) -> Result<Route, &'static str> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(Route::Mx);
    }
    let (value, auth) = split_credentials(value)?;
    let (host, rest) = if value.starts_with(b"[") {
        let close = value.iter().position(|&b| b == b']').ok_or("unclosed [")?;
        value.split_at(close + 1)
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => value.split_at(i),
            None => (value, &b""[..]),
        }
    };
    let port = match rest {
        [] => 25,
        [b':', digits @ ..] => number_prefix(digits)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or("bad port")?,
        _ => return Err("text after the relay"),
    };
    if host.is_empty() {
        return Err("empty relay before the port");
    }
    if host.iter().any(|&b| b <= b' ' || b == 127) {
        return Err("white space in the relay name");
    }
    if host.contains(&b';') {
        // s/qmail's `relay;port`: a DNS lookup of that name would bounce every message.
        return Err("';' in the relay name (write relay:port)");
    }
    Ok(Route::Relay {
        host: host.to_vec(),
        port,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(h: &str, port: u16) -> Route {
        Route::Relay {
            host: h.as_bytes().to_vec(),
            port,
            auth: None,
        }
    }

    #[test]
    fn qmail_lookup_order() {
        let r = Routes::parse(
            b":smarthost\n.af.mil:\na.b.af.mil:[10.0.0.1]:2525\n.b.af.mil:bhost\nX.Example:[::1]:26\n",
        )
        .unwrap();
        assert_eq!(r.lookup(b"a.b.af.mil"), relay("[10.0.0.1]", 2525));
        assert_eq!(r.lookup(b"c.b.af.mil"), relay("bhost", 25));
        assert_eq!(r.lookup(b"c.af.mil"), Route::Mx);
        assert_eq!(r.lookup(b"other.org"), relay("smarthost", 25));
        assert_eq!(r.lookup(b"x.EXAMPLE"), relay("[::1]", 26));
    }

    #[test]
    fn last_duplicate_wins_and_no_default_means_mx() {
        let r = Routes::parse(b"a.org:one\na.org:two:587\nnocolon\n").unwrap();
        assert_eq!(r.lookup(b"a.org"), relay("two", 587));
        assert_eq!(r.lookup(b"b.org"), Route::Mx);
        assert_eq!(Routes::default().lookup(b"a.org"), Route::Mx);
    }

    /// Stock reads the port with scan_ulong: what follows its digits is ignored (issue 7).
    #[test]
    fn text_after_the_port_is_ignored_as_in_stock() {
        let r = Routes::parse(
            b"example.com:relay:25 # comment\nb.org:[10.0.0.1]:2525\tsecondary\nc.org:r:26x\n",
        )
        .unwrap();
        assert_eq!(r.lookup(b"example.com"), relay("relay", 25));
        assert_eq!(r.lookup(b"b.org"), relay("[10.0.0.1]", 2525));
        assert_eq!(r.lookup(b"c.org"), relay("r", 26));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for bad in [
            &b"# x\na.org:relay:\n"[..],
            b"# x\na.org:relay:0\n",
            b"# x\na.org:relay:x\n",
            b"# x\na.org:relay:65536\n",
            b"# x\na.org:relay # comment\n",
            b"# x\na:[1.2.3.4\n",
            b"# x\na:relay|user\n",
            b"# x\na:relay||secret\n",
            b"# x\na:relay|user|\n",
            b"# x\na:|user|secret\n",
            b"# x\na::587|user|secret\n",
            b"# x\na:relay|us\0er|secret\n",
            b"# x\na:relay;587|user|secret\n",
        ] {
            match Routes::parse(bad) {
                Err(Failure::ControlSyntax {
                    file: "smtproutes",
                    line: 2,
                    ..
                }) => {}
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn credentials_sagredo_syntax() {
        let r = Routes::parse(
            b"a.org:relay.example:587|me@a.org|p:w d|x\n:smart|u|pw\nc.org:[::1]:26|u|v\n",
        )
        .unwrap();
        let auth = |u: &str, p: &str| Some(Credentials::new(u.as_bytes(), p.as_bytes()));
        assert_eq!(
            r.lookup(b"a.org"),
            Route::Relay {
                host: b"relay.example".to_vec(),
                port: 587,
                auth: auth("me@a.org", "p:w d|x"),
            }
        );
        assert_eq!(
            r.lookup(b"b.org"),
            Route::Relay {
                host: b"smart".to_vec(),
                port: 25,
                auth: auth("u", "pw"),
            }
        );
        assert!(matches!(r.lookup(b"c.org"), Route::Relay { port: 26, .. }));
    }

    /// RFC 4954's 12288-octet response line: credentials that cannot fit are refused when
    /// the file is read, not sent for the relay to choke on.
    #[test]
    fn credentials_too_long_for_a_response_line() {
        let ok = format!("a:relay|u|{}\n", "p".repeat(9000));
        assert!(Routes::parse(ok.as_bytes()).unwrap().has_credentials());
        let long = format!("a:relay|u|{}\n", "p".repeat(9300));
        match Routes::parse(long.as_bytes()) {
            Err(Failure::ControlSyntax { line: 1, what, .. }) => {
                assert!(
                    what.starts_with("user name and password too long"),
                    "{what}"
                )
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("parsed"),
        }
    }

    #[test]
    fn syntax_errors_never_show_the_password() {
        for bad in [
            &b"a:relay:x|user|hunter2\n"[..],
            b"a:relay|user|hun\0ter2\n",
        ] {
            let Err(f) = Routes::parse(bad) else {
                panic!("parsed");
            };
            let text = String::from_utf8_lossy(f.report().text()).into_owned();
            assert!(
                !text.contains("hunter2") && !text.contains("ter2"),
                "{text}"
            );
            assert!(!format!("{f:?}").contains("ter2"));
        }
    }
}
