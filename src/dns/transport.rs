//! One query to one server: UDP from a fresh connected ephemeral socket, TCP when asked to.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::wire::{self, CLASS_IN, Header, Message, Name, Question, RCODE_NOERROR, RCODE_NXDOMAIN};

/// Largest DNS message over UDP or TCP.
pub(crate) const MAX_MSG: usize = 65535;
/// Receive buffer for UDP: comfortably above the 1232-byte EDNS payload we advertise; a larger
/// datagram is cut short, fails to parse and counts as a malformed answer.
pub(crate) const MAX_UDP: usize = 4096;

/// Why one try against one server gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TryError {
    /// An answer with an RCODE other than NOERROR or NXDOMAIN.
    Rcode(u16),
    /// An answer that matched our query but could not be decoded.
    Malformed,
    Timeout,
    Net(io::ErrorKind),
}

pub(crate) enum UdpOutcome {
    Answer(Message),
    /// TC=1: redo over TCP.
    Truncated,
}

/// What to match a response against.
pub(crate) struct Query<'a> {
    pub(crate) id: u16,
    pub(crate) name: &'a Name,
    pub(crate) qtype: u16,
    pub(crate) bytes: &'a [u8],
}

impl Query<'_> {
    /// Is this response ours? A response without a question section is accepted only as an
    /// error (some servers send FORMERR or REFUSED without echoing the question).
    pub(crate) fn matches(&self, h: &Header, q: Option<&Question>) -> bool {
        h.id == self.id
            && h.qr()
            && h.opcode() == 0
            && match q {
                Some(q) => q.name.eq_ci(self.name) && q.qtype == self.qtype && q.qclass == CLASS_IN,
                None => !matches!(h.rcode(), RCODE_NOERROR | RCODE_NXDOMAIN) && !h.tc(),
            }
    }
}

fn io_error(e: &io::Error) -> TryError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TryError::Timeout,
        k => TryError::Net(k),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, TryError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(TryError::Timeout)
    } else {
        Ok(left)
    }
}

fn unspecified(server: &SocketAddr) -> SocketAddr {
    let ip = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Sends `query` over UDP and waits until `timeout` for a datagram that matches it; datagrams
/// with another ID, without QR, or with another question are dropped.
pub(crate) fn udp(
    server: SocketAddr,
    query: &Query<'_>,
    timeout: Duration,
    buf: &mut [u8],
) -> Result<UdpOutcome, TryError> {
    let deadline = Instant::now()
        .checked_add(timeout)
        .ok_or(TryError::Timeout)?;
    let sock = UdpSocket::bind(unspecified(&server)).map_err(|e| io_error(&e))?;
    // Connected: the kernel drops datagrams from any other address and port.
    sock.connect(server).map_err(|e| io_error(&e))?;
    sock.send(query.bytes).map_err(|e| io_error(&e))?;
    loop {
        sock.set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| io_error(&e))?;
        let n = match sock.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(&e)),
        };
        let pkt = buf.get(..n).ok_or(TryError::Malformed)?;
        let Ok((header, question, _)) = wire::parse_head(pkt) else {
            continue;
        };
        if !query.matches(&header, question.as_ref()) {
            continue;
        }
        if header.tc() {
            return Ok(UdpOutcome::Truncated);
        }
        return wire::parse(pkt)
            .map(UdpOutcome::Answer)
            .map_err(|_| TryError::Malformed);
    }
}

fn read_full(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), TryError> {
    while !buf.is_empty() {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| io_error(&e))?;
        match stream.read(buf) {
            Ok(0) => return Err(TryError::Net(io::ErrorKind::UnexpectedEof)),
            Ok(n) => buf = buf.get_mut(n..).ok_or(TryError::Malformed)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(&e)),
        }
    }
    Ok(())
}

/// Sends `query` over TCP (RFC 1035 4.2.2, RFC 7766) and reads one length-prefixed response,
/// all within `timeout`.
pub(crate) fn tcp(
    server: SocketAddr,
    query: &Query<'_>,
    timeout: Duration,
    buf: &mut [u8],
) -> Result<Message, TryError> {
    let deadline = Instant::now()
        .checked_add(timeout)
        .ok_or(TryError::Timeout)?;
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(|e| io_error(&e))?;
    let len = u16::try_from(query.bytes.len()).map_err(|_| TryError::Malformed)?;
    let mut framed = Vec::with_capacity(query.bytes.len().saturating_add(2));
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query.bytes);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| io_error(&e))?;
    stream.write_all(&framed).map_err(|e| io_error(&e))?;
    let mut prefix = [0u8; 2];
    read_full(&mut stream, &mut prefix, deadline)?;
    let n = usize::from(u16::from_be_bytes(prefix));
    let pkt = buf.get_mut(..n).ok_or(TryError::Malformed)?;
    read_full(&mut stream, pkt, deadline)?;
    let (header, question, _) = wire::parse_head(pkt).map_err(|_| TryError::Malformed)?;
    if !query.matches(&header, question.as_ref()) {
        return Err(TryError::Malformed);
    }
    wire::parse(pkt).map_err(|_| TryError::Malformed)
}
