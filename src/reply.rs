//! SMTP replies, built one line at a time (sans I/O). Lenient where stock qmail is (bare LF,
//! code-only lines, 8-bit text), strict where laxness is unsafe (non-digit codes, continuation
//! lines with another code), and bounded everywhere.

use crate::report::MAX_SAID;

/// Most lines one reply may have before the peer is considered hostile.
pub const MAX_LINES: usize = 1000;
/// Most bytes one reply may have, all lines together.
pub const MAX_BYTES: usize = 1 << 20;

/// A complete reply: its code and its lines, each ending in LF: up to [`MAX_SAID`] bytes of
/// them, or all of them (up to [`MAX_BYTES`]) when read with [`ReplyBuilder::whole`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: Vec<u8>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Cuts the text to what a reply read for reports keeps ([`MAX_SAID`] bytes, the last kept
    /// line ending in LF), as if it had been read that way.
    pub fn capped(mut self) -> Reply {
        if self.text.len() > MAX_SAID {
            self.text.truncate(MAX_SAID - 1);
            self.text.push(b'\n');
        }
        self
    }

    /// qmail's `Remote host said: ` followed by the stored lines.
    pub fn append_said(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Remote host said: ");
        out.extend_from_slice(&self.text);
    }

    /// The text after the code of each line (for EHLO keywords).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.get(4..).unwrap_or(&[]))
    }

    #[cfg(test)]
    pub fn parse_for_test(bytes: &[u8]) -> Reply {
        let mut b = ReplyBuilder::default();
        for line in bytes.split_inclusive(|&c| c == b'\n') {
            if let Ok(Some(r)) = b.push_line(line) {
                return r;
            }
        }
        panic!("incomplete reply in test")
    }
}

/// Accumulates the lines of one reply.
pub struct ReplyBuilder {
    code: Option<u16>,
    text: Vec<u8>,
    /// How many bytes of text to keep.
    keep: usize,
    lines: usize,
    bytes: usize,
}

impl Default for ReplyBuilder {
    /// Keeps what a report shows: [`MAX_SAID`] bytes, as stock qmail's `HUGESMTPTEXT`.
    fn default() -> Self {
        ReplyBuilder::keeping(MAX_SAID)
    }
}

impl ReplyBuilder {
    /// Keeps `keep` bytes of text (for AUTH, whose refusal is cleaned of secrets before it is
    /// cut to what a report keeps).
    pub fn keeping(keep: usize) -> ReplyBuilder {
        ReplyBuilder {
            code: None,
            text: Vec::new(),
            keep,
            lines: 0,
            bytes: 0,
        }
    }

    /// Keeps every line (the reply is still bounded by [`MAX_LINES`] and [`MAX_BYTES`]): for
    /// EHLO, whose keywords may come after a first line longer than a report keeps.
    pub fn whole() -> ReplyBuilder {
        ReplyBuilder::keeping(MAX_BYTES)
    }

    /// Feeds one line (with or without its CR LF). Returns the reply when the line was the last.
    pub fn push_line(&mut self, raw: &[u8]) -> Result<Option<Reply>, &'static str> {
        self.lines += 1;
        self.bytes = self.bytes.saturating_add(raw.len());
        if self.lines > MAX_LINES || self.bytes > MAX_BYTES {
            return Err("reply too long");
        }
        let line = trim_eol(raw);
        let code = match line {
            [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err("no reply code"),
        };
        if self.code.is_some_and(|first| first != code) {
            return Err("lines of one reply have different codes");
        }
        self.code = Some(code);
        let room = self.keep.saturating_sub(self.text.len());
        if room > 0 {
            let kept = line.get(..room.saturating_sub(1)).unwrap_or(line);
            self.text.extend(kept.iter().filter(|&&b| b != b'\r'));
            self.text.push(b'\n');
        }
        if line.get(3) == Some(&b'-') {
            return Ok(None);
        }
        let text = std::mem::take(&mut self.text);
        *self = ReplyBuilder::keeping(self.keep);
        Ok(Some(Reply { code, text }))
    }
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\n'] = line {
        line = rest;
    }
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Reply>, &'static str> {
        let mut b = ReplyBuilder::default();
        for line in input.split_inclusive(|&c| c == b'\n') {
            if let Some(r) = b.push_line(line)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    #[test]
    fn multiline_bare_lf_and_code_only() {
        let r = parse(b"250-first\n250-8BITMIME\r\n250\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.text, b"250-first\n250-8BITMIME\n250\n");
        assert_eq!(
            r.lines().collect::<Vec<_>>(),
            vec![&b"first"[..], b"8BITMIME", b""]
        );
    }

    #[test]
    fn eight_bit_text_kept_for_sanitizer() {
        let r = parse(b"550 \xff\xfe nope\r\n").unwrap().unwrap();
        assert_eq!(r.text, b"550 \xff\xfe nope\n");
    }

    #[test]
    fn garbage_and_mismatch_are_errors() {
        assert_eq!(parse(b"hello\r\n"), Err("no reply code"));
        assert_eq!(parse(b"25\r\n"), Err("no reply code"));
        assert_eq!(parse(b"650 x\r\n"), Err("no reply code"));
        assert_eq!(
            parse(b"250-a\r\n550 b\r\n"),
            Err("lines of one reply have different codes")
        );
    }

    #[test]
    fn text_is_capped_but_reply_completes() {
        let mut input = b"250-".to_vec();
        input.extend(std::iter::repeat_n(b'x', 20_000));
        input.extend_from_slice(b"\r\n250 end\r\n");
        let r = parse(&input).unwrap().unwrap();
        assert!(r.text.len() <= MAX_SAID);
        assert_eq!(r.code, 250);
    }

    #[test]
    fn whole_replies_keep_every_line_and_cap_like_the_default() {
        let mut input = b"250-".to_vec();
        input.extend(std::iter::repeat_n(b'x', 6000));
        input.extend_from_slice(b"\r\n250 STARTTLS\r\n");
        let mut b = ReplyBuilder::whole();
        let mut got = None;
        for line in input.split_inclusive(|&c| c == b'\n') {
            got = b.push_line(line).unwrap();
        }
        let whole = got.unwrap();
        assert!(whole.text.ends_with(b"\n250 STARTTLS\n"));
        assert_eq!(whole.capped(), parse(&input).unwrap().unwrap());
    }

    #[test]
    fn too_many_lines_is_an_error() {
        let input = b"250-x\n".repeat(MAX_LINES + 1);
        assert_eq!(parse(&input), Err("reply too long"));
    }
}
