//! The HTTPS GET of `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3): a
//! small, bounded HTTP/1.1 client over the rustls we already have, because the fetch runs
//! inside a delivery and needs nothing an HTTP crate would add (see docs/DESIGN.md).
//!
//! One request, `Connection: close`, no redirects, status 200 only (interim 1xx responses
//! skipped), `Content-Type: text/plain`, at most [`MAX_BODY`] bytes of body (plain, by
//! `Content-Length`, or chunked), certificate verified for the policy host against webpki
//! roots and `control/tlsca`, SNI sent. Every step has a time limit ([`CONNECT`],
//! [`HANDSHAKE`], [`TOTAL`]), checked against a deadline so a server that trickles bytes
//! cannot stretch it. The response parser, [`parse_response`], is pure.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::conn;
use crate::control::Config;
use crate::tls::verify::{Recorder, describe};
use crate::tls::{Level, Policy};

/// Largest policy body (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest status line plus headers.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most raw bytes read: head, body and generous chunked framing.
const MAX_RAW: usize = MAX_HEAD + 2 * MAX_BODY;
/// Time to connect to one address of the policy host (or `timeoutconnect`, if smaller).
pub const CONNECT: Duration = Duration::from_secs(5);
/// Time for the TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(5);
/// Time for the whole fetch, from the first connection attempt to the last byte.
pub const TOTAL: Duration = Duration::from_secs(10);
/// Most addresses of the policy host tried.
const MAX_ADDRESSES: usize = 2;

/// Fetches the policy text of `domain` from `ips` (the policy host's addresses, in order).
/// The error is a short reason for the report.
pub fn fetch(
    cfg: &Config,
    provider: &Arc<CryptoProvider>,
    domain: &str,
    ips: &[IpAddr],
) -> Result<Vec<u8>, String> {
    let host = format!("mta-sts.{domain}");
    let start = Instant::now();
    let deadline = start + TOTAL;
    let mut last = "no address".to_string();
    for &ip in ips.iter().take(MAX_ADDRESSES) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout());
        }
        let tcp =
            match crate::connect::open(cfg, ip, 443, CONNECT.min(cfg.timeout_connect).min(left)) {
                Ok(t) => t,
                Err(e) => {
                    last = format!("cannot connect to {ip}: {}", short_io(&e));
                    continue;
                }
            };
        // Once connected, this address decides: a policy host that answers badly is not
        // retried elsewhere (it is the same server, and the time is limited).
        return get(tcp, provider, &host, deadline).map_err(|e| format!("{host} ({ip}): {e}"));
    }
    Err(last)
}

fn get(
    tcp: TcpStream,
    provider: &Arc<CryptoProvider>,
    host: &str,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    // Level verify with public anchors: webpki roots, then control/tlsca.
    let policy = Policy::public(Level::Verify, "MTA-STS");
    let verifier = Arc::new(Recorder::new(provider.clone(), &policy, None)?);
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| describe(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|_| "not a valid host name")?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| describe(&e))?;
    let mut s = StreamOwned::new(conn, tcp);
    // Every socket read and write gets only the time left (conn::handshake_by, read_tls_by):
    // a peer that trickles bytes cannot stretch the fetch.
    let tls_error = |e: &io::Error, during: &str| match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        Some(tls) => verifier.refusal().unwrap_or_else(|| describe(tls)),
        None if timed_out(e) => format!("{during} timed out"),
        None => format!("connection died during the {during} ({})", short_io(e)),
    };
    let handshake_end = deadline.min(Instant::now() + HANDSHAKE);
    conn::handshake_by(&mut s, handshake_end).map_err(|e| tls_error(&e, "TLS handshake"))?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: qremote\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    s.conn
        .writer()
        .write_all(request.as_bytes())
        .and_then(|()| conn::flush_tls(&mut s.conn, &mut s.sock, deadline))
        .map_err(|e| tls_error(&e, "request"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // What rustls has decrypted already, else one more socket read.
        let eof = match s.conn.reader().read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match conn::read_tls_by(&mut s.conn, &mut s.sock, deadline) {
                    Ok(()) => continue,
                    // The connection ended without TLS close_notify: what came counts only
                    // if its length was announced (an attacker could cut a policy that runs
                    // to the end of the stream).
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return match parse_response(&buf, false) {
                            Parse::Done(r) => r,
                            Parse::More => {
                                Err("connection closed before the end of the response".into())
                            }
                        };
                    }
                    Err(e) if timed_out(&e) => return Err(timeout()),
                    Err(e) => return Err(tls_error(&e, "response")),
                }
            }
            Err(e) => return Err(tls_error(&e, "response")),
        };
        match parse_response(&buf, eof) {
            Parse::Done(r) => return r,
            Parse::More if eof => {
                return Err("connection closed before the end of the response".into());
            }
            Parse::More if buf.len() > MAX_RAW => return Err("response too large".into()),
            Parse::More => {}
        }
    }
}

