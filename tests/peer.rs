//! Scripted SMTP peers for behaviour Postfix cannot produce: each test drives the server side
//! imperatively on its own thread, and gets back what the client sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned, SupportedProtocolVersion};

/// A TLS server configuration with the test PKI's `<name>-chain.pem` and `<name>.key`
/// (scripts/lib/gen-certs.sh, in `$QREMOTE_CERTS`), for the given protocol versions.
pub fn server_config(
    name: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let certs = std::path::PathBuf::from(crate::util::peer_env("QREMOTE_CERTS"));
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join(format!("{name}-chain.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(cfg)
}

/// The server side of one connection, over plain TCP or (after [`Client::starttls`]) TLS.
pub struct Client<S: Read + Write = TcpStream> {
    pub reader: BufReader<S>,
    /// Everything the client sent, as read.
    pub transcript: Vec<u8>,
}

pub type TlsClient = Client<StreamOwned<ServerConnection, TcpStream>>;

impl Client<TcpStream> {
    /// Switches to TLS with `config` (after the script has sent its 220).
    pub fn starttls(self, config: Arc<ServerConfig>) -> TlsClient {
        assert!(
            self.reader.buffer().is_empty(),
            "client sent bytes before the handshake"
        );
        let tcp = self.reader.into_inner();
        let conn = ServerConnection::new(config).unwrap();
        Client {
            reader: BufReader::new(StreamOwned::new(conn, tcp)),
            transcript: self.transcript,
        }
    }

    /// Closes the socket now (both directions).
    pub fn hang_up(&mut self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

impl<S: Read + Write> Client<S> {
    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        let w = self.reader.get_mut();
        let _ = w.write_all(b).and_then(|()| w.flush());
    }

    /// One line from the client without CRLF; empty at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.reader.read_until(b'\n', &mut buf);
        self.transcript.extend_from_slice(&buf);
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// Reads a line and checks it starts with `prefix` (case-insensitive).
    pub fn expect(&mut self, prefix: &str) -> String {
        let l = self.line();
        assert!(
            l.to_ascii_uppercase()
                .starts_with(&prefix.to_ascii_uppercase()),
            "expected {prefix:?}, got {l:?}"
        );
        l
    }

    /// Reads DATA up to and including the final dot line; returns the raw bytes.
    pub fn data(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut buf = Vec::new();
            if self.reader.read_until(b'\n', &mut buf).unwrap_or(0) == 0 {
                break;
            }
            self.transcript.extend_from_slice(&buf);
            body.extend_from_slice(&buf);
            if buf == b".\r\n" && (body.len() == 3 || body.ends_with(b"\r\n.\r\n")) {
                break;
            }
        }
        body
    }

    /// Standard opening: greeting and EHLO with the given keywords.
    pub fn ehlo(&mut self, keywords: &[&str]) {
        self.send("220 scripted ESMTP\r\n");
        self.expect("EHLO ");
        let mut reply = String::new();
        let mut lines = vec!["scripted".to_string()];
        lines.extend(keywords.iter().map(|k| k.to_string()));
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            reply.push_str(&format!("250{sep}{l}\r\n"));
        }
        self.send(&reply);
    }

    /// Accepts MAIL, one RCPT and DATA lock-step, reads and accepts the body, then waits for
    /// the client to hang up. Returns the body as sent (dot-stuffed, with the final dot).
    pub fn accept_mail(&mut self) -> Vec<u8> {
        self.expect("MAIL");
        self.accept_rcpt_data()
    }

    /// [`Client::accept_mail`] after the MAIL command has been read (not yet answered).
    pub fn accept_rcpt_data(&mut self) -> Vec<u8> {
        self.accept_rcpt_until_data();
        let body = self.data();
        self.send("250 ok\r\n");
        self.drain();
        body
    }

    /// Accepts MAIL and one RCPT lock-step and answers DATA with 354, leaving the body unread.
    pub fn accept_until_data(&mut self) {
        self.expect("MAIL");
        self.accept_rcpt_until_data();
    }

    fn accept_rcpt_until_data(&mut self) {
        self.send("250 ok\r\n");
        self.expect("RCPT");
        self.send("250 ok\r\n");
        self.expect("DATA");
        self.send("354 go\r\n");
    }

    /// Sends one line (a greeting, say) and waits for the client to hang up.
    pub fn say_and_wait(&mut self, line: &str) {
        self.send(line);
        self.drain();
    }

    /// Waits until the client closes the connection (reads and records the rest).
    pub fn drain(&mut self) {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        self.transcript.extend_from_slice(&rest);
    }
}

pub struct Scripted {
    pub addr: SocketAddr,
    handle: JoinHandle<Vec<Vec<u8>>>,
}

impl Scripted {
    /// Serves `connections` connections in turn, each with `script(index, client)`.
    pub fn start<F>(connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, &mut Client) + Send + 'static,
    {
        Scripted::start_with(connections, move |i, mut c| {
            script(i, &mut c);
            c.transcript
        })
    }

    /// Like [`Scripted::start`], for scripts that replace the connection (STARTTLS): the script
    /// returns the transcript itself.
    pub fn start_with<F>(connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, Client) -> Vec<u8> + Send + 'static,
    {
        Scripted::serve(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            connections,
            script,
        )
    }

    /// Like [`Scripted::start`] on a fixed address (port 25 of a 127.0.0.x that DNS names).
    pub fn start_on<F>(addr: &str, connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, &mut Client) + Send + 'static,
    {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Scripted::serve(listener, connections, move |i, mut c| {
            script(i, &mut c);
            c.transcript
        })
    }

    /// [`Scripted::start_with`] on a fixed address.
    pub fn start_with_on<F>(addr: &str, connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, Client) -> Vec<u8> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Scripted::serve(listener, connections, script)
    }

    /// Like [`Scripted::start_with`] on a listener the test has set up itself (socket options).
    pub fn start_on_listener<F>(listener: TcpListener, connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, &mut Client) + Send + 'static,
    {
        Scripted::serve(listener, connections, move |i, mut c| {
            script(i, &mut c);
            c.transcript
        })
    }

    fn serve<F>(listener: TcpListener, connections: usize, script: F) -> Scripted
    where
        F: Fn(usize, Client) -> Vec<u8> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut transcripts = Vec::new();
            for i in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let c = Client {
                    reader: BufReader::new(stream),
                    transcript: Vec::new(),
                };
                transcripts.push(script(i, c));
            }
            transcripts
        });
        Scripted { addr, handle }
    }

    /// A listener that must never be connected to; see [`Scripted::assert_untouched`].
    pub fn untouched(addr: &str) -> Scripted {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Scripted::serve(listener, 1, |_, mut c| {
            let first = c.line();
            assert_eq!(
                first, "SENTINEL",
                "the binary connected to a listener it must not reach"
            );
            c.transcript
        })
    }

    /// Connects to an [`Scripted::untouched`] listener and asserts that this connection is the
    /// first it accepts: the kernel queues connections in order, so one the binary made
    /// earlier (even closed by now) would be accepted first.
    pub fn assert_untouched(self) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.write_all(b"SENTINEL\r\n").unwrap();
        self.finish();
    }

    /// The smtproutes relay text for this server.
    pub fn relay(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }

    /// Transcripts of what the client sent, one per connection. Panics in the script surface here.
    pub fn finish(self) -> Vec<Vec<u8>> {
        match self.handle.join() {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}
