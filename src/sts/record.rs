//! The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): `v=STSv1; id=...`. Pure: bytes in, a
//! result out, so a fuzz target can call [`parse_record`] and [`select`] directly.

/// Longest policy id (RFC 8461 §3.1: 1 to 32 letters and digits).
pub const MAX_ID: usize = 32;

/// A valid record: only its id matters to a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1 to 32 ASCII letters and digits.
    pub id: String,
}

/// Why the TXT records give no usable MTA-STS record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// No record starts with `v=STSv1`.
    None,
    /// More than one does (RFC 8461 §3.1: then the domain has no policy).
    Several,
    /// The one record is not valid; the text says where.
    Invalid(&'static str),
}

impl RecordError {
    pub fn describe(&self) -> String {
        match self {
            RecordError::None => "no v=STSv1 TXT record".into(),
            RecordError::Several => "more than one v=STSv1 TXT record".into(),
            RecordError::Invalid(why) => format!("invalid TXT record: {why}"),
        }
    }
}

/// Picks the one record that starts with `v=STSv1` among all TXT records of the name (others
/// are discarded, RFC 8461 §3.1) and parses it.
pub fn select(records: &[Vec<u8>]) -> Result<Record, RecordError> {
    let mut sts = records.iter().filter(|r| is_sts(r));
    let first = sts.next().ok_or(RecordError::None)?;
    if sts.next().is_some() {
        return Err(RecordError::Several);
    }
    parse_record(first)
}

/// `v=STSv1` followed by a separator or the end: `v=STSv10` is another version.
fn is_sts(r: &[u8]) -> bool {
    r.strip_prefix(b"v=STSv1").is_some_and(|rest| {
        rest.first()
            .is_none_or(|&b| matches!(b, b';' | b' ' | b'\t'))
    })
}

/// Parses one record by RFC 8461's grammar: `v=STSv1`, then `;`-separated fields (white
/// space around `;` allowed, a trailing `;` allowed), exactly one `id=` of 1 to 32 letters and
/// digits, and extensions `name=value` that are checked and ignored.
pub fn parse_record(text: &[u8]) -> Result<Record, RecordError> {
    let rest = text
        .strip_prefix(b"v=STSv1")
        .ok_or(RecordError::Invalid("it does not start with v=STSv1"))?;
    let mut fields = rest.split(|&b| b == b';');
    // What precedes the first ';' must be white space only.
    if !fields.next().unwrap_or_default().iter().all(is_wsp) {
        return Err(RecordError::Invalid("text after v=STSv1"));
    }
    let mut id = None;
    let mut count = 0;
    let mut ended = false;
    for field in fields {
        let field = trim_wsp(field);
        if field.is_empty() {
            // Only the optional trailing separator may leave an empty field.
            if ended {
                return Err(RecordError::Invalid("an empty field"));
            }
            ended = true;
            continue;
        }
        if ended {
            return Err(RecordError::Invalid("an empty field"));
        }
        count += 1;
        let eq = field
            .iter()
            .position(|&b| b == b'=')
            .ok_or(RecordError::Invalid("a field without ="))?;
        let (name, value) = field.split_at(eq);
        let value = value.get(1..).unwrap_or_default();
        if name == b"id" {
            if id.is_some() {
                return Err(RecordError::Invalid("more than one id"));
            }
            if value.is_empty()
                || value.len() > MAX_ID
                || !value.iter().all(u8::is_ascii_alphanumeric)
            {
                return Err(RecordError::Invalid(
                    "the id must be 1 to 32 letters and digits",
                ));
            }
            id = Some(String::from_utf8_lossy(value).into_owned());
        } else if !extension_name(name) || !extension_value(value) {
            return Err(RecordError::Invalid("a malformed field"));
        }
    }
    if count == 0 {
        return Err(RecordError::Invalid("no id"));
    }
    let id = id.ok_or(RecordError::Invalid("no id"))?;
    Ok(Record { id })
}

fn is_wsp(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

fn trim_wsp(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_wsp(first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_wsp(last)
    {
        s = rest;
    }
    s
}

/// `sts-ext-name = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")`
fn extension_name(n: &[u8]) -> bool {
    matches!(n.first(), Some(b) if b.is_ascii_alphanumeric())
        && n.len() <= 32
        && n.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)`: visible ASCII except `;` and `=`.
fn extension_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Result<String, RecordError> {
        parse_record(s.as_bytes()).map(|r| r.id)
    }

    #[test]
    fn valid_records() {
        assert_eq!(
            id("v=STSv1; id=20160831085700Z;"),
            Ok("20160831085700Z".into())
        );
        assert_eq!(id("v=STSv1;id=abc"), Ok("abc".into()));
        assert_eq!(id("v=STSv1 ;\tid=abc ; "), Ok("abc".into()));
        assert_eq!(id("v=STSv1; ext_1=x!y; id=a1"), Ok("a1".into()));
        assert_eq!(
            id(&format!("v=STSv1; id={}", "a".repeat(32))).map(|s| s.len()),
            Ok(32)
        );
    }

    #[test]
    fn invalid_records() {
        for bad in [
            "v=STSv1",
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=a-b",
            "v=STSv1; id=a; id=b",
            "v=STSv1; id=a;; x=y",
            "v=STSv1; id=a b",
            "v=STSv1; idabc",
            "v=STSv1x; id=a",
            "v=STSv1; _x=y; id=a",
            "v=STSv1; x=; id=a",
            "v=STSv2; id=a",
        ] {
            assert!(matches!(id(bad), Err(RecordError::Invalid(_))), "{bad}");
        }
        assert!(id(&format!("v=STSv1; id={}", "a".repeat(33))).is_err());
        assert!(parse_record(b"v=STSv1; id=\xff").is_err());
    }

    #[test]
    fn selection() {
        let r = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            select(&[r("v=spf1 -all"), r("v=STSv1; id=x")]),
            Ok(Record { id: "x".into() })
        );
        assert_eq!(select(&[r("v=spf1 -all")]), Err(RecordError::None));
        assert_eq!(select(&[r("v=STSv10; id=x")]), Err(RecordError::None));
        assert_eq!(
            select(&[r("v=STSv1; id=x"), r("v=STSv1; id=y")]),
            Err(RecordError::Several)
        );
        assert!(matches!(
            select(&[r("v=STSv1 id=x")]),
            Err(RecordError::Invalid(_))
        ));
    }
}