fn timeout() -> String {
    format!("timed out (the whole fetch may take {} s)", TOTAL.as_secs())
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn short_io(e: &io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_lowercase()
}

/// Where parsing a response stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Not complete yet: read more.
    More,
    /// The policy body, or why there is none.
    Done(Result<Vec<u8>, String>),
}

/// Parses an HTTP/1.1 response from its first byte. `eof` says the connection was closed
/// cleanly after `buf`. Only `200` with `Content-Type: text/plain` (any parameters) gives a
/// body; a body is delimited by `Content-Length`, by chunked transfer coding, or by the end of
/// the connection, and is at most [`MAX_BODY`] bytes. Any other transfer coding is refused.
pub fn parse_response(mut buf: &[u8], eof: bool) -> Parse {
    loop {
        let Some(end) = find(buf, b"\r\n\r\n") else {
            if buf.len() > MAX_HEAD {
                return Parse::Done(Err("response headers too long".into()));
            }
            return Parse::More;
        };
        if end > MAX_HEAD {
            return Parse::Done(Err("response headers too long".into()));
        }
        let (head, rest) = buf.split_at(end);
        let body = rest.get(4..).unwrap_or_default();
        // RFC 9110 15.2: a client must skip interim responses (100 Continue, 103 Early
        // Hints) before the final one; 101 would switch protocols and is refused below. Each
        // turn consumes a head, and the caller bounds what it reads.
        if status_code(head).is_some_and(|c| (100..200).contains(&c) && c != 101) {
            buf = body;
            continue;
        }
        return match parse_head(head) {
            Ok(framing) => framed_body(framing, body, eof),
            Err(e) => Parse::Done(Err(e)),
        };
    }
}

/// The status code of an HTTP/1.0 or 1.1 status line (the first line of `head`).
fn status_code(head: &[u8]) -> Option<u16> {
    let status = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = status.strip_suffix(b"\r").unwrap_or(status);
    match status.strip_prefix(b"HTTP/1.") {
        Some([b'0' | b'1', b' ', a, b, c, rest @ ..])
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && rest.first().is_none_or(|&s| s == b' ') =>
        {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

fn parse_head(head: &[u8]) -> Result<Framing, String> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    let code = status_code(status).ok_or("the reply is not HTTP/1.1")?;
    match code {
        200 => {}
        300..=399 => return Err(format!("HTTP status {code}: redirects are not followed")),
        _ => return Err(format!("HTTP status {code}")),
    }
    let (mut ctype, mut length, mut chunked) = (None, None, false);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("a malformed response header".into());
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"content-type") {
            ctype = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or("a malformed Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(format!(
                    "unsupported Transfer-Encoding {}",
                    super::policy::shown(value)
                ));
            }
            chunked = true;
        }
    }
    let media = ctype.as_deref().map(|c| {
        c.split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .to_vec()
    });
    match media.as_deref() {
        Some(b"text/plain") => {}
        Some(other) => {
            return Err(format!(
                "Content-Type is {}, not text/plain",
                super::policy::shown(other)
            ));
        }
        None => return Err("no Content-Type (text/plain is required)".into()),
    }
    Ok(match (chunked, length) {
        // RFC 9112 6.3: chunked wins over Content-Length.
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > MAX_BODY => return Err(too_big()),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    })
}

fn too_big() -> String {
    format!("the policy is larger than {} KiB", MAX_BODY / 1024)
}

fn framed_body(framing: Framing, body: &[u8], eof: bool) -> Parse {
    match framing {
        Framing::Length(n) => match body.get(..n) {
            Some(b) => Parse::Done(Ok(b.to_vec())),
            None => Parse::More,
        },
        Framing::Close if body.len() > MAX_BODY => Parse::Done(Err(too_big())),
        Framing::Close if eof => Parse::Done(Ok(body.to_vec())),
        Framing::Close => Parse::More,
        Framing::Chunked => dechunk(body),
    }
}

