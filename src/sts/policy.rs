//! The policy file served at `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461
//! §3.2) and the matching of MX host names against its `mx` patterns (§4.1). Pure: bytes in,
//! a result out, so a fuzz target can call [`parse_policy`] directly.

/// Largest `max_age` (RFC 8461 §3.2: about a year). A larger value is cut to it.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What the policy asks of senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// MX hosts must match a pattern and present a valid certificate for their name.
    Enforce,
    /// Deliver as usual; only report what `enforce` would have done.
    Testing,
    /// The domain has withdrawn its policy: as if there were none.
    None,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` line: an exact host name, or `*.` and a domain (one leftmost label, any name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    wildcard: bool,
    /// Lowercase, no trailing dot.
    domain: Vec<u8>,
}

impl Pattern {
    fn parse(text: &[u8]) -> Option<Pattern> {
        let text = text.strip_suffix(b".").unwrap_or(text);
        let (wildcard, domain) = match text.strip_prefix(b"*.") {
            Some(d) => (true, d),
            None => (false, text),
        };
        valid_name(domain).then(|| Pattern {
            wildcard,
            domain: domain.to_ascii_lowercase(),
        })
    }

    /// True if `host` (an MX host name, any case, a trailing dot tolerated) matches. A
    /// wildcard stands for exactly one non-empty leftmost label: `*.example.net` matches
    /// `mx.example.net`, not `example.net` nor `a.b.example.net`.
    pub fn matches(&self, host: &[u8]) -> bool {
        let host = host.strip_suffix(b".").unwrap_or(host).to_ascii_lowercase();
        if !self.wildcard {
            return host == self.domain;
        }
        match host.iter().position(|&b| b == b'.') {
            Some(dot) if dot > 0 => host.get(dot + 1..) == Some(self.domain.as_slice()),
            _ => false,
        }
    }

    /// As written in a policy (lowercase).
    pub fn text(&self) -> String {
        let d = String::from_utf8_lossy(&self.domain);
        if self.wildcard {
            format!("*.{d}")
        } else {
            d.into_owned()
        }
    }
}

/// A letters-digits-hyphens DNS name of at least two labels (an MX host is never a TLD).
pub(crate) fn valid_name(name: &[u8]) -> bool {
    name.len() <= 253
        && name.split(|&b| b == b'.').count() >= 2
        && name.split(|&b| b == b'.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && !l.starts_with(b"-")
                && !l.ends_with(b"-")
        })
}

/// Most bytes of a value from the policy host that a report quotes.
const MAX_SHOWN: usize = 64;

/// A value from the policy host as a report may quote it: qmail's `outsafe` (no control
/// bytes, no 8-bit junk, no quotes to escape), and at most [`MAX_SHOWN`] bytes, since the
/// server decides how long a header or a policy line is (up to 64 KiB).
pub(crate) fn shown(value: &[u8]) -> String {
    match value.get(..MAX_SHOWN) {
        Some(head) if value.len() > MAX_SHOWN => format!("{}...", crate::report::outsafe(head)),
        _ => crate::report::outsafe(value),
    }
}

fn is_address(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok_and(|t| t.parse::<std::net::IpAddr>().is_ok())
}

/// A valid policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Seconds, at most [`MAX_AGE_LIMIT`].
    pub max_age: u64,
    /// Empty only for mode `none`.
    pub mx: Vec<Pattern>,
}

impl Policy {
    /// True if `host` matches one of the `mx` patterns.
    pub fn allows(&self, host: &[u8]) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

/// Parses a policy by RFC 8461 §3.2: lines `key: value` ended by LF or CR LF; `version:
/// STSv1`, `mode:` (`enforce`, `testing` or `none`) and `max_age:` (1 to 10 digits) are
/// required, and for the first occurrence of each the value is taken (a later repetition is
/// ignored); `mx:` may repeat and is required unless the mode is `none`. Keys and values are
/// case-sensitive, as in the RFC's grammar. Unknown keys are ignored; a line that is not
/// `key: value` makes the policy invalid. The text says what is wrong.
pub fn parse_policy(text: &[u8]) -> Result<Policy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("line {} is not key: value", n + 1))?;
        let (key, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        match key {
            b"version" => {
                version.get_or_insert(value);
            }
            b"mode" => {
                mode.get_or_insert(value);
            }
            b"max_age" => {
                max_age.get_or_insert(value);
            }
            // An address can never be verified as a host name: skipped, as postfix-tlspol
            // does, so that the other patterns still apply.
            b"mx" if is_address(value) => {}
            b"mx" => mx
                .push(Pattern::parse(value).ok_or_else(|| {
                    format!("mx pattern \"{}\" is not a host name", shown(value))
                })?),
            _ => {}
        }
    }
    match version {
        Some(b"STSv1") => {}
        Some(_) => return Err("version is not STSv1".into()),
        None => return Err("no version".into()),
    }
    let mode = match mode {
        Some(b"enforce") => Mode::Enforce,
        Some(b"testing") => Mode::Testing,
        Some(b"none") => Mode::None,
        Some(_) => return Err("mode is not enforce, testing or none".into()),
        None => return Err("no mode".into()),
    };
    let max_age = match max_age {
        Some(v) if !v.is_empty() && v.len() <= 10 && v.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or("max_age is not a number")?
                .min(MAX_AGE_LIMIT)
        }
        Some(_) => return Err("max_age is not a number of seconds".into()),
        None => return Err("no max_age".into()),
    };
    if mx.is_empty() && mode != Mode::None {
        return Err(format!("no mx patterns in mode {}", mode.name()));
    }
    Ok(Policy { mode, max_age, mx })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn rfc_example() {
        let p = parse_policy(GOOD).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert_eq!(p.mx.len(), 3);
        assert!(p.allows(b"MAIL.example.com."));
        assert!(p.allows(b"mx1.example.net"));
        assert!(!p.allows(b"example.net"));
        assert!(!p.allows(b"a.b.example.net"));
        assert!(!p.allows(b".example.net"));
        assert!(!p.allows(b"mail.example.com.evil"));
        assert!(!p.allows(b"xmail.example.com"));
    }

    #[test]
    fn lenient_where_harmless() {
        let p = parse_policy(
            b"mx: a.example\nversion:STSv1\nfoo: bar\nmax_age:  99999999999\n\nmode: testing",
        )
        .unwrap_err();
        assert!(p.contains("max_age"), "{p}");
        let p = parse_policy(b"mx: a.example\nversion:STSv1\nfoo: bar\nmax_age: 9999999999\nmode: testing\nmode: enforce\n").unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, MAX_AGE_LIMIT));
        let p = parse_policy(
            b"version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmx: a.example\nmax_age: 1\n",
        )
        .unwrap();
        assert_eq!(p.mx.len(), 1);
        assert!(!p.allows(b"192.0.2.1"));
        let p = parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
        assert_eq!((p.mode, p.mx.len()), (Mode::None, 0));
    }

    #[test]
    fn invalid_policies() {
        for (bad, why) in [
            (&b""[..], "no version"),
            (
                b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1",
                "version",
            ),
            (
                b"version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1",
                "mode",
            ),
            (b"version: STSv1\nmode: enforce\nmax_age: 1", "no mx"),
            (b"version: STSv1\nmode: testing\nmx: a.b\n", "no max_age"),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1",
                "max_age",
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\ngarbage",
                "line 5",
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1",
                "mx pattern",
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1",
                "mx pattern",
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: com\nmax_age: 1",
                "mx pattern",
            ),
            (b"<html><body>Not here</body></html>", "line 1"),
        ] {
            let e = parse_policy(bad).unwrap_err();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_bad_pattern_is_quoted_short_and_safe() {
        let mut text = b"version: STSv1\nmode: enforce\nmax_age: 1\nmx: \xc3\xa9\"x".to_vec();
        text.extend_from_slice(&[b'y'; 70_000]);
        let e = parse_policy(&text).unwrap_err();
        assert!(e.starts_with("mx pattern \"??\"xyyy"), "{e}");
        assert!(e.ends_with("yyy...\" is not a host name"), "{e}");
        assert!(e.len() < 120, "{}", e.len());
    }

    #[test]
    fn parser_never_panics_on_noise() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..300 {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(b"version: STSv1\nmode:enforce*.mx_age0123\r"[(state % 40) as usize]);
            }
            let _ = parse_policy(&buf);
            let _ = crate::sts::record::parse_record(&buf);
        }
    }
}
