//! One SMTP connection: the socket (plain, or TLS after STARTTLS), one buffered reader for
//! replies, and timed writes. Every read and write is bounded by `timeoutremote` (socket
//! timeouts) and every reply by [`crate::reply`]'s limits.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::reply::{MAX_BYTES, Reply, ReplyBuilder};

const READ_BUF: usize = 8192;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while the socket is being upgraded, or after a failed upgrade.
    Closed,
}

impl Stream {
    /// Reads what is there by `deadline`. Under TLS, rustls is driven here record by record
    /// rather than through `StreamOwned`'s `Read`: each socket read gets only the time left,
    /// so a peer that trickles a TLS record cannot stretch a reply past its deadline.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => {
                limit_read(s, deadline)?;
                quick_ack(s);
                s.read(buf)
            }
            Stream::Tls(s) => loop {
                match s.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                read_tls_by(&mut s.conn, &mut s.sock, deadline)?;
            },
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Writes all of `data` by `deadline`: each socket write gets only the time that is left,
    /// so a peer that reads a trickle cannot stretch one block of the message forever.
    fn write_all(&mut self, data: &[u8], deadline: Instant) -> io::Result<()> {
        match self {
            Stream::Plain(s) => write_by(s, data, deadline),
            Stream::Tls(s) => {
                let mut rest = data;
                loop {
                    let n = s.conn.writer().write(rest)?;
                    rest = rest.get(n..).unwrap_or_default();
                    flush_tls(&mut s.conn, &mut s.sock, deadline)?;
                    if rest.is_empty() {
                        return Ok(());
                    }
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                }
            }
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

fn limit_write(socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    socket.set_write_timeout(Some(left))
}

fn limit_read(socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    socket.set_read_timeout(Some(left))
}

/// Writes what rustls has queued (records, alerts), each socket write within the time left.
pub(crate) fn flush_tls(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    while conn.wants_write() {
        limit_write(sock, deadline)?;
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One socket read into rustls, with the time left until `deadline`, and the processing of
/// what it completed. A TLS error comes back as `InvalidData` wrapping the `rustls::Error`.
pub(crate) fn read_tls_by(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    flush_tls(conn, sock, deadline)?;
    loop {
        limit_read(sock, deadline)?;
        quick_ack(sock);
        match conn.read_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Err(e) = conn.process_new_packets() {
        // Tell the peer why (rustls queued the alert), as far as the deadline allows.
        let _ = flush_tls(conn, sock, deadline);
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    Ok(())
}

/// Completes the TLS handshake by `deadline`: the whole handshake, not each read, must fit
/// (the same rule as for one reply).
pub fn handshake_by(
    stream: &mut StreamOwned<ClientConnection, TcpStream>,
    deadline: Instant,
) -> io::Result<()> {
    while stream.conn.is_handshaking() {
        if stream.conn.wants_write() {
            flush_tls(&mut stream.conn, &mut stream.sock, deadline)?;
        } else if stream.conn.wants_read() {
            read_tls_by(&mut stream.conn, &mut stream.sock, deadline)?;
        } else {
            // Cannot happen with rustls; never spin if it does.
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
    flush_tls(&mut stream.conn, &mut stream.sock, deadline)
}

fn write_by(socket: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        limit_write(socket, deadline)?;
        match socket.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why no reply could be had.
#[derive(Debug)]
pub enum ReadError {
    /// EOF, I/O error or timeout.
    Died,
    /// Bytes that are not an SMTP reply.
    Bad(&'static str),
}

/// Why STARTTLS could not switch the connection to TLS.
pub enum Upgrade<E> {
    Injected,
    Failed(E),
}

pub struct Conn {
    stream: Stream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    pub ip: IpAddr,
    /// How long one [`Conn::send`] may take.
    write_limit: Duration,
}

impl Conn {
    pub fn new(stream: Stream, ip: IpAddr, write_limit: Duration) -> Conn {
        Conn {
            stream,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            ip,
            write_limit,
        }
    }

    /// Replaces the plain socket with TLS made by `handshake`. Refuses if the peer already
    /// sent bytes past the last reply: they would be read as if they came through TLS
    /// (response injection, CVE-2011-0411 class).
    pub fn upgrade<E>(
        &mut self,
        handshake: impl FnOnce(TcpStream) -> Result<StreamOwned<ClientConnection, TcpStream>, E>,
    ) -> Result<(), Upgrade<E>> {
        if self.pos != self.len {
            return Err(Upgrade::Injected);
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Upgrade::Injected);
        };
        self.stream = Stream::Tls(Box::new(handshake(tcp).map_err(Upgrade::Failed)?));
        Ok(())
    }

    /// The certificate chain the peer sent, end entity first; empty without TLS (the probe).
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        match &self.stream {
            Stream::Tls(s) => s
                .conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect(),
            Stream::Plain(_) | Stream::Closed => Vec::new(),
        }
    }

    /// Sends a command or a block of the message, which must be written within the write
    /// limit given to [`Conn::new`].
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + self.write_limit;
        self.stream.write_all(data, deadline)
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        self.pos = 0;
        self.len = 0;
        loop {
            // The whole reply must arrive by the deadline, not each read: a peer dribbling one
            // byte per timeout cannot hold the delivery for hours. `read_by` gives every
            // socket read only the time left, in plaintext and under TLS alike.
            match self.stream.read_by(&mut self.buf, deadline) {
                Ok(0) => return Err(ReadError::Died),
                Ok(n) => {
                    self.len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReadError::Died),
            }
        }
    }

    /// Reads one line into `line` (at most the buffer size is kept; the rest of an over-long
    /// line is read and counted, then dropped). Returns the bytes consumed.
    fn read_line(
        &mut self,
        line: &mut Vec<u8>,
        budget: usize,
        deadline: Instant,
    ) -> Result<usize, ReadError> {
        line.clear();
        let mut consumed = 0usize;
        loop {
            if self.pos >= self.len {
                self.fill(deadline)?;
            }
            let avail = self.buf.get(self.pos..self.len).unwrap_or_default();
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let room = READ_BUF.saturating_sub(line.len());
            line.extend_from_slice(avail.get(..take.min(room)).unwrap_or_default());
            self.pos += take;
            consumed += take;
            if consumed > budget {
                return Err(ReadError::Bad("reply too long"));
            }
            if done {
                return Ok(consumed);
            }
        }
    }

    /// Reads one complete (possibly multi-line) reply, which must be complete within `limit`.
    /// `builder` decides how much of its text is kept.
    pub fn read_reply(
        &mut self,
        limit: Duration,
        mut builder: ReplyBuilder,
    ) -> Result<Reply, ReadError> {
        let deadline = Instant::now() + limit;
        let mut line = Vec::with_capacity(128);
        let mut budget = MAX_BYTES;
        loop {
            budget -= self.read_line(&mut line, budget, deadline)?.min(budget);
            if let Some(reply) = builder.push_line(&line).map_err(ReadError::Bad)? {
                return Ok(reply);
            }
        }
    }
}

/// Acknowledges the peer's data at once instead of after Linux's delayed-ACK timer. Postfix
/// sends its TLS session tickets and then waits for their ACK before the next reply; a delayed
/// ACK there costs 40 ms per delivery (docs/PERFORMANCE.md). Linux resets the flag as it
/// pleases, so it is set before every read.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_: &TcpStream) {}