/// Decodes a chunked body: `size[;ext] CRLF data CRLF` ... `0 CRLF [trailers] CRLF`.
fn dechunk(mut rest: &[u8]) -> Parse {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return if rest.len() > 64 {
                Parse::Done(Err("a malformed chunk size".into()))
            } else {
                Parse::More
            };
        };
        let (line, tail) = rest.split_at(eol);
        let tail = tail.get(2..).unwrap_or_default();
        let hex = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(hex)
            .ok()
            .filter(|h| !h.is_empty() && h.len() <= 8)
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(size) = size else {
            return Parse::Done(Err("a malformed chunk size".into()));
        };
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            return if tail.starts_with(b"\r\n") || find(tail, b"\r\n\r\n").is_some() {
                Parse::Done(Ok(out))
            } else {
                Parse::More
            };
        }
        if out.len() + size > MAX_BODY {
            return Parse::Done(Err(too_big()));
        }
        let Some(data) = tail.get(..size) else {
            return Parse::More;
        };
        match tail.get(size..size + 2) {
            Some(b"\r\n") => {}
            Some(_) => return Parse::Done(Err("a malformed chunk".into())),
            None => return Parse::More,
        }
        out.extend_from_slice(data);
        rest = tail.get(size + 2..).unwrap_or_default();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain; charset=utf-8\r\n";

    fn done(s: &str, eof: bool) -> Result<Vec<u8>, String> {
        match parse_response(s.as_bytes(), eof) {
            Parse::Done(r) => r,
            Parse::More => panic!("incomplete: {s:?}"),
        }
    }

    #[test]
    fn content_length_chunked_and_close() {
        assert_eq!(
            done(&format!("{HEAD}Content-Length: 3\r\n\r\nabcdef"), false),
            Ok(b"abc".to_vec())
        );
        let chunked = format!(
            "{HEAD}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"
        );
        assert_eq!(done(&chunked, false), Ok(b"abc0123456789".to_vec()));
        // Interim responses before the final one are skipped (RFC 9110 15.2).
        let interim = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             {HEAD}Content-Length: 3\r\n\r\nabc"
        );
        assert_eq!(done(&interim, false), Ok(b"abc".to_vec()));
        let trailer =
            format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n");
        assert_eq!(done(&trailer, false), Ok(b"a".to_vec()));
        assert_eq!(
            done(&format!("{HEAD}\r\nall of it"), true),
            Ok(b"all of it".to_vec())
        );
        // Every prefix of a complete response is incomplete, never wrong.
        for full in [
            chunked.as_str(),
            interim.as_str(),
            &format!("{HEAD}Content-Length: 3\r\n\r\nabc"),
        ] {
            for n in 0..full.len() {
                assert_eq!(
                    parse_response(&full.as_bytes()[..n], false),
                    Parse::More,
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn refusals() {
        for (resp, why) in [
            (
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n",
                "HTTP status 404",
            ),
            (
                "HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n",
                "redirects are not followed",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
                "not text/plain",
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "no Content-Type"),
            ("SMTP/1.1 200 OK\r\n\r\n", "not HTTP/1.1"),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
                "HTTP status 101",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "unsupported Transfer-Encoding",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 99999\r\n\r\n",
                "larger than 64 KiB",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                "malformed chunk",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n",
                "larger than 64 KiB",
            ),
        ] {
            let e = done(resp, false).unwrap_err();
            assert!(e.contains(why), "{resp:?}: {e}");
        }
        // A header value is quoted short and safe, whatever its length.
        let long = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/{}\x01\r\n\r\n",
            "h".repeat(10_000)
        );
        let e = done(&long, false).unwrap_err();
        assert!(e.starts_with("Content-Type is text/hhh"), "{e}");
        assert!(e.ends_with("hhh..., not text/plain"), "{e}");
        let big = format!("{HEAD}\r\n{}", "x".repeat(MAX_BODY + 1));
        assert!(done(&big, false).unwrap_err().contains("larger"));
        let head = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD + 1));
        assert!(done(&head, false).unwrap_err().contains("too long"));
    }
}
