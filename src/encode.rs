//! Message transparency for DATA, streamed in constant memory: every line end (LF, CRLF, or a
//! bare CR) goes out as CRLF, every line that starts with `.` gets another `.`, and the message
//! ends with `.` CRLF. A bare CR is a line end here, so `x CR . LF` becomes `x CRLF .. CRLF`:
//! no byte sequence in a queue file can produce an early end-of-data (the notqmail CRLF-patch
//! flaw). A final line without LF is refused before the session starts ([`scan`]).

use std::io::{self, BufRead, BufReader, Read};

/// Facts about the message gathered before connecting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Size as the encoder sends it, counted as RFC 1870 section 3 says: every line end is one
    /// CR LF pair, neither the doubled dots nor the final dot count (for `SIZE=`).
    pub size: u64,
    pub eight_bit: bool,
    /// The last byte is neither LF nor CR.
    pub partial: bool,
}

/// Reads the whole message once.
pub fn scan(input: impl Read) -> io::Result<Scan> {
    // BufReader's buffer is never zeroed: no 64 KiB memset per delivery.
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut s = Scan::default();
    let mut last = b'\n';
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Some(&end) = chunk.last() else { break };
        // Each CR and each LF is a line end sent as CR LF, except the LF of a CR LF pair
        // (which may straddle two chunks): bytes + CRs + LFs - 2 * pairs.
        let crs = memchr::memchr_iter(b'\r', chunk).count() as u64;
        let lfs = memchr::memchr_iter(b'\n', chunk).count() as u64;
        let mut pairs = memchr::memmem::find_iter(chunk, b"\r\n").count() as u64;
        if last == b'\r' && chunk.first() == Some(&b'\n') {
            pairs += 1;
        }
        s.size += chunk.len() as u64 + crs + lfs - 2 * pairs;
        s.eight_bit |= !chunk.is_ascii();
        last = end;
        let n = chunk.len();
        input.consume(n);
    }
    s.partial = !matches!(last, b'\n' | b'\r');
    Ok(s)
}

/// The line-end and dot-stuffing state machine; input may be split anywhere.
pub struct Encoder {
    line_start: bool,
    /// The previous byte was a CR, already sent as CRLF: an LF right after it is part of it.
    skip_lf: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            line_start: true,
            skip_lf: false,
        }
    }
}

impl Encoder {
    /// Appends the encoding of `input` to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if std::mem::take(&mut self.skip_lf)
            && let [b'\n', rest @ ..] = input
        {
            input = rest;
        }
        while let Some(&first) = input.first() {
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', input) else {
                out.extend_from_slice(input);
                self.line_start = false;
                return;
            };
            let (line, rest) = input.split_at(i);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
            input = match rest {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.skip_lf = true;
                    return;
                }
                [_, tail @ ..] => tail,
                [] => return,
            };
        }
    }

    /// Ends the data with the final dot.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line_start {
            // Callers refuse partial final lines before DATA; never emit a glued dot anyway.
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(input: &[u8]) -> Vec<u8> {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.encode(input, &mut out);
        e.finish(&mut out);
        out
    }

    /// Every split of the input into two chunks gives the same output.
    fn enc_split(input: &[u8]) -> Vec<u8> {
        let whole = enc(input);
        for cut in 0..=input.len() {
            let mut e = Encoder::default();
            let mut out = Vec::new();
            e.encode(&input[..cut], &mut out);
            e.encode(&input[cut..], &mut out);
            e.finish(&mut out);
            assert_eq!(
                out,
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        whole
    }

    #[test]
    fn notqmail_encoding_cases() {
        assert_eq!(enc_split(b""), b".\r\n");
        assert_eq!(enc_split(b"a\n"), b"a\r\n.\r\n");
        assert_eq!(enc_split(b".\n"), b"..\r\n.\r\n");
        assert_eq!(enc_split(b"..\n.a\n"), b"...\r\n..a\r\n.\r\n");
        assert_eq!(enc_split(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(enc_split(b"a\rb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(enc_split(b"a\r"), b"a\r\n.\r\n");
        assert_eq!(enc_split(b"\n\n"), b"\r\n\r\n.\r\n");
        assert_eq!(enc_split(b"a\r\r\n"), b"a\r\n\r\n.\r\n");
        assert_eq!(enc_split(b"8\xff\x00bit\n"), b"8\xff\x00bit\r\n.\r\n");
    }

    #[test]
    fn bare_cr_never_makes_end_of_data() {
        // x CR . LF: stock sends x CR . CRLF, notqmail x CRLF . CRLF (smuggling); we stuff.
        assert_eq!(enc_split(b"x\r.\n"), b"x\r\n..\r\n.\r\n");
        assert_eq!(enc_split(b"x\r.\r\n"), b"x\r\n..\r\n.\r\n");
        assert_eq!(enc_split(b"x\n.\r\r\n"), b"x\r\n..\r\n\r\n.\r\n");
    }

    /// Every input of up to 7 bytes from a small alphabet that has all the special cases.
    fn short_inputs() -> impl Iterator<Item = Vec<u8>> {
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        (0..=7u32).flat_map(move |len| {
            (0..4usize.pow(len)).map(move |mut k| {
                let mut input = Vec::new();
                for _ in 0..len {
                    input.push(alphabet[k % 4]);
                    k /= 4;
                }
                input
            })
        })
    }

    #[test]
    fn output_has_no_early_terminator() {
        for input in short_inputs() {
            let out = enc(&input);
            let body = &out[..out.len() - 3];
            let framed = [b"\r\n", body].concat();
            assert!(
                !framed.windows(5).any(|w| w == b"\r\n.\r\n"),
                "{input:?} -> {out:?}"
            );
            assert!(out.ends_with(b".\r\n"));
            assert!(
                !body.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
                "bare CR out"
            );
        }
    }

    /// The declared size is the encoder's output without the final dot and the doubled dots,
    /// whatever the line ends, over every short input and every split into two reads.
    #[test]
    fn scan_size_is_the_encoded_size() {
        // Partial final lines are refused before SIZE matters.
        let complete = short_inputs().filter(|i| matches!(i.last(), None | Some(b'\n' | b'\r')));
        for input in complete {
            let out = enc(&input);
            let stuffed = [b"\r\n", &out[..]].concat();
            let doubled = stuffed.windows(3).filter(|w| w == b"\n..").count();
            let want = (out.len() - 3 - doubled) as u64;
            for cut in 0..=input.len() {
                let reader = (&input[..cut]).chain(&input[cut..]);
                // BufReader reads each part of the chain on its own.
                let got = scan(reader).unwrap().size;
                assert_eq!(got, want, "{input:?} split at {cut}");
            }
        }
        // The report of issue 7: ten `aaaa CR LF` lines are 60 bytes, not 70.
        assert_eq!(scan(&b"aaaa\r\n".repeat(10)[..]).unwrap().size, 60);
    }

    #[test]
    fn scan_finds_partial_lines_and_8bit() {
        let s = scan(&b"a\nb"[..]).unwrap();
        assert!(s.partial);
        let s = scan(&mut &b"\xe9\n"[..]).unwrap();
        assert_eq!(
            s,
            Scan {
                size: 3,
                eight_bit: true,
                partial: false
            }
        );
        assert!(!scan(&mut &b""[..]).unwrap().partial);
        assert!(!scan(&mut &b"a\r"[..]).unwrap().partial);
    }
}
