//! Just enough X.509 to show a certificate to an admin: subject, issuer, subject alternative
//! names, validity and the SHA-256 of the SubjectPublicKeyInfo (the DANE `3 1 1` / pin value).
//! A walk over the fixed shape of RFC 5280 with the library's bounded DER element reader
//! (`tls::sig`, which finds the SPKI for handshake signatures): no recursion, every length
//! checked against the bytes that are there, unknown things skipped. It never decides trust:
//! that is the library's verifier.

use qremote::tls::sig::{Der, element};

/// What the probe shows of one certificate.
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Seconds since the epoch, for "expired" / "not yet valid".
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub spki_sha256: String,
}

/// Reads the DER elements of one constructed element's contents in turn, with the library's
/// bounded element reader ([`qremote::tls::sig::element`]).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Result<Der<'a>, &'static str> {
        let d = element(self.rest).ok_or("truncated or malformed DER")?;
        self.rest = d.rest;
        Ok(d)
    }

    fn expect(&mut self, tag: u8) -> Result<Der<'a>, &'static str> {
        let d = self.next()?;
        if d.tag == tag {
            Ok(d)
        } else {
            Err("unexpected element")
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

pub fn parse(der: &[u8]) -> Result<CertInfo, &'static str> {
    let cert = Reader::new(der).expect(SEQUENCE)?;
    let tbs = Reader::new(cert.contents).expect(SEQUENCE)?;
    let mut r = Reader::new(tbs.contents);
    if r.peek_tag() == Some(0xa0) {
        r.next()?; // version
    }
    r.next()?; // serial
    r.expect(SEQUENCE)?; // signature algorithm
    let issuer = name(r.expect(SEQUENCE)?.contents)?;
    let validity = r.expect(SEQUENCE)?;
    let mut v = Reader::new(validity.contents);
    let (not_before, not_before_unix) = time(&v.next()?)?;
    let (not_after, not_after_unix) = time(&v.next()?)?;
    let subject = name(r.expect(SEQUENCE)?.contents)?;
    let spki = r.expect(SEQUENCE)?;
    let mut sans = Vec::new();
    while !r.is_empty() {
        let t = r.next()?;
        if t.tag == 0xa3 {
            sans = subject_alt_names(t.contents)?;
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.whole);
    Ok(CertInfo {
        subject,
        issuer,
        sans,
        not_before,
        not_after,
        not_before_unix,
        not_after_unix,
        spki_sha256: hex(digest.as_ref()),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Printable ASCII as is, anything else as '?': certificate text reaches a terminal.
fn safe(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&qremote::report::sanitize(bytes)).replace('\n', "?")
}

/// `CN=mx.example, O=Example` in the order of the certificate.
fn name(content: &[u8]) -> Result<String, &'static str> {
    let mut parts = Vec::new();
    let mut rdns = Reader::new(content);
    while !rdns.is_empty() {
        let set = rdns.expect(SET)?;
        let mut atvs = Reader::new(set.contents);
        while !atvs.is_empty() {
            let atv = atvs.expect(SEQUENCE)?;
            let mut a = Reader::new(atv.contents);
            let oid = a.expect(OID)?;
            let value = a.next()?;
            let label = match oid.contents {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".into(),
                [0x55, 0x04, 0x07] => "L".into(),
                [0x55, 0x04, 0x08] => "ST".into(),
                [0x55, 0x04, 0x0a] => "O".into(),
                [0x55, 0x04, 0x0b] => "OU".into(),
                [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
                other => format!("OID.{}", hex(other)),
            };
            let text = if value.tag == 0x1e {
                // BMPString: UTF-16BE.
                let units: Vec<u16> = value
                    .contents
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                safe(String::from_utf16_lossy(&units).as_bytes())
            } else {
                safe(value.contents)
            };
            parts.push(format!("{label}={text}"));
        }
    }
    Ok(parts.join(", "))
}

/// The subjectAltName extension's DNS names and IP addresses; other kinds are listed by kind.
fn subject_alt_names(explicit: &[u8]) -> Result<Vec<String>, &'static str> {
    let exts = Reader::new(explicit).expect(SEQUENCE)?;
    let mut r = Reader::new(exts.contents);
    while !r.is_empty() {
        let ext = r.expect(SEQUENCE)?;
        let mut e = Reader::new(ext.contents);
        if e.expect(OID)?.contents != SAN_OID {
            continue;
        }
        let mut value = e.next()?;
        if value.tag == 0x01 {
            value = e.next()?; // critical flag
        }
        if value.tag != OCTET_STRING {
            return Err("bad extension");
        }
        let names = Reader::new(value.contents).expect(SEQUENCE)?;
        let mut n = Reader::new(names.contents);
        let mut out = Vec::new();
        while !n.is_empty() {
            let g = n.next()?;
            out.push(match g.tag {
                0x82 => format!("DNS:{}", safe(g.contents)),
                0x81 => format!("email:{}", safe(g.contents)),
                0x86 => format!("URI:{}", safe(g.contents)),
                0x87 => match g.contents.len() {
                    4 => {
                        let b: [u8; 4] = g.contents.try_into().map_err(|_| "bad IP")?;
                        format!("IP:{}", std::net::Ipv4Addr::from(b))
                    }
                    16 => {
                        let b: [u8; 16] = g.contents.try_into().map_err(|_| "bad IP")?;
                        format!("IP:{}", std::net::Ipv6Addr::from(b))
                    }
                    _ => "IP:?".into(),
                },
                other => format!("other name (tag {other:#x})"),
            });
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// UTCTime or GeneralizedTime (`Z` only, as RFC 5280 requires) to text and epoch seconds.
fn time(t: &Der) -> Result<(String, i64), &'static str> {
    let s = std::str::from_utf8(t.contents).map_err(|_| "bad time")?;
    let digits = s.strip_suffix('Z').ok_or("time not in UTC")?;
    let (year, rest) = match (t.tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = num(digits.get(..2))?;
            let rest = digits.get(2..).ok_or("bad time")?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, rest)
        }
        (0x18, 14) => (num(digits.get(..4))?, digits.get(4..).ok_or("bad time")?),
        _ => return Err("bad time"),
    };
    let field = |i: usize| num(rest.get(i..i + 2));
    let (mo, d, h, mi, se) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err("bad time");
    }
    let unix = days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    Ok((
        format!("{year:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{se:02} UTC"),
        unix,
    ))
}

fn num(s: Option<&str>) -> Result<i64, &'static str> {
    let s = s.ok_or("bad time")?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad time");
    }
    s.parse().map_err(|_| "bad time")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
        ] {
            assert!(parse(bad).is_err());
        }
    }

    #[test]
    fn generated_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec![
            "mx.example".to_string(),
            "192.0.2.7".to_string(),
        ])
        .unwrap();
        let c = parse(ck.cert.der()).unwrap();
        assert_eq!(c.subject, "CN=rcgen self signed cert");
        assert_eq!(c.issuer, c.subject);
        assert_eq!(c.sans, ["DNS:mx.example", "IP:192.0.2.7"]);
        use rcgen::PublicKeyData;
        let spki = ring::digest::digest(
            &ring::digest::SHA256,
            &ck.signing_key.subject_public_key_info(),
        );
        assert_eq!(c.spki_sha256, hex(spki.as_ref()));
        assert!(c.not_before_unix < c.not_after_unix);
        // Every truncation of a real certificate is an error, never a panic.
        let der = ck.cert.der().to_vec();
        for n in 0..der.len() {
            assert!(parse(&der[..n]).is_err());
        }
    }

    #[test]
    fn odd_bytes_in_names_are_shown_safely() {
        // The same length as the bytes patched in: ESC, a non-UTF-8 byte, a quote, a
        // backslash, LF, NUL, DEL and a UTF-8 'é'.
        let ck = rcgen::generate_simple_self_signed(vec!["AAAAAAAAA.example".to_string()]).unwrap();
        let odd = b"\x1b\xff\"\\\n\0\x7f\xc3\xa9";
        let mut der = ck.cert.der().to_vec();
        let at = der
            .windows(9)
            .position(|w| w == b"AAAAAAAAA")
            .expect("the SAN in the DER");
        der[at..at + 9].copy_from_slice(odd);
        let c = parse(&der).unwrap();
        assert_eq!(c.sans, ["DNS:??\"\\?????.example"]);
        let mut out = String::new();
        crate::cert_json(&der).write(&mut out);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["names"][0], "DNS:??\"\\?????.example");
    }

    #[test]
    fn times() {
        let t = Der {
            tag: 0x17,
            contents: b"260101120000Z",
            whole: &[],
            rest: &[],
        };
        let (text, unix) = time(&t).unwrap();
        assert_eq!(text, "2026-01-01 12:00:00 UTC");
        assert_eq!(unix, days_from_civil(2026, 1, 1) * 86_400 + 12 * 3600);
    }
}
