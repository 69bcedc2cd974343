//! The EHLO keywords this client uses, matched without regard to case (RFC 5321 2.4).

use crate::reply::Reply;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    /// `SIZE` offered; the value is the limit (0: none stated).
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    /// The mechanisms of the `AUTH` keyword (also the old `AUTH=` form), upper case;
    /// `None` when AUTH is not offered.
    pub auth: Option<Vec<Vec<u8>>>,
}

impl Caps {
    /// Reads the lines after the first (the first is the server's greeting name).
    pub fn parse(reply: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in reply.lines().skip(1) {
            let mut words = line
                .split(|&b| b == b' ' || b == b'=')
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_slice() {
                b"PIPELINING" => caps.pipelining = true,
                b"8BITMIME" => caps.eight_bit_mime = true,
                b"SMTPUTF8" => caps.smtputf8 = true,
                b"STARTTLS" => caps.starttls = true,
                b"AUTH" => caps
                    .auth
                    .get_or_insert_with(Vec::new)
                    .extend(words.map(|w| w.to_ascii_uppercase())),
                b"SIZE" => {
                    let limit = words
                        .next()
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                    caps.size = Some(limit.unwrap_or(0));
                }
                _ => {}
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_any_case() {
        let r = Reply::parse_for_test(
            b"250-mx.example hello\r\n250-size 1000\r\n250-Pipelining\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 smtputf8\r\n",
        );
        let c = Caps::parse(&r);
        assert_eq!(
            c,
            Caps {
                pipelining: true,
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                auth: None,
            }
        );
    }

    #[test]
    fn auth_mechanisms_from_both_forms() {
        let r = Reply::parse_for_test(
            b"250-mx\r\n250-AUTH login Plain\r\n250-AUTH=CRAM-MD5\r\n250 OK\r\n",
        );
        let want: Vec<Vec<u8>> = vec![b"LOGIN".to_vec(), b"PLAIN".to_vec(), b"CRAM-MD5".to_vec()];
        assert_eq!(Caps::parse(&r).auth, Some(want));
        let r = Reply::parse_for_test(b"250-mx\r\n250 AUTH\r\n");
        assert_eq!(Caps::parse(&r).auth, Some(Vec::new()));
    }

    #[test]
    fn greeting_line_is_not_a_keyword() {
        let r = Reply::parse_for_test(b"250 STARTTLS\r\n");
        assert!(!Caps::parse(&r).starttls);
        let r = Reply::parse_for_test(b"250-x\r\n250 SIZE\r\n");
        assert_eq!(Caps::parse(&r).size, Some(0));
    }
}
