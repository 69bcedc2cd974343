//! TCP connect with `timeoutconnect`, an optional source address (`control/outgoingip`), and
//! the tcpto bookkeeping around it.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::control::Config;
use crate::tcpto;

pub fn connect(cfg: &Config, ip: IpAddr, port: u16) -> io::Result<TcpStream> {
    let result = open(cfg, ip, port, cfg.timeout_connect);
    let timed_out = matches!(&result, Err(e) if e.kind() == io::ErrorKind::TimedOut);
    tcpto::note(ip, timed_out);
    result
}

/// [`connect`] without the tcpto bookkeeping: `qremote-probe` must not change what deliveries
/// skip.
pub fn try_connect(cfg: &Config, ip: IpAddr, port: u16) -> io::Result<TcpStream> {
    open(cfg, ip, port, cfg.timeout_connect)
}

/// A TCP connection from `control/outgoingip`, within `timeout`, without tcpto bookkeeping
/// (also used for MTA-STS policy hosts, which are not SMTP peers).
pub fn open(cfg: &Config, ip: IpAddr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(src) = cfg.outgoing.iter().find(|s| s.is_ipv4() == ip.is_ipv4()) {
        socket.bind(&SocketAddr::new(*src, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    // Commands are written whole and the body in large blocks: Nagle only adds latency.
    socket.set_tcp_nodelay(true)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(cfg.timeout_remote))?;
    // Bounds the TLS handshake's writes; `Conn::send` gives each command or block of the
    // message its own deadline.
    stream.set_write_timeout(Some(cfg.timeout_remote.min(Duration::from_secs(180))))?;
    Ok(stream)
}
