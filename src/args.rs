//! argv bytes to an [`Envelope`]: the recipient domain, and sender and recipients mangled for
//! SMTP commands the way qmail's `addrmangle`/`quote.c` does it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::failure::Failure;

/// What qmail-rspawn asked for.
pub struct Envelope {
    /// argv[1]: the host part of the recipient(s), used for routing.
    pub host: Vec<u8>,
    /// `MAIL FROM:<this>`.
    pub sender: Vec<u8>,
    /// `RCPT TO:<this>`, in argument order.
    pub recipients: Vec<Vec<u8>>,
    /// An address has non-ASCII bytes, so SMTPUTF8 is needed.
    pub utf8: bool,
}

impl Envelope {
    pub fn from_args(args: Vec<OsString>) -> Result<Envelope, Failure> {
        let mut args = args.into_iter().skip(1).map(OsString::into_vec);
        let (Some(host), Some(sender)) = (args.next(), args.next()) else {
            return Err(Failure::Usage);
        };
        let recipients: Vec<Vec<u8>> = args.collect();
        if recipients.is_empty() {
            return Err(Failure::Usage);
        }
        let all = || std::iter::once(&sender).chain(recipients.iter());
        if all().any(|a| a.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))) {
            return Err(Failure::BadAddress);
        }
        let utf8 = all().any(|a| !a.is_ascii());
        Ok(Envelope {
            host,
            sender: mangle(&sender),
            recipients: recipients.iter().map(|r| mangle(r)).collect(),
            utf8,
        })
    }
}

/// qmail's `addrmangle` without the CNAME lookup: quote the local part if it needs it.
pub fn mangle(addr: &[u8]) -> Vec<u8> {
    let Some(at) = addr.iter().rposition(|&b| b == b'@') else {
        return addr.to_vec();
    };
    let (local, domain) = addr.split_at(at);
    let mut out = Vec::with_capacity(addr.len() + 2);
    if needs_quote(local) {
        out.push(b'"');
        for &b in local {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(local);
    }
    out.extend_from_slice(domain);
    out
}

/// qmail's atom set (`quote.c`), except that 8-bit bytes count as atom characters: RFC 6531
/// allows UTF-8 in dot-atoms, and quoting them would only confuse SMTPUTF8 servers.
fn atom(b: u8) -> bool {
    b >= 128 || b.is_ascii_alphanumeric() || b"!#$%&'*+-./=?^_`{|}~".contains(&b)
}

fn needs_quote(local: &[u8]) -> bool {
    local.is_empty()
        || !local.iter().all(|&b| atom(b))
        || local.starts_with(b".")
        || local.ends_with(b".")
        || local.windows(2).any(|w| w == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_qmail() {
        assert_eq!(mangle(b"joe@example.com"), b"joe@example.com");
        assert_eq!(mangle(b""), b"");
        assert_eq!(mangle(b"#@[]"), b"#@[]");
        assert_eq!(mangle(b"@x"), b"\"\"@x");
        assert_eq!(mangle(b"a b@x"), b"\"a b\"@x");
        assert_eq!(mangle(b"user.@x"), b"\"user.\"@x");
        assert_eq!(mangle(b"us..er@x"), b"\"us..er\"@x");
        assert_eq!(mangle(b"a\"b@c@x"), b"\"a\\\"b@c\"@x");
        assert_eq!(mangle("üser@x".as_bytes()), "üser@x".as_bytes());
    }

    fn args(v: &[&[u8]]) -> Vec<OsString> {
        v.iter().map(|a| OsString::from_vec(a.to_vec())).collect()
    }

    #[test]
    fn usage_and_injection() {
        assert!(matches!(
            Envelope::from_args(args(&[b"qr", b"h", b"s"])),
            Err(Failure::Usage)
        ));
        let bad = Envelope::from_args(args(&[b"qr", b"h", b"s", b"a\r\nRSET@h"]));
        assert!(matches!(bad, Err(Failure::BadAddress)));
        let ok = Envelope::from_args(args(&[b"qr", b"h", b"", b"\xff@h"])).unwrap();
        assert!(ok.utf8);
        assert_eq!(ok.sender, b"");
    }
}
