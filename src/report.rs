//! The report protocol qmail-rspawn reads on fd 1: `r`/`h`/`s` per recipient, then exactly one
//! `K`/`Z`/`D`, each ending in NUL. This is the only module that can produce a `D`.

use std::io::Write;
use std::os::fd::AsFd;

/// Stock qmail keeps at most 5000 bytes of a server's reply (`HUGESMTPTEXT`).
pub const MAX_SAID: usize = 5000;

/// An enhanced status code without its class digit: the letter supplies the class, so a `Z`
/// can never carry a 5.x.x code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esc(pub u16, pub u16);

/// The message verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Letter {
    K,
    Z,
    D,
}

impl Letter {
    pub fn byte(self) -> u8 {
        match self {
            Letter::K => b'K',
            Letter::Z => b'Z',
            Letter::D => b'D',
        }
    }
}

/// One recipient's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptLetter {
    /// `r`: accepted.
    Accepted,
    /// `h`: permanently rejected.
    Rejected,
    /// `s`: temporarily rejected.
    Deferred,
}

/// A finished message report: letter and text, unsanitised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    letter: Letter,
    text: Vec<u8>,
}

impl Report {
    pub fn letter(&self) -> Letter {
        self.letter
    }

    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// `K`: the server took the message.
    pub(crate) fn accepted(text: Vec<u8>) -> Report {
        Report {
            letter: Letter::K,
            text,
        }
    }

    /// A temporary failure with qmail's ` (#4.s.d)` suffix.
    pub fn temp(esc: Esc, sentence: &str) -> Report {
        Report {
            letter: Letter::Z,
            text: coded(4, esc, sentence),
        }
    }

    /// A permanent failure. Crate-private on purpose: `failure.rs` decides when D is allowed.
    pub(crate) fn perm(esc: Esc, sentence: &str) -> Report {
        Report {
            letter: Letter::D,
            text: coded(5, esc, sentence),
        }
    }

    /// A report whose text is built by the caller (remote replies carry their own codes).
    pub(crate) fn raw(letter: Letter, text: Vec<u8>) -> Report {
        Report { letter, text }
    }

    /// Appends a line (used for the TLS summary); the text always ends in LF.
    pub fn push_line(&mut self, line: &str) {
        if !self.text.is_empty() && !self.text.ends_with(b"\n") {
            self.text.push(b'\n');
        }
        self.text.extend_from_slice(line.as_bytes());
        self.text.push(b'\n');
    }
}

fn coded(class: u8, esc: Esc, sentence: &str) -> Vec<u8> {
    format!("{sentence} (#{class}.{}.{})\n", esc.0, esc.1).into_bytes()
}

/// qmail's `outsafe`: every byte outside 33..=126 becomes `?`. Used for host names.
pub fn outsafe(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (33..=126).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Report-text hygiene: keep printable ASCII and LF, drop CR, everything else becomes `?`.
/// Stricter than stock's `outsmtptext` (which only maps NUL) so that control bytes and 8-bit
/// junk from a server never reach qmail-send's logs or bounces.
pub fn sanitize(text: &[u8]) -> Vec<u8> {
    text.iter()
        .filter(|&&b| b != b'\r')
        .map(|&b| {
            if b == b'\n' || (32..=126).contains(&b) {
                b
            } else {
                b'?'
            }
        })
        .collect()
}

/// Collects the recipient reports and writes everything with the verdict in one go, so a crash
/// part-way can never leave a recipient report without a message report behind it.
#[derive(Default)]
pub struct Reporter {
    rcpts: Vec<(RcptLetter, Vec<u8>)>,
}

impl Reporter {
    pub fn recipient(&mut self, letter: RcptLetter, text: Vec<u8>) {
        self.rcpts.push((letter, text));
    }

    /// The bytes qmail-rspawn will read.
    pub fn render(&self, verdict: &Report) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        for (letter, text) in &self.rcpts {
            out.push(match letter {
                RcptLetter::Accepted => b'r',
                RcptLetter::Rejected => b'h',
                RcptLetter::Deferred => b's',
            });
            out.extend(sanitize(text));
            out.push(0);
        }
        out.push(verdict.letter.byte());
        out.extend(sanitize(&verdict.text));
        out.push(0);
        out
    }

    /// Writes the reports and exits 0. A failed write has nobody left to tell.
    pub fn finish(self, verdict: &Report) -> ! {
        let out = self.render(verdict);
        // Straight to fd 1 in one write: std's stdout is line-buffered and would split the
        // reports at the last LF.
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let _ = std::fs::File::from(fd).write_all(&out);
            }
            Err(_) => {
                let _ = std::io::stdout().lock().write_all(&out);
            }
        }
        std::process::exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rspawn_format() {
        let mut r = Reporter::default();
        r.recipient(RcptLetter::Accepted, Vec::new());
        r.recipient(
            RcptLetter::Rejected,
            b"1.2.3.4 does not like recipient.\n".to_vec(),
        );
        let v = Report::raw(Letter::K, b"1.2.3.4 accepted message.\n".to_vec());
        assert_eq!(
            r.render(&v),
            b"r\0h1.2.3.4 does not like recipient.\n\0K1.2.3.4 accepted message.\n\0"
        );
    }

    #[test]
    fn codes_take_class_from_letter() {
        let z = Report::temp(
            Esc(4, 1),
            "Sorry, I wasn't able to establish an SMTP connection.",
        );
        assert_eq!(
            z.text,
            b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
        );
        assert_eq!(Report::perm(Esc(6, 2), "x").text, b"x (#5.6.2)\n");
    }

    #[test]
    fn sanitizes_like_qmail_but_stricter() {
        assert_eq!(outsafe(b"a b\xffc"), "a?b?c");
        assert_eq!(sanitize(b"250 ok\r\n\0\x1b\xc3"), b"250 ok\n???");
    }
}
